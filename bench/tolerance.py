"""How much features differ from machine to machine: the measurements behind actionrec/verify.py TOLERANCE.

    python bench/tolerance.py   # after `make repro`

`make verify`'s reference clips, extracted in a process per configuration (so that the variables that pick
torch's, oneDNN's and OpenVINO's instruction set take effect: other CPUs, simulated on this one)."""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from actionrec.params import load_params
from actionrec.portable import KERNELS
from actionrec.verify import extract_clips, reference_videos, relative_l2

CONFIGS = [  # (name, precision, threads, compile, environment)
    ("fp32, portable kernels, eager: the stage's (reference)", "fp32", 2, False, KERNELS),
    ("fp32, portable kernels, 1 thread", "fp32", 1, False, KERNELS),
    ("fp32, native ISA, eager", "fp32", 2, False, {}),
    ("fp32, native ISA, 1 thread", "fp32", 1, False, {}),
    ("fp32, native ISA, compiled", "fp32", 2, True, {}),
    ("fp32, SSE4.1 kernels", "fp32", 2, False, {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}),
    ("bf16, native ISA", "bf16", 2, False, {}),  # native where the CPU has AVX512-BF16/AMX
    ("bf16, AVX-512 without BF16 (emulated)", "bf16", 2, False, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}),
    ("bf16, AVX2 kernels (emulated)", "bf16", 2, False, KERNELS),  # the portable ones: torch and oneDNN at AVX2
    ("fp16, native ISA", "fp16", 2, False, {}),
    ("int8 (OpenVINO), native ISA (VNNI here)", "int8", 2, False, {}),
    ("int8, native ISA, 1 thread", "int8", 1, False, {}),
    ("int8, AVX-512 without VNNI", "int8", 2, False,  # where int8 kernels can saturate
     {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "OV_CPU_MAX_ISA": "AVX512_CORE"}),
    ("int8, AVX2 kernels", "int8", 2, False, {"ONEDNN_MAX_CPU_ISA": "AVX2", "OV_CPU_MAX_ISA": "AVX2"}),
]


def worker(out: str, precision: str, threads: str, compiled: str) -> None:
    """In a fresh process (its environment already set): extract the reference clips."""
    params = load_params("data", "features", "runtime")
    videos = [str(Path(params["data"]["root"]) / v) for v in reference_videos()]
    feats, _ = extract_clips(videos, dict(params["features"], precision=precision),
                             dict(params["runtime"], threads=int(threads)), compiled=compiled == "1")
    np.save(out, feats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=4, metavar=("OUT", "PRECISION", "THREADS", "COMPILE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, precision, threads, compiled, env in CONFIGS:
            out = Path(tmp) / f"{len(results)}.npy"
            subprocess.run([sys.executable, __file__, "--worker", str(out), precision, str(threads),
                            str(int(compiled))], env={**os.environ, **env}, check=True, stderr=subprocess.DEVNULL)
            results[name] = np.load(out)
    reference = results[CONFIGS[0][0]]
    print(f"{'configuration':<48} max relative L2 vs the reference")
    for name, feats in results.items():
        print(f"{name:<48} {relative_l2(feats, reference).max():.2g}")
    clips, frames = reference.shape[:2]
    flat = reference.reshape(clips * frames, -1)
    distance = np.linalg.norm(flat[:, None] - flat[None], axis=-1) / np.linalg.norm(flat, axis=-1)[None]
    clip = np.repeat(np.arange(clips), frames)
    other_clip = clip[:, None] != clip[None]
    same_clip = ~other_clip & ~np.eye(len(flat), dtype=bool)
    print(json.dumps({"min distance, frames of different clips": round(float(distance[other_clip].min()), 4),
                      "min distance, two sampled frames of one clip": round(float(distance[same_clip].min()), 4)}))


if __name__ == "__main__":
    main()
