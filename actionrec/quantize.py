"""features.precision int8: the backbone quantized by NNCF, run by OpenVINO on the CPU (docs/performance.md).
Calibration is fixed (the committed clips), so a video's features depend on it and the params alone, and
predict.py rebuilds the backbone from the model file. Non-int8 ops are pinned to f32 (else bf16 on AMX)."""
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
CALIBRATION_FRAMES = 16  # per file: frames for an image backbone
CALIBRATION_CLIPS = 4  # per file: clips for a video backbone (a clip costs a video model what 16 frames cost resnet50)


def calibration_files() -> list[Path]:
    return sorted(p for p in CALIBRATION.iterdir() if p.suffix in (".avi", ".mp4"))


def calibration_info() -> dict:
    """What fixes the int8 features beside the params (in info.json, the model file, the store's fingerprint)."""
    from importlib.metadata import version

    from actionrec.pipeline import sha256_of

    return {"clips": {path.name: sha256_of(path) for path in calibration_files()},
            "frames_per_clip": CALIBRATION_FRAMES, "openvino": version("openvino"), "nncf": version("nncf")}


def check_calibration(recorded: dict) -> None:
    """The clips must match; other OpenVINO/NNCF versions give features within int8's tolerance."""
    here = calibration_info()
    if any(recorded.get(k) != here[k] for k in ("clips", "frames_per_clip")):
        raise UserError(f"this model's int8 features were calibrated on other clips than those in {CALIBRATION}/ "
                        "here: check out the commit that trained it, or train with features.precision fp32")


class Int8Backbone:
    """An OpenVINO compiled model called like the torch backbone: float32 frames in, float32 features out."""

    def __init__(self, compiled, feature_dim: int, prep: dict):
        self.compiled, self.feature_dim, self.preprocessing = compiled, feature_dim, prep
        self.inference_device = torch.device("cpu")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.compiled(x.float().contiguous().numpy())[0]
        return torch.from_numpy(np.array(out))  # a copy: OpenVINO reuses its output buffer


def quantize(model: torch.nn.Module, frames: torch.Tensor, prep: dict) -> Int8Backbone:
    """The fp32 backbone quantized on `frames` (normalised calibration inputs), compiled for this CPU."""
    import nncf
    import openvino as ov

    nncf.set_log_level(logging.ERROR)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation, which convert_model uses
        converted = ov.convert_model(model, example_input=frames[:1])
    converted.reshape([-1, *frames.shape[1:]])
    batches = [batch.numpy() for batch in frames.split(CALIBRATION_FRAMES if frames.dim() == 4 else 1)]
    with contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bars
        quantized = nncf.quantize(converted, nncf.Dataset(batches), subset_size=len(batches))
    compiled = ov.Core().compile_model(quantized, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                          "INFERENCE_NUM_THREADS": torch.get_num_threads(),
                                                          "PERFORMANCE_HINT": "LATENCY"})
    return Int8Backbone(compiled, model.feature_dim, prep)
