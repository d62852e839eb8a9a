"""Feature-extraction benchmark: frames/s of the seed-style extractor, the project's features
code path, and the backbone alone on random input (the ceiling), on the same videos.

    python bench/extract.py [--videos 200] [--whole]

The seed-style extractor always runs as a whole process (bench/seed_extract.py, start-up
included); --whole also times `dvc repro -f -s features`, the stage as users run it, likewise."""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader

from actionrec.backbone import embed, inference_backbone, preprocessing
from actionrec.device import resolve_runtime
from actionrec.extract import ClipDataset, iter_features
from actionrec.params import load_params
from actionrec.pipeline import paths


def bench_videos(root: Path, count: int) -> list[str]:
    """count videos spread evenly over the classes (25 classes x 8 for the default 200)."""
    rows = pd.read_csv(paths("subset")["metadata"])
    per_class = max(1, count // rows["class_name"].nunique())
    picked = rows.groupby("class_name", sort=True).head(per_class)
    return [str(root / v) for v in picked["video"]][:count]


def seed_style(paths: list[str]) -> float:
    """frames/s of bench/seed_extract.py as a whole process, start-up included."""
    with tempfile.TemporaryDirectory() as out:
        listing = Path(out) / "videos.txt"
        listing.write_text("\n".join(paths))
        start = time.perf_counter()
        subprocess.run([sys.executable, "bench/seed_extract.py", str(listing), out], check=True,
                       stdout=subprocess.DEVNULL)
        return 16 * len(paths) / (time.perf_counter() - start)


def warmed_up_backbone(cfg: dict, device: torch.device) -> torch.nn.Module:
    """The stage's backbone after one batch: compiling and kernel choice are start-up, timed
    with the whole stage (--whole), not here."""
    model = inference_backbone(cfg, device, cfg["batch_frames"])
    if not cfg["compile"]:  # a compiled model already ran one batch to compile
        crop = model.preprocessing["crop"]
        embed(model, torch.zeros((cfg["batch_frames"], 3, crop, crop), dtype=torch.uint8, device=device),
              cfg["precision"])
    return model


def decode_only(paths: list[str], cfg: dict) -> float:
    """frames/s of the decode workers alone (decode, sample, resize, crop): the input ceiling."""
    dataset = ClipDataset(paths, cfg["num_frames"], preprocessing(cfg), cfg["decoder"])
    workers = cfg["num_workers"]
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, prefetch_factor=8 if workers else None)
    start, frames = time.perf_counter(), 0
    for _, clip, _, _ in loader:
        frames += 0 if clip is None else len(clip)
    return frames / (time.perf_counter() - start)


def project_path(paths: list[str], cfg: dict, device: torch.device) -> float:
    """frames/s of the features stage's code path: decode workers, batching, backbone."""
    model = warmed_up_backbone(cfg, device)
    start, frames = time.perf_counter(), 0
    for _, features, _, _ in iter_features(model, paths, cfg):
        frames += 0 if features is None else len(features)
    return frames / (time.perf_counter() - start)


def backbone_only(cfg: dict, device: torch.device, batches: int = 8) -> float:
    model = warmed_up_backbone(cfg, device)
    crop = model.preprocessing["crop"]
    batch = torch.randint(0, 256, (cfg["batch_frames"], 3, crop, crop), dtype=torch.uint8, device=device)
    start = time.perf_counter()
    for _ in range(batches):
        embed(model, batch, cfg["precision"])
    return batches * len(batch) / (time.perf_counter() - start)


def whole_stage(num_frames: int) -> float:
    """frames/s of `dvc repro -f -s features` on the whole dataset, start-up included."""
    start = time.perf_counter()
    subprocess.run(["dvc", "repro", "-f", "-s", "features"], check=True, stdout=subprocess.DEVNULL)
    return num_frames * len(pd.read_csv(paths("subset")["metadata"])) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--whole", action="store_true")
    args = parser.parse_args()
    params = load_params("data", "features", "runtime")
    cfg, device = resolve_runtime(params["features"], params["runtime"])
    paths = bench_videos(Path(params["data"]["root"]), args.videos)
    print(f"{len(paths)} videos, {cfg['num_frames']} frames each, device {device}, torch threads "
          f"{torch.get_num_threads()}, precision {cfg['precision']}, compile {cfg['compile']}, "
          f"batch {cfg['batch_frames']}, workers {cfg['num_workers']}, decoder {cfg['decoder']}")
    seed = seed_style(paths)
    project = project_path(paths, cfg, device)
    ceiling = backbone_only(cfg, device)
    decode = decode_only(paths, cfg)
    print(f"1. seed-style extractor (whole process)  {seed:8.1f} frames/s")
    print(f"2. project features code path           {project:8.1f} frames/s")
    print(f"3. backbone alone (random input)        {ceiling:8.1f} frames/s")
    print(f"5. decode workers alone                 {decode:8.1f} frames/s")
    print(f"ratio 2/1 = {project / seed:.2f}   ratio 2/3 = {project / ceiling:.2f}   ratio 2/5 = {project / decode:.2f}")
    if args.whole:
        stage = whole_stage(cfg["num_frames"])
        print(f"4. dvc repro -f -s features (whole stage, all videos, start-up included) "
              f"{stage:8.1f} frames/s   ratio 4/1 = {stage / seed:.2f}")


if __name__ == "__main__":
    main()
