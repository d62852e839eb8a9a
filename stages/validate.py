"""Stage validate: all of params.yaml checked on this machine before anything runs (dvc.yaml, docs/params.md);
MARKER, git-ignored, makes every new clone run it once."""
from pathlib import Path

from actionrec.errors import run_stage
from actionrec.params import SECTIONS, load_params
from actionrec.runtime import resolve_runtime
from actionrec.synthetic import clip_plan


def main(marker: str) -> None:
    params = load_params(*SECTIONS)
    clip_plan(params["synthesize"])  # synthesize.num_classes against the demo's classes
    runtime, _ = resolve_runtime(params["features"], params["runtime"])  # the device and decoder exist here
    print(f"params.yaml is valid on this machine (device {runtime['device']}, precision {runtime['precision']})")
    Path(marker).write_text("params.yaml was checked on this machine by stages/validate.py\n")


if __name__ == "__main__":
    run_stage(main)
