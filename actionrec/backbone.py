"""The frozen backbone: check it, build it, preprocess its inputs, run it on a device. An image model's input item
is a frame [3, crop, crop]; a video model's (torchvision.models.video) is a clip [clip_frames, 3, crop, crop]."""
from __future__ import annotations

import functools
import logging
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.fx.experimental.optimization
import torchvision
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from actionrec.errors import ParamsError, UserError
from actionrec.params import WEIGHTS_DIR

# torch.compile imports torch.utils.cpp_extension, which warns "No CUDA runtime is found" on any CPU-only run
logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

# without named torchvision weights (none, or a file), and for model files older than these keys
DEFAULT_PREPROCESSING = {"resize": 256, "crop": 224, "interpolation": "bilinear",
                         "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}  # ImageNet's
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
          "int8": torch.float32}  # int8: OpenVINO's quantized model takes float32 frames (quantize.py)
CLIP_FRAMES = 16  # auto: what r3d/r2plus1d/mvit were evaluated on and all nine video models' costs are quoted at
LOST_PRECISION = 0.1  # features refused where float16 stores more than this share of them as zeros or subnormals


def weight_names(name: str) -> list[str]:
    """torchvision's names of a model's pretrained weights, e.g. IMAGENET1K_V2, DEFAULT."""
    return list(torchvision.models.get_model_weights(name).__members__)


def _weights_enum(name: str, weights: str):
    """The torchvision weights `weights` names, or whose file it is (e.g. weights/resnet50-11ad3fa6.pth)."""
    members = torchvision.models.get_model_weights(name)
    if weights in members.__members__:
        return members[weights]
    return next((member for member in members if Path(member.url).name == Path(weights).name), None)


def is_video(name: str) -> bool:
    return name in torchvision.models.list_models(module=torchvision.models.video)


def preprocessing(cfg: dict) -> dict:
    """{resize, crop, interpolation, mean, std}, and for a video model {antialias, clip_frames, clip_fps}: `auto`
    takes the named weights' own transforms, else the defaults (a video model's: its DEFAULT weights', so the size
    it was built for); a model file's meta holds the dict (an older one, without interpolation, had the defaults).
    resize is the shorter side, or [height, width] exactly as some video weights were trained (r3d_18: [128, 171])."""
    if "preprocessing" in cfg:
        return dict(cfg["preprocessing"])
    if "interpolation" not in cfg:
        return {**DEFAULT_PREPROCESSING, "resize": cfg["resize"], "crop": cfg["crop"]}
    video = is_video(cfg["backbone"])
    preset, enum = dict(DEFAULT_PREPROCESSING), _weights_enum(cfg["backbone"], cfg["weights"])
    if video and enum is None:
        enum = torchvision.models.get_model_weights(cfg["backbone"]).DEFAULT
    if enum is not None:
        own = enum.transforms()
        size = own.resize_size
        preset = {"resize": size[0] if len(size) == 1 else list(size), "crop": own.crop_size[0],
                  "interpolation": own.interpolation.value, "mean": list(own.mean), "std": list(own.std)}
    keys = ("resize", "crop", "interpolation")
    if video:  # torchvision's video transforms resize without antialiasing; the clip's frame rate is the training one
        rate = re.search(r"frame_rate=([\d.]+)", enum.meta["_docs"])
        preset |= {"antialias": False, "clip_frames": CLIP_FRAMES, "clip_fps": float(rate.group(1))}
        keys += ("clip_frames",)
    return {**preset, **{key: cfg[key] for key in keys if cfg.get(key, "auto") != "auto"}}


def item_shape(prep: dict) -> tuple[int, ...]:
    """The uint8 shape of one backbone input item: a frame [3, crop, crop] or a clip [clip_frames, 3, crop, crop]."""
    return (*([prep["clip_frames"]] if "clip_frames" in prep else []), 3, prep["crop"], prep["crop"])


def video_frames(num_frames: int, prep: dict) -> int:
    """Frames decoded and run a video: num_frames frames, or num_frames clips of clip_frames (a video model)."""
    return num_frames * prep.get("clip_frames", 1)


def batch_items(batch_frames: int, prep: dict) -> int:
    """runtime.batch_frames counts frames a backbone pass: so many clips of a video model."""
    return max(1, batch_frames // prep.get("clip_frames", 1))


def _classifier_to_identity(model: torch.nn.Module) -> int:
    """Replace the last Linear layer (ResNet fc, ConvNeXt classifier, ViT and Swin3D heads), or s3d's 1x1x1 Conv3d
    classifier, by Identity; its input size."""
    linears = [(name, module) for name, module in model.named_modules()
               if isinstance(module, (torch.nn.Linear, torch.nn.Conv3d))]
    if not linears:
        raise ValueError("the backbone has no Linear classifier to remove")
    model.set_submodule(linears[-1][0], torch.nn.Identity())
    return getattr(linears[-1][1], "in_features", None) or linears[-1][1].in_channels


def _on_meta(name: str, **size) -> torch.nn.Module:
    try:
        with torch.device("meta"):
            return torchvision.models.get_model(name, weights=None, **size)
    except NotImplementedError:  # regnet computes its layer widths from tensor values: build, then drop
        return torchvision.models.get_model(name, weights=None, **size).to("meta")


def _architecture(name: str, weights: str) -> torch.nn.Module:
    """On the meta device; ViT and MaxViT take their fixed input size from the weights (ViT SWAG_E2E: 384)."""
    enum = _weights_enum(name, weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # googlenet and inception warn about their initialisation
        if enum is not None and "min_size" in enum.meta:
            for size in ({"image_size": enum.meta["min_size"][0]}, {"input_size": enum.meta["min_size"]}):
                try:
                    return _on_meta(name, **size)
                except TypeError:  # not an argument of this model
                    pass
        return _on_meta(name)


@functools.cache
def check_backbone(name: str, crop: int, weights: str = "none", clip_frames: int = 0) -> int:
    """The feature size on crop x crop frames (or clips of clip_frames of them), or a ParamsError; on the meta
    device: shapes only (0.1-0.6 s). The model itself says what it cannot take (s3d: 13 frames, 209 px at least)."""
    model = _architecture(name, weights)
    others = "use e.g. resnet50, efficientnet_b0 or convnext_tiny (docs/params.md lists what works)"
    try:
        dim = _classifier_to_identity(model)
    except ValueError:
        raise ParamsError(f"params.yaml: features.backbone {name} has no Linear classifier whose input could "
                          f"serve as frame features: {others}") from None
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros((1, 3, *[clip_frames] * bool(clip_frames), crop, crop), device="meta"))
    except Exception as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:120]
        if clip_frames:
            raise ParamsError(f"params.yaml: features.backbone {name} cannot take clips of {clip_frames} frames of "
                              f"{crop}x{crop} ({reason}): set features.clip_frames and features.crop to auto (its "
                              "weights' own)") from None
        raise ParamsError(f"params.yaml: features.backbone {name} cannot take {crop}x{crop} crops ({reason}): set "
                          "features.crop to its input size (auto: that of its weights), or " + others) from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, dim):
        raise ParamsError(f"params.yaml: features.backbone {name} does not end in its last Linear layer, so "
                          f"its features cannot be taken there: {others}")
    return dim


def _check_weights(cfg: dict) -> None:
    weights, names = cfg["weights"], weight_names(cfg["backbone"])
    allowed = ", ".join(["none", *names]) + f" or a file under {WEIGHTS_DIR}/"
    if weights == "none" or weights in names:
        return
    path = Path(weights)
    if path.suffix not in (".pt", ".pth", ".bin", ".safetensors") and "/" not in weights:
        raise ParamsError(f"params.yaml: features.weights {weights!r} is not a weights name of "
                          f"{cfg['backbone']}: use {allowed}")
    if not path.is_file():
        raise ParamsError(f"params.yaml: features.weights file {weights} not found: use {allowed}")
    if WEIGHTS_DIR.resolve() not in path.resolve().parents:
        raise ParamsError(f"params.yaml: features.weights {weights} must lie under {WEIGHTS_DIR}/ "
                          "(a DVC dependency of features, so a replaced file re-extracts): move it there")
    if path.is_absolute():  # dvc.lock records it
        raise ParamsError(f"params.yaml: features.weights {weights} is an absolute path: use the relative path "
                          f"{path.resolve().relative_to(WEIGHTS_DIR.resolve().parent).as_posix()}")


def check_features(cfg: dict) -> None:
    """What torchvision says of the (schema-checked) features params: backbone, weights, crop and resize."""
    video = is_video(cfg["backbone"])
    if not video and cfg["backbone"] not in torchvision.models.list_models(module=torchvision.models):
        raise ParamsError(f"params.yaml: features.backbone must be a torchvision image or video classification "
                          f"model (e.g. resnet50, efficientnet_b0, r2plus1d_18, s3d, swin3d_t), got {cfg['backbone']!r}")
    if not video and cfg.get("clip_frames", "auto") != "auto":
        raise ParamsError(f"params.yaml: features.clip_frames applies to video backbones (torchvision.models.video: "
                          f"{', '.join(torchvision.models.list_models(module=torchvision.models.video))}); "
                          f"{cfg['backbone']} is an image model: set features.clip_frames: auto")
    _check_weights(cfg)
    resolved = preprocessing(cfg)
    if resolved["crop"] > min(resolved["resize"] if isinstance(resolved["resize"], list) else [resolved["resize"]]):
        said = {key: f"auto: {resolved[key]}" if cfg[key] == "auto" else resolved[key] for key in ("crop", "resize")}
        raise ParamsError(f"params.yaml: features.crop ({said['crop']}) must be <= features.resize "
                          f"({said['resize']}): set both, or both auto")
    check_backbone(cfg["backbone"], resolved["crop"], cfg["weights"], resolved.get("clip_frames", 0))


def weights_file(weights: str, name: str) -> Path | None:
    """The file that holds named or path weights (named: torchvision's TORCH_HOME cache)."""
    if weights == "none":
        return None
    if weights not in weight_names(name):
        return Path(weights)
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(_weights_enum(name, weights).url).name


def build_backbone(name: str, weights: str, seed: int = 0) -> torch.nn.Module:
    """Frozen, eval mode, on the CPU, without its classifier; weights none are random, seeded: the offline demo."""
    torch.manual_seed(seed)
    if weights in weight_names(name):
        try:
            model = torchvision.models.get_model(name, weights=weights)
        except OSError as error:  # no network and nothing in the cache
            file = weights_file(weights, name)
            raise UserError(
                f"cannot download the {name} {weights} weights ({type(error).__name__}: no network?): put "
                f"{file.name} into {file.parent}/ ($TORCH_HOME/hub/checkpoints), or into {WEIGHTS_DIR}/ "
                f"and set features.weights: {WEIGHTS_DIR.as_posix()}/{file.name}") from None
    else:
        model = torchvision.models.get_model(name, weights=None)
        if weights != "none":
            state = torch.load(weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    model.feature_dim = _classifier_to_identity(model)
    model.eval().requires_grad_(False)
    if weights == "none":
        _normalise_random(model, name, seed)
    return model


def degradation(feats: np.ndarray) -> str:
    """"" when float16, the dtype features are stored in, holds float32 features; else what it loses."""
    magnitude = np.abs(feats)
    if not np.isfinite(feats).all():
        return "are not finite (NaN or infinity)"
    if magnitude.max() > np.finfo(np.float16).max:
        return f"reach {magnitude.max():.3g}, beyond float16's largest value (65504)"
    nonzero = magnitude[magnitude > 0]
    lost = np.mean(nonzero < np.finfo(np.float16).smallest_normal) if nonzero.size else 1.0
    if lost > LOST_PRECISION:
        return (f"are of order {np.median(nonzero) if nonzero.size else 0:.1g}: float16 (as stored) makes {lost:.0%} of them "
                "zeros or subnormals")
    return ""


def _normalise_random(model: torch.nn.Module, name: str, seed: int) -> None:
    """Random weights whose features float16 would not hold (SiLU and hard-swish nets shrink each block's output:
    efficientnet_b0's were 1e-13, mobilenet_v3_large's 1e-9, s3d's 6e-8): each batch norm takes the statistics of its
    input on the committed calibration clips, as a trained one normalises (on seeded noise instead, the demo's test
    accuracy with efficientnet_b0 was 0.39, not 0.76). Where seeded noise shows no loss (resnet, convnext), none."""
    prep = preprocessing({"backbone": name, "weights": "none", **dict.fromkeys(("resize", "crop", "interpolation"), "auto")})
    with torch.no_grad():
        noise = torch.randn((2, *item_shape(prep)), generator=torch.Generator().manual_seed(seed))
        if not degradation(model(noise.transpose(1, 2) if noise.dim() == 5 else noise).numpy()):
            return
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for norm in norms:  # train mode for these alone: dropout and stochastic depth stay off
            norm.reset_running_stats()
            norm.momentum = None  # a cumulative average: this one batch's statistics
            norm.train()
        model(normalize(calibration_inputs(prep), prep))
        for norm in norms:
            norm.momentum = 0.1
            norm.eval()


def prepare_for_inference(model: torch.nn.Module, precision: str, compile: bool | str,
                          device: torch.device = torch.device("cpu"),
                          example: torch.Tensor | None = None, prep: dict | None = None) -> torch.nn.Module:
    """Fold batch norms, channels_last, cast on the CPU (faster than autocast there; CUDA autocasts), compile
    if asked (frozen: about 3x eager, bench/extract.py); where compiling fails, a warning and the eager model."""
    dim = model.feature_dim
    try:
        model = torch.fx.experimental.optimization.fuse(model)  # eval-mode conv+BN folding
    except Exception:  # a model fx cannot trace keeps its batch norms: slower, same result
        pass
    model = model.to(device, memory_format=torch.channels_last_3d if "clip_frames" in (prep or {}) else torch.channels_last)
    if device.type == "cuda" and precision == "fp32":
        # cuDNN defaults to TF32 on Ampere and later: GPU features must agree with a CPU's (make verify)
        torch.backends.cudnn.conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
    if device.type == "cpu" and precision != "fp32":
        model = model.to(DTYPES[precision])
        for pool in (m for m in model.modules() if isinstance(m, torch.nn.AvgPool3d)):  # s3d's: no bf16/fp16 CPU kernel
            pool.register_forward_pre_hook(lambda _, args: (args[0].float(),))
            pool.register_forward_hook(lambda _, args, out: out.to(DTYPES[precision]))
    # embed() reads these; a compiled model reads them from the model it wraps
    model.feature_dim, model.inference_device, model.preprocessing = dim, device, prep or DEFAULT_PREPROCESSING
    if not compile:
        return model
    from torch._inductor import config as inductor_config

    inductor_config.freezing = True  # weights are constants: fold and pre-pack them
    compiled = torch.compile(model, dynamic=False)
    if example is not None:
        try:
            embed(compiled, example, precision)  # compiling happens here, at the first call
        except Exception as error:
            torch._dynamo.reset()
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
            print(f"warning: torch.compile is not available here ({type(error).__name__}: {first}); "
                  "running eager (set runtime.compile: false to skip trying)", file=sys.stderr)
            return model
    return compiled


def inference_backbone(cfg: dict, device: torch.device = torch.device("cpu"),
                       batch_frames: int | None = None) -> torch.nn.Module:
    """The backbone of cfg (features params or a model file's meta, precision resolved), ready for embed()."""
    model = build_backbone(cfg["backbone"], cfg["weights"], cfg["seed"])
    prep = preprocessing(cfg)
    if cfg["precision"] == "int8":  # CPU only (actionrec.device), compiled by OpenVINO
        from actionrec.quantize import quantize

        return quantize(model, normalize(calibration_inputs(prep), prep).contiguous(), prep)
    compile = cfg.get("compile", False)
    shape = (batch_items(batch_frames, prep), *item_shape(prep)) if batch_frames else None
    example = torch.zeros(shape, dtype=torch.uint8, device=device) if compile and batch_frames else None
    return prepare_for_inference(model, cfg["precision"], compile, device, example, prep)


def clip_inputs(path, num_frames: int, prep: dict, decoder: str = "auto", start: float | None = None,
                end: float | None = None, device: str = "cpu"):
    """(the decoded Clip, its num_frames uint8 inputs: frames, or clips of a video model), as every caller makes them."""
    from actionrec.video import sample_clip

    clip = sample_clip(path, num_frames, decoder, start, end, device, prep.get("clip_frames", 1), prep.get("clip_fps"))
    return clip, resize_crop(clip.frames, prep)


def calibration_inputs(prep: dict) -> torch.Tensor:
    """uint8 inputs of the committed calibration files (actionrec/quantize.py), as the features stage makes them."""
    from actionrec.quantize import CALIBRATION_CLIPS, CALIBRATION_FRAMES, calibration_files

    count = CALIBRATION_CLIPS if "clip_frames" in prep else CALIBRATION_FRAMES
    return torch.cat([clip_inputs(path, count, prep)[1] for path in calibration_files()])


def resize_crop(frames: np.ndarray, prep: dict) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> items (item_shape), as the weights' transforms resize (antialiased for image models);
    uint8: small to hand on. A video model's T frames are T / clip_frames consecutive clips."""
    video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
    size = prep["resize"] if isinstance(prep["resize"], list) else [prep["resize"]]
    video = TF.resize(video, size, InterpolationMode(prep["interpolation"]), antialias=prep.get("antialias", True))
    return TF.center_crop(video, [prep["crop"], prep["crop"]]).unflatten(0, (-1, *item_shape(prep)[:-3]))


def normalize(batch: torch.Tensor, prep: dict) -> torch.Tensor:
    """uint8 items [N, ...] -> float32 normalised by prep's mean and std, on batch's device, in the model's layout:
    frames [N, 3, H, W] channels_last, clips [N, 3, T, H, W] channels_last_3d."""
    mean = torch.tensor(prep["mean"], device=batch.device).view(3, 1, 1) * 255
    std = torch.tensor(prep["std"], device=batch.device).view(3, 1, 1) * 255
    x = (batch.float() - mean) / std
    if x.dim() == 5:
        return x.transpose(1, 2).contiguous(memory_format=torch.channels_last_3d)
    return x.contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def embed(model: torch.nn.Module, batch: torch.Tensor, precision: str) -> torch.Tensor:
    """float32 features [N, D] on the CPU of a uint8 batch of N items, by a prepare_for_inference model."""
    device = model.inference_device
    x = normalize(batch.to(device, non_blocking=True), model.preprocessing)
    if device.type == "cuda":
        with torch.autocast("cuda", dtype=DTYPES[precision], enabled=precision != "fp32"):
            return model(x).float().cpu()
    return model(x.to(DTYPES[precision])).float().cpu()

