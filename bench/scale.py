"""Scale figures (docs/scale.md): train epoch and peak RSS, DVC times and cache growth per class, Ray vs local.

    python bench/scale.py [--sizes 2000 20000 100000] [--videos 32] [--skip-engines]

Then estimates for UCF-101 and Kinetics from the measured figures. 100k videos need 3 x 6.5 GB of disk
($SCALE_DIR; deleted after)."""
import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from actionrec.pipeline import paths

T, D, PER_CLASS = 16, 2048, 100
GPU_FRAMES_S = 3000  # ASSUMED ResNet50 224 px bf16 frames/s per data-centre GPU: no GPU was lent to measure it
NODE_CORES, NODE_GPUS = 96, 8
DATASETS = {"UCF-101": 13_320, "Kinetics-400": 260_000, "Kinetics-700": 650_000}


def write_classes(folder: Path, first: int, count: int) -> None:
    """Classes first..first+count-1 of PER_CLASS synthetic videos each, as the features stage writes them."""
    from actionrec.dataset import write_features

    videos = [f"C{c:05d}/v_{i:03d}.avi" for c in range(first, first + count) for i in range(PER_CLASS)]
    base = np.random.default_rng(0).standard_normal((PER_CLASS, T, D), np.float32)

    @functools.lru_cache(maxsize=1)  # a class's features at once: distinct bytes per class, cheaply
    def class_features(c: int) -> np.ndarray:
        return (base + c / 7).astype(np.float16)

    write_features(folder, pd.DataFrame({"video": videos, "rotation": 0, "warning": ""}),
                   lambda i: class_features(first + i // PER_CLASS)[i % PER_CLASS])


def train_epoch(folder: str) -> None:
    """In its own process (for its peak RSS): one epoch of the LSTM head, read a batch at a time."""
    import torch

    from actionrec import training
    from actionrec.dataset import Features, open_features
    from actionrec.model import build_model

    torch.set_num_threads(1)
    training.RESIDENT_BYTES = 0  # streamed whatever the size: what keeps memory flat
    x, table = open_features(Path(folder))
    y = torch.tensor(pd.factorize(table["shard"])[0])
    val = np.arange(0, len(x), max(1, len(x) // 256))
    model = build_model({"head": "lstm", "feature_dim": D, "class_names": list(range(int(y.max()) + 1)),
                         "hidden_size": 128, "num_layers": 1, "bidirectional": False, "proj_dim": 128, "dropout": 0.3})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    cfg = {"lr": 1e-3, "weight_decay": 1e-4, "batch_size": 32, "max_epochs": 1, "patience": 1, "lr_factor": 0.5,
           "lr_patience": 1, "seed": 0}
    training.fit(model, x, y, Features(Path(folder), table["shard"][val], table["row"][val]), y[val], cfg)
    print(json.dumps({"epoch_s": time.perf_counter() - start, "rss_before_mb": before,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def dvc_seconds(work: Path, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=work, check=True, capture_output=True)
    return time.perf_counter() - start


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def scale_row(n: int, work: Path) -> dict:
    out = paths("features")["out"]  # the features stage's output, as dvc.yaml names it
    folder = work / out
    write_classes(folder, 0, n // PER_CLASS)
    train = json.loads(subprocess.run([sys.executable, __file__, "--train", str(folder)], check=True,
                                      capture_output=True, text=True).stdout)
    dvc_seconds(work, "init", "--no-scm")
    dvc_seconds(work, "remote", "add", "-d", "local", str(work / "remote"))
    row = {"videos": n, "shards": n // PER_CLASS, "GB": du(folder) / 1e9, **train,
           "dvc_commit_s": dvc_seconds(work, "add", out),
           "dvc_status_s": dvc_seconds(work, "status"), "dvc_push_s": dvc_seconds(work, "push")}
    cache = du(work / ".dvc/cache")
    write_classes(folder, n // PER_CLASS, 1)  # one class more
    row["dvc_commit_new_class_s"] = dvc_seconds(work, "add", out)
    shard = folder / f"shards/C{n // PER_CLASS:05d}.npy"
    row["cache_growth_per_new_shard"] = (du(work / ".dvc/cache") - cache) / shard.stat().st_size
    return row


def engines(count: int, work: Path) -> dict:
    """Local engine vs a local Ray on `count` demo-sized videos (320x240, 3 s), params.yaml's settings."""
    import torch
    import yaml

    from actionrec.backbone import inference_backbone, preprocessing
    from actionrec.runtime import resolve_runtime
    from actionrec.engine import iter_features_ray
    from actionrec.extract import ClipDataset, iter_features
    from actionrec.synthetic import write_avi

    rng = np.random.default_rng(0)
    paths = [str(work / f"v{i}.avi") for i in range(count)]
    for path in paths:
        write_avi(Path(path), rng.integers(0, 256, (75, 240, 320, 3), np.uint8), 25)
    params = yaml.safe_load(Path("params.yaml").read_text())
    cfg, device = resolve_runtime(params["features"], {**params["runtime"], "engine": "ray"})
    frames, out, threads = count * cfg["num_frames"], {}, torch.get_num_threads()
    torch.set_num_threads(1)  # as in a decode worker
    clips, start = ClipDataset(paths, cfg["num_frames"], preprocessing(cfg), cfg["decoder"]), time.perf_counter()
    for i in range(count):
        clips[i]
    out["decoding alone, one core"] = frames / (time.perf_counter() - start)
    torch.set_num_threads(threads)
    for engine in ("local", "ray (cold: starts Ray)", "local again", "ray (warm)"):
        start = time.perf_counter()
        if engine.startswith("local"):
            results = list(iter_features(inference_backbone(cfg, device, cfg["batch_frames"]), paths, cfg))
        else:
            results = list(iter_features_ray(paths, cfg))
        assert all(feats is not None for _, feats, _, _ in results)
        out[engine] = frames / (time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000, 100000])
    parser.add_argument("--videos", type=int, default=32, help="videos for the engine comparison")
    parser.add_argument("--skip-engines", action="store_true")
    parser.add_argument("--train", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train:
        return train_epoch(args.train)
    rows = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="scale-", dir=os.environ.get("SCALE_DIR")) as work:
            rows.append(scale_row(n, Path(work)))
        print(pd.DataFrame(rows).round(2).to_markdown(index=False), flush=True)
    if args.skip_engines:
        return
    with tempfile.TemporaryDirectory() as work:
        speed = engines(args.videos, Path(work))
    print("\n| engine (frames/s, this machine) | " + " | ".join(speed) + " |\n|---|" + "---|" * len(speed))
    print("| frames/s | " + " | ".join(f"{v:.1f}" for v in speed.values()) + " |")
    cpu = speed["local again"]  # measured: the whole 2-core machine, decoding and backbone
    decode = speed["decoding alone, one core"] * (NODE_CORES - NODE_GPUS)  # a core per GPU actor
    node = min(NODE_GPUS * GPU_FRAMES_S, decode)
    print(f"\nESTIMATES (hours, 16 frames a video): this 2-core CPU at {cpu:.0f} frames/s (measured); one node "
          f"of {NODE_GPUS} GPUs at {GPU_FRAMES_S} frames/s each (assumed, not measured) and {NODE_CORES} cores "
          f"decoding at {speed['decoding alone, one core']:.0f} frames/s each (measured here) = {node:.0f} "
          "frames/s; N nodes: N times that (the stage's own writes, ~64 KB a video, are not the limit)\n")
    print("| dataset | videos | frames | this 2-core CPU | one 8-GPU node | 4 nodes | 16 nodes |\n" + "|---" * 7 + "|")
    for name, videos in DATASETS.items():
        f = videos * T
        print(f"| {name} | {videos:,} | {f:,} | {f / cpu / 3600:.1f} | {f / node / 3600:.2f} | "
              f"{f / node / 4 / 3600:.2f} | {f / node / 16 / 3600:.3f} |")


if __name__ == "__main__":
    main()
