"""features.precision int8: the backbone quantized after training (post-training static
quantization) with NNCF and run by OpenVINO on the CPU: 8-bit convolutions (VNNI where the
CPU has it, else AVX2/AVX-512 int8 kernels), the pooled features float32. No C++ compiler
needed. Why OpenVINO, and the measurements: docs/performance.md.

Calibration is fixed and the same everywhere: CALIBRATION_FRAMES frames of each real clip in
actionrec/calibration/ (UCF-101 and Kinetics), sampled and preprocessed as the features stage
does. So a video's int8 features depend on that video and the features params alone, as in
fp32 (not on the other videos of the dataset), two runs on one machine give identical
features, and predict.py rebuilds the same backbone from the model file alone. Inference
precision is pinned to f32 for every op that is not int8 (OpenVINO would otherwise run them
in bf16 on AVX512-BF16/AMX CPUs)."""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from actionrec.errors import UserError

CALIBRATION = Path(__file__).parent / "calibration"
CALIBRATION_FRAMES = 16  # per clip


def calibration_files() -> list[Path]:
    return sorted(p for p in CALIBRATION.iterdir() if p.suffix in (".avi", ".mp4"))


def calibration_clips() -> list[np.ndarray]:
    """uint8 [CALIBRATION_FRAMES, H, W, 3] frames of each calibration clip, as decoded."""
    from actionrec.video import sample_clip

    return [sample_clip(path, CALIBRATION_FRAMES).frames for path in calibration_files()]


def calibration_info() -> dict:
    """What fixes the int8 features beside the params (recorded in info.json and the model
    file, and part of the feature store's fingerprint): the calibration clips and the versions
    of OpenVINO and NNCF."""
    from importlib.metadata import version

    from actionrec.download import sha256_of

    return {"clips": {path.name: sha256_of(path) for path in calibration_files()},
            "frames_per_clip": CALIBRATION_FRAMES, "openvino": version("openvino"), "nncf": version("nncf")}


def check_calibration(recorded: dict) -> None:
    """UserError unless this repository's calibration clips are those a model file records
    (other OpenVINO/NNCF versions give features within int8's tolerance, as other CPUs do)."""
    here = calibration_info()
    if {k: recorded.get(k) for k in ("clips", "frames_per_clip")} != {k: here[k] for k in ("clips", "frames_per_clip")}:
        raise UserError(f"this model's int8 features were calibrated on other clips than those in {CALIBRATION}/ "
                        "here: check out the commit that trained it, or train with features.precision fp32")


class Int8Backbone:
    """An OpenVINO compiled model called like the torch backbone: normalised float32 frames
    [N, 3, H, W] in, float32 features [N, D] out."""

    def __init__(self, compiled, feature_dim: int, prep: dict):
        self.compiled, self.feature_dim, self.preprocessing = compiled, feature_dim, prep
        self.inference_device = torch.device("cpu")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.compiled(x.float().contiguous().numpy())[0]
        return torch.from_numpy(np.array(out))  # a copy: OpenVINO reuses its output buffer


def quantize(model: torch.nn.Module, frames: torch.Tensor, prep: dict) -> Int8Backbone:
    """The fp32 backbone (on the CPU, eval mode) quantized to int8 on `frames` (the calibration
    clips' frames, normalised as the backbone takes them), compiled for this CPU with torch's
    thread count."""
    import nncf
    import openvino as ov

    nncf.set_log_level(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation, which convert_model uses
        converted = ov.convert_model(model, example_input=frames[:1])
    converted.reshape([-1, *frames.shape[1:]])
    batches = [batch.numpy() for batch in frames.split(CALIBRATION_FRAMES)]
    with contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bars
        quantized = nncf.quantize(converted, nncf.Dataset(batches), subset_size=len(batches))
    compiled = ov.Core().compile_model(quantized, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                          "INFERENCE_NUM_THREADS": torch.get_num_threads(),
                                                          "PERFORMANCE_HINT": "LATENCY"})
    return Int8Backbone(compiled, model.feature_dim, prep)
