"""The frozen image backbone: build it, preprocess frames for it, run it on a device."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import torch
import torch.fx.experimental.optimization
import torchvision
from torchvision.transforms.v2 import functional as TF

# torch.compile imports torch.utils.cpp_extension, which warns "No CUDA runtime is found" on
# every CPU-only run of a machine that has a CUDA toolkit: noise, not a problem
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def backbone_names() -> list[str]:
    """torchvision's image classification models (resnet50, efficientnet_b0, convnext_tiny, ...)."""
    return torchvision.models.list_models(module=torchvision.models)


def weight_names(name: str) -> list[str]:
    """The names of torchvision's pretrained weights for a model, e.g. IMAGENET1K_V2, DEFAULT."""
    return list(torchvision.models.get_model_weights(name).__members__)


def _classifier_to_identity(model: torch.nn.Module) -> int:
    """Replace the model's last Linear layer (its classifier) by Identity; return its input size,
    the feature dimension. Works for ResNet (fc), EfficientNet/MobileNet/ConvNeXt (classifier),
    ViT (heads) alike."""
    parent_name, child_name, last = "", "", None
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            parent_name, _, child_name = name.rpartition(".")
            last = module
    if last is None:
        raise ValueError("the backbone has no Linear classifier to remove")
    setattr(model.get_submodule(parent_name) if parent_name else model, child_name, torch.nn.Identity())
    return last.in_features


def weights_file(weights: str, name: str) -> Path | None:
    """The file that holds named or path weights (named: torchvision's TORCH_HOME cache)."""
    if weights == "none":
        return None
    if weights not in weight_names(name):
        return Path(weights)
    enum = torchvision.models.get_model_weights(name)[weights]
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name


def build_backbone(name: str, weights: str, seed: int = 0) -> torch.nn.Module:
    """A torchvision classification model without its classifier, in eval mode, frozen, on
    the CPU; its feature size is in model.feature_dim.

    weights: "none" (random, seeded: the offline demo), a torchvision weights name such as
    "IMAGENET1K_V2" (loaded from the TORCH_HOME cache, downloaded if online), or a path to a
    state-dict file.
    """
    torch.manual_seed(seed)
    if weights == "none":
        model = torchvision.models.get_model(name, weights=None)
    elif weights not in weight_names(name):
        model = torchvision.models.get_model(name, weights=None)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    else:
        try:
            model = torchvision.models.get_model(name, weights=weights)
        except OSError as error:  # no network and nothing in the cache
            cache = weights_file(weights, name)
            raise RuntimeError(
                f"cannot load {name} {weights} weights ({error.__class__.__name__}); put "
                f"{cache.name} at {cache} (or set TORCH_HOME), or use features.weights: none") from None
    dim = _classifier_to_identity(model)
    model.eval().requires_grad_(False)
    model.feature_dim = dim
    return model


def _compile_failed(error: Exception) -> None:
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
    print(f"warning: torch.compile is not available here ({type(error).__name__}: {first}); "
          "running eager (set features.compile: false to skip trying)", file=sys.stderr)


def prepare_for_inference(model: torch.nn.Module, precision: str, compile: bool | str,
                          device: torch.device = torch.device("cpu"),
                          example: torch.Tensor | None = None) -> torch.nn.Module:
    """Fold batch norms into convolutions, move to the device in channels_last, set the
    precision, and torch.compile if asked.

    CPU: the weights are cast to the precision (faster than autocast there). CUDA: weights
    stay fp32 and embed() runs under autocast. compile "auto" (or True) compiles with frozen
    weights and runs `example` once to build the kernels; when that fails (no C++ compiler,
    no Triton) it warns in one line and returns the eager model instead of crashing. Measured
    on 2 CPU cores (bench/extract.py): torch.compile with frozen weights about 3x eager bf16
    on a CPU with native bf16 (AMX)."""
    dim = model.feature_dim
    try:
        model = torch.fx.experimental.optimization.fuse(model)  # eval-mode conv+BN folding
    except Exception:  # a model fx cannot trace keeps its batch norms: slower, same result
        pass
    model = model.to(device, memory_format=torch.channels_last)
    if device.type == "cpu" and precision != "fp32":
        model = model.to(DTYPES[precision])
    model.inference_device = device  # embed() runs the example on it
    eager = model
    if compile:
        from torch._inductor import config as inductor_config

        inductor_config.freezing = True  # weights are constants: fold and pre-pack them
        model = torch.compile(model, dynamic=False)
        if example is not None:
            try:
                embed(model, example, precision)  # compiling happens here, at the first call
            except Exception as error:
                torch._dynamo.reset()
                _compile_failed(error)
                model = eager
    model.feature_dim, model.inference_device = dim, device
    return model


def inference_backbone(cfg: dict, device: torch.device = torch.device("cpu"),
                       batch_frames: int | None = None) -> torch.nn.Module:
    """The backbone that cfg (the features params, or a model file's meta, with a resolved
    precision) describes, ready for embed() on device: built, folded, cast, and compiled
    (warmed up on a batch of batch_frames frames) if cfg says so."""
    model = build_backbone(cfg["backbone"], cfg["weights"], cfg["seed"])
    compile = cfg.get("compile", False)
    example = None
    if compile and batch_frames:
        example = torch.zeros((batch_frames, 3, cfg["crop"], cfg["crop"]), dtype=torch.uint8, device=device)
    return prepare_for_inference(model, cfg["precision"], compile, device, example)


def resize_crop(frames: np.ndarray, resize: int, crop: int) -> torch.Tensor:
    """uint8 [T, H, W, 3] frames -> uint8 [T, 3, crop, crop]: shorter side to `resize`
    (antialiased bilinear, as PIL's Resize), then a centre crop. Stays uint8 so that
    workers hand small tensors to the main process (and to the GPU)."""
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    video = TF.resize(video, [resize], antialias=True)
    return TF.center_crop(video, [crop, crop])


def normalize(batch: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> float32 ImageNet-normalised, channels_last, on batch's device."""
    mean = torch.tensor(IMAGENET_MEAN, device=batch.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=batch.device).view(1, 3, 1, 1) * 255
    batch = (batch.float() - mean) / std
    return batch.contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def embed(model: torch.nn.Module, batch: torch.Tensor, precision: str) -> torch.Tensor:
    """Features [N, D] float32 on the CPU for a uint8 [N, 3, H, W] batch (on any device),
    through a model from prepare_for_inference on the model's device."""
    device = model.inference_device
    x = normalize(batch.to(device, non_blocking=True))
    if device.type == "cuda":
        with torch.autocast("cuda", dtype=DTYPES[precision], enabled=precision != "fp32"):
            out = model(x)
    else:
        out = model(x.to(DTYPES[precision]))
    return out.float().cpu()

