"""Load params.yaml once and validate every key, with one-line errors that say what to do."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from actionrec.video import DECODERS  # numpy only, no torch

# No torch here: subset and split load params without it. Checks that need torchvision
# (backbone and weights names) import it inside _check_features only.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
WEIGHTS_DIR = Path("weights")  # a DVC dependency of features: weight files given by path live here


class UserError(Exception):
    """Something the user can fix (bad params, missing data); the message says how."""


class ParamsError(UserError, ValueError):
    """A bad value in params.yaml; the message names the key and what is allowed."""


def run_stage(main) -> None:
    """Run a stage's main(): a user error ends it with one line on stderr and exit code 2."""
    import sys

    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def _number(cfg: dict, section: str, key: str, kind: type, low: float | None = None,
            high: float | None = None) -> None:
    """Coerce cfg[key] to kind (YAML reads 1e-4 as a string) and check its range."""
    name = f"{section}.{key}"
    if key not in cfg:
        raise ParamsError(f"params.yaml: {name} is missing")
    value = cfg[key]
    try:
        if isinstance(value, bool) or (kind is int and float(value) != int(float(value))):
            raise ValueError
        value = kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        raise ParamsError(f"params.yaml: {name} must be {'an integer' if kind is int else 'a number'}, "
                          f"got {cfg[key]!r}") from None
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise ParamsError(f"params.yaml: {name} must be {bounds}, got {value}")
    cfg[key] = value


def _flag(cfg: dict, section: str, key: str, auto: bool = False) -> None:
    if not (isinstance(cfg.get(key), bool) or (auto and cfg.get(key) == "auto")):
        raise ParamsError(f"params.yaml: {section}.{key} must be {'auto, ' if auto else ''}true or false, "
                          f"got {cfg.get(key)!r}")


def _count_or_auto(cfg: dict, section: str, key: str, low: int, high: int) -> None:
    if cfg.get(key) != "auto":
        try:
            _number(cfg, section, key, int, low, high)
        except ParamsError:
            raise ParamsError(f"params.yaml: {section}.{key} must be auto or an integer between "
                              f"{low} and {high}, got {cfg.get(key)!r}") from None


def _choice(cfg: dict, section: str, key: str, allowed: tuple) -> None:
    if cfg.get(key) not in allowed:
        raise ParamsError(f"params.yaml: {section}.{key} must be one of {', '.join(map(str, allowed))}, "
                          f"got {cfg.get(key)!r}")


def _check_data(cfg: dict) -> None:
    _choice(cfg, "data", "source", ("synthetic", "ucf101", "folder"))
    if not isinstance(cfg.get("root"), str) or not cfg["root"]:
        raise ParamsError("params.yaml: data.root must be a folder path")
    _check_group_pattern(cfg)


def _check_group_pattern(cfg: dict) -> None:
    """data.group_pattern (data.source: folder): empty, or a regex with a named group `group`."""
    pattern = cfg.get("group_pattern") or ""  # missing, null and "" all mean: no pattern
    if not isinstance(pattern, str):
        raise ParamsError(f"params.yaml: data.group_pattern must be a regular expression (or \"\"), "
                          f"got {pattern!r}")
    if pattern:
        try:
            compiled = re.compile(pattern)
        except re.error as error:
            raise ParamsError(f"params.yaml: data.group_pattern '{pattern}' is not a valid regular "
                              f"expression ({error})") from None
        if "group" not in compiled.groupindex:
            raise ParamsError(f"params.yaml: data.group_pattern '{pattern}' has no named group "
                              "(?P<group>...), e.g. (?P<group>[^_/]+)_ takes alice from alice_take1.mp4")
    cfg["group_pattern"] = pattern


def _check_synthesize(cfg: dict) -> None:
    from actionrec.synthetic import CLASS_NAMES

    _number(cfg, "synthesize", "num_classes", int, 2, len(CLASS_NAMES))
    _number(cfg, "synthesize", "groups_per_class", int, 3)
    _number(cfg, "synthesize", "clips_per_group", int, 1, 20)
    _number(cfg, "synthesize", "min_seconds", float, 0.2)
    _number(cfg, "synthesize", "max_seconds", float, cfg["min_seconds"], 60)
    for key in ("fps", "width", "height"):
        _number(cfg, "synthesize", key, int, 1 if key == "fps" else 32)
    _number(cfg, "synthesize", "seed", int)


def _check_subset(cfg: dict) -> None:
    _number(cfg, "subset", "num_classes", int, 2)
    _number(cfg, "subset", "videos_per_class", int, 3)
    classes = cfg.get("classes") or []
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ParamsError("params.yaml: subset.classes must be a list of class names (or [])")
    if len(set(classes)) != len(classes):
        raise ParamsError("params.yaml: subset.classes lists a class twice")
    cfg["classes"] = classes
    _number(cfg, "subset", "seed", int)


def _check_split(cfg: dict) -> None:
    _choice(cfg, "split", "method", ("group", "official", "random"))
    _number(cfg, "split", "fold", int, 1, 3)
    for key in ("train", "val", "test"):
        _number(cfg, "split", key, float, 0.0, 1.0)
    if abs(cfg["train"] + cfg["val"] + cfg["test"] - 1.0) > 1e-6:
        raise ParamsError("params.yaml: split.train + split.val + split.test must sum to 1, got "
                          f"{cfg['train'] + cfg['val'] + cfg['test']:g}")
    if min(cfg["train"], cfg["val"], cfg["test"]) <= 0:
        raise ParamsError("params.yaml: split.train, split.val and split.test must all be > 0")
    _number(cfg, "split", "seed", int)


def _check_weights(cfg: dict) -> None:
    """none, a torchvision weights name of the chosen backbone, or a file under weights/."""
    from actionrec.backbone import weight_names

    weights, names = cfg.get("weights"), weight_names(cfg["backbone"])
    allowed = f"none, {', '.join(names)} or a file under {WEIGHTS_DIR}/" if names else \
        f"none or a file under {WEIGHTS_DIR}/"
    if not isinstance(weights, str) or not weights:
        raise ParamsError(f"params.yaml: features.weights must be {allowed}")
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


def _check_device(cfg: dict) -> None:
    device = cfg.get("device")
    if not (device in ("auto", "cpu", "cuda") or
            (isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit())):
        raise ParamsError(f"params.yaml: features.device must be auto, cpu, cuda or cuda:N, got {device!r}")


def _check_features(cfg: dict) -> None:
    from actionrec.backbone import backbone_names

    _number(cfg, "features", "num_frames", int, 1, 512)
    if cfg.get("backbone") not in backbone_names():
        raise ParamsError(f"params.yaml: features.backbone must be a torchvision image classification "
                          f"model (e.g. resnet50, efficientnet_b0, convnext_tiny), got {cfg.get('backbone')!r}")
    _check_weights(cfg)
    _flag(cfg, "features", "allow_random_weights")
    _check_device(cfg)
    _choice(cfg, "features", "precision", PRECISIONS)
    _flag(cfg, "features", "compile", auto=True)
    _choice(cfg, "features", "decoder", DECODERS)
    _number(cfg, "features", "resize", int, 16)
    _number(cfg, "features", "crop", int, 16, cfg["resize"])
    _count_or_auto(cfg, "features", "batch_frames", 1, 65536)
    _count_or_auto(cfg, "features", "num_workers", 0, 256)
    _number(cfg, "features", "threads", int, 0, 1024)
    _number(cfg, "features", "max_failed_fraction", float, 0.0, 1.0)
    _number(cfg, "features", "seed", int)


TRAIN_HEADS = ("lstm", "gru", "transformer", "mean")  # = actionrec.model.HEADS (no torch import here)


def _check_train(cfg: dict) -> None:
    _choice(cfg, "train", "head", TRAIN_HEADS)
    _number(cfg, "train", "proj_dim", int, 0)
    _number(cfg, "train", "hidden_size", int, 1)
    _number(cfg, "train", "num_layers", int, 1, 16)
    _flag(cfg, "train", "bidirectional")
    _number(cfg, "train", "transformer_layers", int, 1, 16)
    _number(cfg, "train", "transformer_heads", int, 1, 64)
    if cfg["head"] == "transformer":
        if cfg["proj_dim"] < 1:
            raise ParamsError("params.yaml: train.proj_dim must be >= 1 for train.head: transformer "
                              "(it is the transformer's width)")
        if cfg["proj_dim"] % cfg["transformer_heads"]:
            raise ParamsError(f"params.yaml: train.proj_dim ({cfg['proj_dim']}) must be a multiple of "
                              f"train.transformer_heads ({cfg['transformer_heads']})")
    _number(cfg, "train", "dropout", float, 0.0, 0.99)
    _flag(cfg, "train", "temporal_centering", auto=True)
    _number(cfg, "train", "lr", float, 1e-8, 10.0)
    _number(cfg, "train", "weight_decay", float, 0.0)
    _number(cfg, "train", "batch_size", int, 1)
    _number(cfg, "train", "max_epochs", int, 1)
    _number(cfg, "train", "patience", int, 1)
    _number(cfg, "train", "lr_factor", float, 0.01, 0.99)
    _number(cfg, "train", "lr_patience", int, 0)
    _number(cfg, "train", "threads", int, 0, 1024)
    _number(cfg, "train", "seed", int)


def _check_evaluate(cfg: dict) -> None:
    _number(cfg, "evaluate", "baseline_c", float, 1e-6)


CHECKS = {"data": _check_data, "synthesize": _check_synthesize, "subset": _check_subset,
          "split": _check_split, "features": _check_features, "train": _check_train,
          "evaluate": _check_evaluate}


def check_section(section: str, cfg: dict) -> dict:
    """A validated copy of one params section (values coerced); raises ParamsError."""
    cfg = dict(cfg)
    CHECKS[section](cfg)
    return cfg


def load_params(*sections: str, path: str | Path = "params.yaml") -> dict[str, dict[str, Any]]:
    """The named sections of params.yaml, each validated; raises ParamsError on a bad value."""
    try:
        params = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise ParamsError(f"{path} not found: run the stages from the repository root") from None
    except yaml.YAMLError as error:
        raise ParamsError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
    out = {}
    for section in sections:
        if not isinstance(params.get(section), dict):
            raise ParamsError(f"params.yaml: the section {section}: is missing")
        out[section] = check_section(section, params[section])
    if "data" in out and "features" in out:
        check_backbone_fits_data(out["data"], out["features"])
    return out


def check_backbone_fits_data(data: dict, features: dict) -> None:
    """Random backbone weights suit only the synthetic demo: on real videos they would make
    near-identical features and a model that learns nothing, silently."""
    if data["source"] != "synthetic" and features["weights"] == "none" and not features["allow_random_weights"]:
        raise ParamsError(f"params.yaml: data.source is {data['source']} but features.weights is none "
                          "(a random backbone): set features.weights: IMAGENET1K_V2 (or DEFAULT, or a file "
                          "under weights/), or features.allow_random_weights: true to do it on purpose")
