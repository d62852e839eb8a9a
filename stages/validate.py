"""Stage validate: all of params.yaml checked on this machine before anything runs (dvc.yaml, docs/params.md);
MARKER, git-ignored, makes every new clone run it once."""
from pathlib import Path

from actionrec.device import resolve_runtime
from actionrec.errors import run_stage
from actionrec.params import SECTIONS, load_params


def main(marker: str) -> None:
    params = load_params(*SECTIONS)
    runtime, _ = resolve_runtime(params["features"], params["runtime"])  # the device and decoder exist here
    print(f"params.yaml is valid on this machine (device {runtime['device']}, precision {runtime['precision']})")
    Path(marker).write_text("params.yaml was checked on this machine by stages/validate.py\n")


if __name__ == "__main__":
    run_stage(main)
