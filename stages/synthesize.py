"""Stage synthesize: render the embedded demo dataset (UCF-101 layout) from a seed."""
import os
import shutil
from functools import partial
from multiprocessing import Pool

from tqdm import tqdm

from actionrec.params import load_params, run_stage
from actionrec.synthetic import OUTPUT, clip_plan, render_and_write


def main() -> None:
    params = load_params("data", "synthesize")
    cfg = params["synthesize"]
    shutil.rmtree(OUTPUT, ignore_errors=True)
    OUTPUT.mkdir(parents=True)
    if params["data"]["source"] != "synthetic":
        (OUTPUT / "SKIPPED").write_text("data.source is not synthetic: the demo is not rendered\n")
        print(f"data.source is {params['data']['source']}: skipping the demo dataset")
        return
    plan = clip_plan(cfg)
    # clips are independent and each seeded from its own name, so workers change nothing
    with Pool(os.cpu_count()) as pool:
        work = pool.imap(partial(render_and_write, cfg=cfg, root=OUTPUT), plan, chunksize=4)
        for _ in tqdm(work, total=len(plan), desc="synthesize", unit="clip"):
            pass
    print(f"wrote {len(plan)} clips of {cfg['num_classes']} classes to {OUTPUT}")


if __name__ == "__main__":
    run_stage(main)
