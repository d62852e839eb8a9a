"""Stage synthesize: render the embedded demo dataset (UCF-101 layout) from a seed into OUT."""
import shutil
from functools import partial
from multiprocessing import Pool
from pathlib import Path

from tqdm import tqdm

from actionrec.errors import run_stage
from actionrec.params import load_params
from actionrec.synthetic import clip_plan, render_and_write


def main(out: str) -> None:
    params = load_params("data", "synthesize")
    cfg, out = params["synthesize"], Path(out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if params["data"]["source"] != "synthetic":
        (out / "SKIPPED").write_text("data.source is not synthetic: the demo is not rendered\n")
        print(f"data.source is {params['data']['source']}: skipping the demo dataset")
        return
    plan = clip_plan(cfg)
    # clips are independent and each seeded from its own name, so workers change nothing
    with Pool() as pool:  # a process per core
        work = pool.imap(partial(render_and_write, cfg=cfg, root=out), plan, chunksize=4)
        for _ in tqdm(work, total=len(plan), desc="synthesize", unit="clip"):
            pass
    print(f"wrote {len(plan)} clips of {cfg['num_classes']} classes to {out}")


if __name__ == "__main__":
    run_stage(main)
