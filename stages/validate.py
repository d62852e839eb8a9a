"""Stage validate: all of params.yaml checked on this machine before anything runs (dvc.yaml, docs/params.md);
MARKER, git-ignored, makes every new clone run it once."""
import os
from pathlib import Path

from actionrec.errors import ParamsError, run_stage
from actionrec.params import SECTIONS, load_params
from actionrec.runtime import resolve_runtime
from actionrec.synthetic import clip_plan


def main(marker: str) -> None:
    try:
        params = load_params(*SECTIONS)
        clip_plan(params["synthesize"])  # synthesize.num_classes against the demo's classes
        runtime, _ = resolve_runtime(params["features"], params["runtime"])  # the device and decoder exist here
    except ParamsError as error:
        if not os.environ.get("DVC_EXP_NAME"):  # set by `dvc exp run`, whose -S values outlive its failure
            raise
        raise ParamsError(f"{error} (`dvc exp run -S` leaves its values in params.yaml when the run fails: "
                          "`git checkout -- params.yaml` puts back the committed ones; docs/experiments.md)") from None
    print(f"params.yaml is valid on this machine (device {runtime['device']}, precision {runtime['precision']})")
    Path(marker).write_text("params.yaml was checked on this machine by stages/validate.py\n")


if __name__ == "__main__":
    run_stage(main)
