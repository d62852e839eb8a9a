"""Portable arithmetic (docs/reproducibility.md): CPU kernels that compute the same bits on every x86-64 CPU with
AVX2, Intel or AMD, with or without AVX-512. Each library reads its variable once, at its first kernel: a stage
calls use_portable_kernels() before it computes anything, and the call checks that torch took it."""
from __future__ import annotations

import os
import sys

KERNELS = {
    "MKL_CBWR": "COMPATIBLE",  # MKL (linear layers): one SSE2 code path, the same on Intel and AMD (Intel's CNR mode)
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own kernels: their AVX2 build, also on AVX-512 CPUs
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN (convolutions, the LSTM): at most its AVX2 kernels
}


def use_portable_kernels() -> None:
    """Set KERNELS for this process and those it starts (decode workers); refuse where torch already chose."""
    import torch

    if not torch.cpu._is_avx2_supported():  # aarch64, or an x86-64 CPU from before AVX2: its own kernels
        print("warning: this CPU has no AVX2: its results differ in the last bits from those of x86-64 CPUs with "
              "AVX2, which all compute the committed ones (docs/reproducibility.md)", file=sys.stderr)
        return
    os.environ.update(KERNELS)
    if torch.backends.cpu.get_cpu_capability() != "AVX2":
        raise RuntimeError("torch ran a kernel before use_portable_kernels(): call it first")


def features_runtime(features: dict, runtime: dict) -> dict:
    """The runtime params to extract features with. precision fp32 is the portable path: these kernels, eager (code
    that torch.compile generates exists only where a C++ compiler does); auto, bf16, fp16 and int8 are the fast
    path, compiled and native, whose results depend on the machine."""
    if features["precision"] != "fp32":
        return runtime
    use_portable_kernels()
    return {**runtime, "compile": False}
