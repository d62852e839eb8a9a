"""Feature-extraction benchmark: frames/s of the seed-style extractor, the features code path, the backbone alone.

    python bench/extract.py [--videos 200] [--precisions fp32,bf16,int8] [--whole] [-S features.KEY=VALUE ...]

Per precision, on the same videos, beside the fp32 bound (this CPU's fp32 GEMM rate over a ResNet50
frame's FLOPs). The seed-style extractor, and with --whole `dvc repro -f -s features`, are timed as
whole processes, start-up included; a precision's start-up is building (int8: quantizing) the backbone.
-S overrides params.yaml as dvc exp run -S does (not for --whole, which runs params.yaml's). A video backbone
(clips of L frames) gets frames/s and clips/s; the seed-style extractor and the bound, resnet50's, are left out."""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from actionrec.backbone import batch_items, embed, inference_backbone, item_shape, preprocessing
from actionrec.errors import UserError, run_stage
from actionrec.extract import ClipDataset, iter_features
from actionrec.params import apply_overrides, load_params
from actionrec.pipeline import paths, read_csv
from actionrec.runtime import resolve_runtime


def process_seconds(*command: str) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def fp32_gemm_gflops(seconds: float = 3.0, n: int = 2048) -> float:
    """This CPU's fp32 matrix-multiply rate: the best of n x n products on torch's threads."""
    a, b, best = torch.randn(n, n), torch.randn(n, n), 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * n ** 3 / (time.perf_counter() - start) / 1e9)
    return best


def frames_per_s(items) -> float:
    """items/s (frames, or a video backbone's clips) of an iterable of (index, items or None, ...), timed from its
    first item's request."""
    start, frames = time.perf_counter(), 0
    for _, clip, *_ in items:
        frames += 0 if clip is None else len(clip)
    return frames / (time.perf_counter() - start)


def backbone_only(model, cfg: dict, device: torch.device, batches: int = 8) -> float:
    prep = model.preprocessing
    batch = torch.randint(0, 256, (batch_items(cfg["batch_frames"], prep), *item_shape(prep)), dtype=torch.uint8,
                          device=device)
    start = time.perf_counter()
    for _ in range(batches):
        embed(model, batch, cfg["precision"])
    return batches * len(batch) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--precisions", default="fp32,bf16,int8")
    parser.add_argument("--whole", action="store_true")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="features.KEY=VALUE or runtime.KEY=VALUE")
    args = parser.parse_args()
    if args.whole and args.set:
        raise UserError("--whole times dvc repro of params.yaml as it is: set the params there (or run inside a "
                        "dvc exp workspace) rather than with -S")
    params = apply_overrides(load_params("data", "features", "runtime"), args.set, "features")
    cfg, device = resolve_runtime(params["features"], params["runtime"])
    clip = preprocessing(cfg).get("clip_frames", 1)  # frames an item; 1: an image backbone, resnet50's figures apply
    rows = read_csv(paths("subset")["metadata"])  # spread evenly over the classes (25 x 8 for the default 200)
    picked = rows.groupby("class_name", sort=True).head(max(1, args.videos // rows["class_name"].nunique()))
    videos = [str(Path(params["data"]["root"]) / v) for v in picked["video"]][:args.videos]
    each = f"clips of {clip} frames" if clip > 1 else "frames"
    print(f"{len(videos)} videos, {cfg['backbone']}, {cfg['num_frames']} {each} each, device {device}, torch threads "
          f"{torch.get_num_threads()}, compile {cfg['compile']}, batch {cfg['batch_frames']}, "
          f"workers {cfg['num_workers']}, decoder {cfg['decoder']}")
    if clip == 1:  # the seed notebook's resnet50 frames: no yardstick for a video model
        with tempfile.TemporaryDirectory() as out:
            (Path(out) / "videos.txt").write_text("\n".join(videos))
            seed = 16 * len(videos) / process_seconds(sys.executable, "bench/seed_extract.py", f"{out}/videos.txt", out)
        print(f"1. seed-style extractor (whole process)  {seed:8.1f} frames/s")
    workers = cfg["num_workers"]  # the decode workers alone (decode, sample, resize, crop): the input ceiling
    decode = clip * frames_per_s(DataLoader(
        ClipDataset(videos, cfg["num_frames"], preprocessing(cfg), cfg["decoder"]),
        batch_size=None, num_workers=workers, prefetch_factor=8 if workers else None))
    print(f"5. decode workers alone                 {decode:8.1f} frames/s" + f" {decode / clip:.2f} clips/s" * (clip > 1))
    print(f"{'precision':<10} {'start-up s':>10} {'3. backbone alone':>18} {'2. code path':>13} {'2/1':>6} {'2/3':>6}"
          + f" {'3. clips/s':>10} {'2. clips/s':>10}" * (clip > 1) + "   (frames/s)")
    speed = {}
    for precision in args.precisions.split(","):
        run = dict(cfg, precision=precision)
        start = time.perf_counter()
        model = inference_backbone(run, device, run["batch_frames"])
        if not run["compile"] or precision == "int8":  # a compiled model already ran one batch
            backbone_only(model, run, device, batches=1)  # compiling and kernel choice are start-up
        startup = time.perf_counter() - start
        speed[precision] = ceiling, project = (clip * backbone_only(model, run, device),
                                                clip * frames_per_s(iter_features(model, videos, run)))
        print(f"{precision:<10} {startup:10.1f} {ceiling:18.1f} {project:13.1f} "
              + (f"{project / seed:6.2f} " if clip == 1 else f"{'-':>6} ")
              + f"{project / ceiling:6.2f}" + f" {ceiling / clip:10.2f} {project / clip:10.2f}" * (clip > 1))
    bound = 0.0  # resnet50's frames: none for a video model
    if clip == 1:
        gflops = fp32_gemm_gflops()
        bound = gflops / 8.18  # a ResNet50 224x224 frame's GFLOP (4.09 G multiply-adds)
        print(f"fp32 GEMM {gflops:.0f} GFLOP/s -> fp32 bound {bound:.1f} ResNet50 frames/s (224x224)")
    for precision in [p for p in speed if p != "fp32"]:
        ratios = [f"{speed[precision][i] / speed['fp32'][i]:.2f} x fp32 {what}" for i, what in
                  enumerate(("backbone", "code path")) if "fp32" in speed]
        ratios += [f"{speed[precision][1] / bound:.2f} x the fp32 bound"] if bound else []
        if ratios:
            print(f"{precision}: {', '.join(ratios)}")
    if args.whole:
        seconds = process_seconds("dvc", "repro", "-f", "-s", "features")
        stage = cfg["num_frames"] * clip * len(rows) / seconds
        print(f"4. dvc repro -f -s features ({cfg['precision']}, whole stage, all videos, start-up included) "
              f"{stage:8.1f} frames/s" + (f" {stage / clip:.2f} clips/s" if clip > 1 else f"   ratio 4/1 = {stage / seed:.2f}"))


if __name__ == "__main__":
    run_stage(main)
