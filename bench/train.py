"""Training benchmark: seconds per epoch and per run of the train stage's loop (actionrec.training.fit).

    python bench/train.py [--heads lstm,gru,transformer,mean] [--epochs 3] [-S train.KEY=VALUE ...]

On random float16 features of the real 25-class subset's shape. Per run = max_epochs x an epoch, the most
a run can take. CPU time is printed beside wall time: on shared cores it is the steadier figure."""
import argparse
import time

import numpy as np
import torch

from actionrec.model import build_model, prepare, uses_centering
from actionrec.errors import UserError, run_stage
from actionrec.params import HEADS, apply_overrides, check_section, load_params
from actionrec.training import fit


def random_split(n: int, frames: int, dim: int, classes: int, rng: np.random.Generator):
    x = torch.from_numpy(rng.standard_normal((n, frames, dim), dtype=np.float32).astype(np.float16))
    return x, torch.from_numpy(rng.integers(0, classes, n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", default=None, help="comma-separated; default: train.head")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per head")
    for name, default in {"train": 2700, "val": 340, "frames": 16, "dim": 2048, "classes": 25}.items():
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("-S", "--set", action="append", default=[],
                        metavar="train.KEY=VALUE or runtime.train_threads=N")
    args = parser.parse_args()
    params = apply_overrides(load_params("train", "runtime"), args.set, "train")
    base, threads = params["train"], int(params["runtime"]["train_threads"])
    heads = (args.heads or base["head"]).split(",")
    if threads:
        torch.set_num_threads(threads)
    if not set(heads) <= set(HEADS):
        raise UserError(f"--heads must be among {', '.join(HEADS)}")
    rng = np.random.default_rng(0)
    x_train, y_train = random_split(args.train, args.frames, args.dim, args.classes, rng)
    x_val, y_val = random_split(args.val, args.frames, args.dim, args.classes, rng)
    mean, std = torch.zeros(args.dim), torch.ones(args.dim)
    print(f"random float16 features: train {tuple(x_train.shape)}, val {tuple(x_val.shape)}, "
          f"{args.classes} classes; torch threads {torch.get_num_threads()}")
    for head in heads:
        cfg = check_section("train", {**base, "head": head})
        meta = {**cfg, "feature_dim": args.dim, "num_frames": args.frames,
                "class_names": [str(i) for i in range(args.classes)]}
        model = build_model(meta)
        # auto means on for the synthetic demo, whose shape and statistics these features stand in for
        center = uses_centering({**cfg, "temporal_centering": cfg["temporal_centering"] in (True, "auto")})
        start, cpu = time.perf_counter(), time.process_time()
        fit(model, x_train, y_train, x_val, y_val, {**cfg, "max_epochs": args.epochs, "patience": args.epochs},
            transform=lambda batch: prepare(batch, mean, std, center))
        per_epoch = (time.perf_counter() - start) / args.epochs
        cpu_epoch = (time.process_time() - cpu) / args.epochs
        weights = sum(p.numel() for p in model.parameters())
        print(f"{head:12s} {per_epoch:7.2f} s/epoch  {per_epoch * cfg['max_epochs']:7.1f} s/run "
              f"(max_epochs {cfg['max_epochs']})   CPU time {cpu_epoch:6.2f} s/epoch "
              f"{cpu_epoch * cfg['max_epochs']:7.1f} s/run   {weights / 1e6:.2f} M params")


if __name__ == "__main__":
    run_stage(main)
