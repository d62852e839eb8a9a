"""Stage validate: every key of params.yaml checked, on this machine, before anything runs.

It depends on the whole params.yaml, so any change re-runs it, speed-only keys included
(features.device, threads, ...), which re-run no other stage: `dvc exp run -S
features.device=cuda` on a machine without a GPU fails here, naming the key. Unknown keys
get the nearest known one. It writes only a marker, data/validated, the same on every
machine: missing in a new clone, it makes every machine run this once (dvc.yaml, docs/params.md)."""
from pathlib import Path

from actionrec.device import resolve_runtime
from actionrec.params import SECTIONS, load_params, run_stage

MARKER = Path("data/validated")


def main() -> None:
    params = load_params(*SECTIONS)
    runtime, _ = resolve_runtime(params["features"])  # the device and the decoder exist here
    print(f"params.yaml is valid on this machine (device {runtime['device']}, precision {runtime['precision']})")
    MARKER.parent.mkdir(exist_ok=True)
    MARKER.write_text("params.yaml was checked on this machine by stages/validate.py\n")


if __name__ == "__main__":
    run_stage(main)
