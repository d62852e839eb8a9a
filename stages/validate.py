"""Stage validate: every key of params.yaml checked, on this machine, before anything runs.

It depends on the whole params.yaml, so any change re-runs it, speed-only keys included
(runtime.device, threads, ...), which re-run no other stage: `dvc exp run -S
runtime.device=cuda` on a machine without a GPU fails here, naming the key. Unknown keys
get the nearest known one. It writes only a marker, MARKER, the same on every machine:
missing in a new clone, it makes every machine run this once (dvc.yaml, docs/params.md)."""
from pathlib import Path

from actionrec.device import resolve_runtime
from actionrec.errors import run_stage
from actionrec.params import SECTIONS, load_params


def main(marker: str) -> None:
    params = load_params(*SECTIONS)
    runtime, _ = resolve_runtime(params["features"], params["runtime"])  # the device and decoder exist here
    print(f"params.yaml is valid on this machine (device {runtime['device']}, precision {runtime['precision']})")
    Path(marker).parent.mkdir(parents=True, exist_ok=True)
    Path(marker).write_text("params.yaml was checked on this machine by stages/validate.py\n")


if __name__ == "__main__":
    run_stage(main)
