"""The frozen image backbone: build it, preprocess frames for it, run it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.fx.experimental.optimization
import torchvision
from torchvision.transforms.v2 import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
PRECISIONS = ("fp32", "bf16")


def build_backbone(name: str, weights: str, seed: int = 0) -> torch.nn.Module:
    """A torchvision ResNet without its classifier, in eval mode, frozen.

    weights: "none" (random, seeded: the offline demo), a torchvision weights name such as
    "IMAGENET1K_V2" (loaded from the TORCH_HOME cache, downloaded if online), or a path to a
    state-dict file.
    """
    torch.manual_seed(seed)
    if weights == "none":
        model = torchvision.models.get_model(name, weights=None)
    elif Path(weights).suffix in (".pt", ".pth") or Path(weights).is_file():
        model = torchvision.models.get_model(name, weights=None)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    else:
        enum = torchvision.models.get_model_weights(name)[weights]
        try:
            model = torchvision.models.get_model(name, weights=enum)
        except OSError as error:  # no network and nothing in the cache
            cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
            raise RuntimeError(
                f"cannot load {name} {weights} weights ({error.__class__.__name__}); put "
                f"{Path(enum.url).name} at {cache} (or set TORCH_HOME), or use "
                f"features.weights: none") from None
    model.fc = torch.nn.Identity()
    model.eval().requires_grad_(False)
    return model.to(memory_format=torch.channels_last)


def prepare_for_inference(model: torch.nn.Module, precision: str, compile: bool) -> torch.nn.Module:
    """Fold batch norms into convolutions, cast to the precision, optionally torch.compile.

    Measured on 2 CPU cores (bench/extract.py): bf16 about 2.5x fp32, and torch.compile with
    frozen weights about 3x eager bf16 after a one-off compile of some 10-30 s. Features agree
    with fp32 eager to a cosine similarity above 0.99 (tests/test_backbone.py)."""
    model = torch.fx.experimental.optimization.fuse(model)  # eval-mode conv+BN folding
    model = model.to(memory_format=torch.channels_last)
    if precision == "bf16":
        model = model.to(torch.bfloat16)
    if compile:
        from torch._inductor import config as inductor_config

        inductor_config.freezing = True  # weights are constants: fold and pre-pack them
        model = torch.compile(model, dynamic=False)
    return model


def inference_backbone(cfg: dict) -> torch.nn.Module:
    """The backbone that cfg (the features params, or a model file's meta) describes, ready
    for embed(): built, folded, cast, and compiled if cfg says so."""
    model = build_backbone(cfg["backbone"], cfg["weights"], cfg["seed"])
    return prepare_for_inference(model, cfg["precision"], cfg.get("compile", False))


def feature_dim(name: str) -> int:
    return 512 if name in ("resnet18", "resnet34") else 2048


def resize_crop(frames: np.ndarray, resize: int, crop: int) -> torch.Tensor:
    """uint8 [T, H, W, 3] frames -> uint8 [T, 3, crop, crop]: shorter side to `resize`
    (antialiased bilinear, as PIL's Resize), then a centre crop. Stays uint8 so that
    workers hand small tensors to the main process."""
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    video = TF.resize(video, [resize], antialias=True)
    return TF.center_crop(video, [crop, crop])


def normalize(batch: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> float32 ImageNet-normalised, channels_last."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    batch = (batch.float() - mean) / std
    return batch.contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def embed(model: torch.nn.Module, batch: torch.Tensor, precision: str) -> torch.Tensor:
    """Features [N, D] float32 for a uint8 [N, 3, H, W] batch, through a model from
    prepare_for_inference (weights already in the precision)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    return model(normalize(batch).to(dtype)).float()
