"""Feature-extraction benchmark: frames/s of the seed-style extractor, the features code path, the backbone alone.

    python bench/extract.py [--videos 200] [--precisions fp32,bf16,int8] [--whole]

Per precision, on the same videos, beside the fp32 bound (this CPU's fp32 GEMM rate over a ResNet50
frame's FLOPs). The seed-style extractor, and with --whole `dvc repro -f -s features`, are timed as
whole processes, start-up included; a precision's start-up is building (int8: quantizing) the backbone."""
import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from actionrec.backbone import embed, inference_backbone, preprocessing
from actionrec.extract import ClipDataset, iter_features
from actionrec.params import load_params
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
    """frames/s of an iterable of (index, frames or None, ...), timed from its first item's request."""
    start, frames = time.perf_counter(), 0
    for _, clip, *_ in items:
        frames += 0 if clip is None else len(clip)
    return frames / (time.perf_counter() - start)


def backbone_only(model, cfg: dict, device: torch.device, batches: int = 8) -> float:
    crop = model.preprocessing["crop"]
    batch = torch.randint(0, 256, (cfg["batch_frames"], 3, crop, crop), dtype=torch.uint8, device=device)
    start = time.perf_counter()
    for _ in range(batches):
        embed(model, batch, cfg["precision"])
    return batches * len(batch) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--precisions", default="fp32,bf16,int8")
    parser.add_argument("--whole", action="store_true")
    args = parser.parse_args()
    params = load_params("data", "features", "runtime")
    cfg, device = resolve_runtime(params["features"], params["runtime"])
    rows = read_csv(paths("subset")["metadata"])  # spread evenly over the classes (25 x 8 for the default 200)
    picked = rows.groupby("class_name", sort=True).head(max(1, args.videos // rows["class_name"].nunique()))
    videos = [str(Path(params["data"]["root"]) / v) for v in picked["video"]][:args.videos]
    print(f"{len(videos)} videos, {cfg['num_frames']} frames each, device {device}, torch threads "
          f"{torch.get_num_threads()}, compile {cfg['compile']}, batch {cfg['batch_frames']}, "
          f"workers {cfg['num_workers']}, decoder {cfg['decoder']}")
    with tempfile.TemporaryDirectory() as out:
        (Path(out) / "videos.txt").write_text("\n".join(videos))
        seed = 16 * len(videos) / process_seconds(sys.executable, "bench/seed_extract.py", f"{out}/videos.txt", out)
    workers = cfg["num_workers"]  # the decode workers alone (decode, sample, resize, crop): the input ceiling
    decode = frames_per_s(DataLoader(ClipDataset(videos, cfg["num_frames"], preprocessing(cfg), cfg["decoder"]),
                                     batch_size=None, num_workers=workers, prefetch_factor=8 if workers else None))
    print(f"1. seed-style extractor (whole process)  {seed:8.1f} frames/s")
    print(f"5. decode workers alone                 {decode:8.1f} frames/s")
    print(f"{'precision':<10} {'start-up s':>10} {'3. backbone alone':>18} {'2. code path':>13} {'2/1':>6} {'2/3':>6}")
    speed = {}
    for precision in args.precisions.split(","):
        run = dict(cfg, precision=precision)
        start = time.perf_counter()
        model = inference_backbone(run, device, run["batch_frames"])
        if not run["compile"] or precision == "int8":  # a compiled model already ran one batch
            backbone_only(model, run, device, batches=1)  # compiling and kernel choice are start-up
        startup = time.perf_counter() - start
        speed[precision] = backbone_only(model, run, device), frames_per_s(iter_features(model, videos, run))
        ceiling, project = speed[precision]
        print(f"{precision:<10} {startup:10.1f} {ceiling:18.1f} {project:13.1f} {project / seed:6.2f} "
              f"{project / ceiling:6.2f}")
    gflops = fp32_gemm_gflops()
    bound = gflops / 8.18  # a ResNet50 224x224 frame's GFLOP (4.09 G multiply-adds)
    print(f"fp32 GEMM {gflops:.0f} GFLOP/s -> fp32 bound {bound:.1f} ResNet50 frames/s (224x224)")
    for precision in [p for p in speed if p != "fp32"]:
        ratios = [f"{speed[precision][i] / speed['fp32'][i]:.2f} x fp32 {what}" for i, what in
                  enumerate(("backbone", "code path")) if "fp32" in speed]
        print(f"{precision}: {', '.join(ratios + [f'{speed[precision][1] / bound:.2f} x the fp32 bound'])}")
    if args.whole:
        seconds = process_seconds("dvc", "repro", "-f", "-s", "features")
        stage = cfg["num_frames"] * len(rows) / seconds
        print(f"4. dvc repro -f -s features ({cfg['precision']}, whole stage, all videos, start-up included) "
              f"{stage:8.1f} frames/s   ratio 4/1 = {stage / seed:.2f}")


if __name__ == "__main__":
    main()
