"""The frozen image backbone: build it, preprocess frames for it, run it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
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
    """Features [N, D] float32 for a uint8 [N, 3, H, W] batch."""
    x = normalize(batch)
    device = next(model.parameters()).device
    x = x.to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        return model(x).float()
