"""Resolve `auto` for this machine (device, precision, decode workers, batch size), once: the resolved values
are recorded (metrics, the model file), so a run says what it really used."""
from __future__ import annotations

import os

import torch

from actionrec.errors import ParamsError


def resolve_device(name: str, key: str = "runtime.device") -> torch.device:
    """auto -> the first CUDA GPU when torch sees one, else the CPU; a CUDA device it lacks is a ParamsError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ParamsError(f"{key} is {name} but torch sees no CUDA GPU here: set {key}: auto or cpu")
        if (device.index or 0) >= torch.cuda.device_count():
            raise ParamsError(f"{key} is {name} but only {torch.cuda.device_count()} CUDA device(s) "
                              f"exist: use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return device


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: elsewhere bf16 is emulated, slower than fp32 (1.9 vs 9.1 frames/s on a Xeon)."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto -> bf16 on CUDA (fp16 without bf16) and on a CPU with native bf16, else fp32; int8: CPU only."""
    if precision == "int8" and device.type == "cuda":
        raise ParamsError("features.precision int8 runs on the CPU only (OpenVINO): set runtime.device: cpu, "
                          "or precision auto, bf16, fp16 or fp32 on the GPU")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_workers(num_workers: int | str, device: torch.device) -> int:
    """auto -> all cores but one on CUDA (decoding is the limit), else one per 4 cores (the backbone needs them)."""
    if num_workers != "auto":
        return int(num_workers)
    cores = available_cores()
    return max(1, cores - 1) if device.type == "cuda" else max(1, cores // 4)


def resolve_batch_frames(batch_frames: int | str, device: torch.device) -> int:
    """auto -> 256 frames a forward pass on a GPU, 64 on the CPU."""
    if batch_frames != "auto":
        return int(batch_frames)
    return 256 if device.type == "cuda" else 64

