"""params.yaml, every key validated on every load (a pydantic model per section; no torch: subset and split run
without it), with one-line errors that say what to do. actionrec.backbone.check_features adds torchvision's,
actionrec.synthetic.clip_plan the demo's class count."""
import difflib
import functools
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr, ValidationError,
                      field_validator, model_validator)

from actionrec.errors import ParamsError

DECODERS = ("auto", "decord", "pyav", "torchcodec")  # runtime.decoder (actionrec/video.py decodes)
HEADS = {  # the heads actionrec.model builds, each with the train.* keys it reads (recorded in the model meta)
    "lstm": ("hidden_size", "num_layers", "bidirectional", "proj_dim"),
    "gru": ("hidden_size", "num_layers", "bidirectional", "proj_dim"),
    "transformer": ("proj_dim", "transformer_layers", "transformer_heads"),
    "mean": (),
}
WEIGHTS_DIR = Path("weights")  # a DVC dependency of features: weight files given by path live here


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic would read true as 1
        raise ValueError("a bool is not a number")
    return value


def _number(kind: type, low: float | None = None, high: float | None = None) -> Any:
    """YAML 1.1 reads 1e-4 as a string: pydantic converts it."""
    return Annotated[kind, BeforeValidator(_not_bool), Field(ge=low, le=high)]


_int, _float = functools.partial(_number, int), functools.partial(_number, float)


def _auto_or(kind: Any, description: str) -> Any:
    return Annotated[Literal["auto"] | kind, Field(description=description)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Data(_Section):
    source: Literal["synthetic", "ucf101", "folder"]
    root: Annotated[StrictStr, Field(min_length=1, description="a folder path")]
    allow_random_weights: StrictBool
    # missing, null and "" all mean: no pattern (each video its own group)
    group_pattern: Annotated[StrictStr, BeforeValidator(lambda v: "" if v is None else v),
                             Field(description='a regular expression (or "")')] = ""

    @field_validator("group_pattern")
    @classmethod
    def _has_a_group(cls, pattern: str) -> str:
        if pattern:
            try:
                compiled = re.compile(pattern)
            except re.error as error:
                raise ParamsError(f"params.yaml: data.group_pattern '{pattern}' is not a valid regular "
                                  f"expression ({error})") from None
            if "group" not in compiled.groupindex:
                raise ParamsError(f"params.yaml: data.group_pattern '{pattern}' has no named group (?P<group>...), "
                                  "e.g. (?P<group>[^_/]+)_ takes alice from alice_take1.mp4")
        return pattern


class Synthesize(_Section):
    num_classes: _int(2)  # at most the demo's classes: checked with them (load_params)
    groups_per_class: _int(3)
    clips_per_group: _int(1, 20)
    min_seconds: _float(0.2)
    max_seconds: _float(0.2, 60)
    fps: _int(1)
    # MPEG-4 in yuv420p halves both for colour
    width: Annotated[_int(32), Field(multiple_of=2, description="an even integer >= 32")]
    height: Annotated[_int(32), Field(multiple_of=2, description="an even integer >= 32")]
    seed: _int()

    @model_validator(mode="after")
    def _ordered(self):
        if self.max_seconds < self.min_seconds:
            raise ParamsError(f"params.yaml: synthesize.max_seconds must be between {self.min_seconds} and 60, "
                              f"got {self.max_seconds}")
        return self


class Subset(_Section):
    num_classes: _int(2)
    videos_per_class: _int(3)
    classes: Annotated[list[StrictStr], BeforeValidator(lambda v: [] if v is None else v),
                       Field(description="a list of class names (or [])")] = []
    seed: _int()

    @field_validator("classes")
    @classmethod
    def _distinct(cls, classes: list[str]) -> list[str]:
        if len(set(classes)) != len(classes):
            raise ParamsError("params.yaml: subset.classes lists a class twice")
        return classes


class Split(_Section):
    method: Literal["group", "official", "random"]
    fold: _int(1, 3)
    train: _float(0.0, 1.0)
    val: _float(0.0, 1.0)
    test: _float(0.0, 1.0)
    seed: _int()

    @model_validator(mode="after")
    def _fractions(self):
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ParamsError(f"params.yaml: split.train + split.val + split.test must sum to 1, got {total:g}")
        if min(self.train, self.val, self.test) <= 0:
            raise ParamsError("params.yaml: split.train, split.val and split.test must all be > 0")
        return self


class Features(_Section):
    num_frames: _int(1, 512)
    backbone: StrictStr  # torchvision's names and weights: checked with torchvision (_check_features)
    weights: Annotated[StrictStr, Field(min_length=1, description="none, a torchvision weights name of the "
                                                                  f"backbone or a file under {WEIGHTS_DIR}/")]
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8"]
    resize: _auto_or(_int(16), "auto or an integer >= 16")
    crop: _auto_or(_int(16), "auto or an integer >= 16")
    interpolation: Literal["auto", "bilinear", "bicubic", "nearest"]
    clip_frames: _auto_or(_int(1, 512), "auto or an integer between 1 and 512")
    seed: _int()


class Runtime(_Section):
    """Speed only: no key here changes a result, so no stage re-runs when one changes."""
    engine: Literal["local", "ray"]
    decoder: Literal[DECODERS]
    device: Annotated[StrictStr, Field(pattern=r"^(auto|cpu|cuda|cuda:\d+)$",
                                       description="auto, cpu, cuda or cuda:N")]
    compile: _auto_or(StrictBool, "auto, true or false")
    batch_frames: _auto_or(_int(1, 65536), "auto or an integer between 1 and 65536")
    num_workers: _auto_or(_int(0, 256), "auto or an integer between 0 and 256")
    threads: _int(0, 1024)
    train_threads: _int(0, 1024)
    max_failed_fraction: _float(0.0, 1.0)


class Train(_Section):
    head: Literal[tuple(HEADS)]
    proj_dim: _int(0)
    hidden_size: _int(1)
    num_layers: _int(1, 16)
    bidirectional: StrictBool
    transformer_layers: _int(1, 16)
    transformer_heads: _int(1, 64)
    dropout: _float(0.0, 0.99)
    temporal_centering: _auto_or(StrictBool, "auto, true or false")
    lr: _float(1e-8, 10.0)
    weight_decay: _float(0.0)
    batch_size: _int(1)
    max_epochs: _int(1)
    patience: _int(1)
    lr_factor: _float(0.01, 0.99)
    lr_patience: _int(0)
    seed: _int()

    @model_validator(mode="after")
    def _transformer_width(self):
        if self.head == "transformer":
            if self.proj_dim < 1:
                raise ParamsError("params.yaml: train.proj_dim must be >= 1 for train.head: transformer "
                                  "(it is the transformer's width)")
            if self.proj_dim % self.transformer_heads:
                raise ParamsError(f"params.yaml: train.proj_dim ({self.proj_dim}) must be a multiple of "
                                  f"train.transformer_heads ({self.transformer_heads})")
        return self


class Evaluate(_Section):
    baseline_c: _float(1e-6)


class Params(_Section):
    data: Data
    synthesize: Synthesize
    subset: Subset
    split: Split
    features: Features
    train: Train
    evaluate: Evaluate
    runtime: Runtime


SECTIONS = tuple(Params.model_fields)
MODELS: dict[str, type[_Section]] = {name: field.annotation for name, field in Params.model_fields.items()}
KEYS = {key: f"{section}.{key}" for section in reversed(SECTIONS) for key in MODELS[section].model_fields}


def _initials(name: str) -> str:
    return "".join(word[:1] for word in name.split("_"))


def _nearest(section: str, key: str | None) -> str | None:
    """The known key a misspelt one meant: the same key elsewhere, one it extends or spells out, the closest."""
    if key is None:  # an unknown section: a misspelt section, or a key put at the top level
        close = difflib.get_close_matches(section, SECTIONS, n=1)
        return close[0] if close else _nearest("", section)
    if key in KEYS:
        return KEYS[key]
    own = list(MODELS[section].model_fields) if section in MODELS else []
    related = [k for k in own if key.startswith(k + "_") or _initials(key) == k or _initials(k) == key]
    if related:
        return f"{section}.{max(related, key=len)}"
    close = difflib.get_close_matches(key, own, n=1)
    if close:
        return f"{section}.{close[0]}"
    close = difflib.get_close_matches(key, KEYS, n=1)
    return KEYS[close[0]] if close else None


def _unknown(section: str, key: str | None = None) -> str:
    guess = _nearest(section, key)
    hint = f"did you mean {guess}?" if guess else (
        f"the sections are {', '.join(SECTIONS)}" if key is None else
        f"the keys of {section} are {', '.join(MODELS[section].model_fields)}")
    return f"params.yaml: unknown {'section ' + section if key is None else f'key {section}.{key}'}: {hint}"


def _message(error: dict) -> str:
    """One pydantic error as the one line a user reads: the key, what it accepts, what it got."""
    loc, kind = error["loc"], error["type"]
    if kind == "value_error" and isinstance(error["ctx"]["error"], ParamsError):  # our own checks
        return str(error["ctx"]["error"])
    if kind == "extra_forbidden":
        return _unknown(*loc)
    if not loc:
        return "params.yaml must be a mapping of sections (data:, features:, ...)"
    if len(loc) == 1:
        return f"params.yaml: the section {loc[0]}: is " + ("missing" if kind == "missing" else
                                                           "not a mapping of keys")
    name, field = f"{loc[0]}.{loc[1]}", MODELS[loc[0]].model_fields[loc[1]]
    if kind == "missing":
        return f"params.yaml: {name} is missing"
    if field.description:
        accepts = field.description
    elif kind in ("greater_than_equal", "less_than_equal"):
        bound = {b: getattr(m, b) for m in field.metadata for b in ("ge", "le") if hasattr(m, b)}
        accepts = f">= {bound.get('ge')}" if "le" not in bound else f"between {bound.get('ge')} and {bound['le']}"
    elif get_origin(field.annotation) is Literal:
        accepts = f"one of {', '.join(map(str, get_args(field.annotation)))}"
    else:
        accepts = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[field.annotation]
    return f"params.yaml: {name} must be {accepts}, got {error['input']!r}"


def _validated(model: type[BaseModel], values: Any, section: str | None = None) -> dict:
    try:
        return model.model_validate(values).model_dump()
    except ValidationError as error:
        errors = sorted(error.errors(), key=lambda e: e["type"] != "extra_forbidden")  # typos first
        if section:  # one section validated alone: locations as in the whole file
            errors = [dict(e, loc=(section, *e["loc"])) for e in errors]
        raise ParamsError(_message(errors[0])) from None


def check_section(section: str, cfg: dict) -> dict:
    """A validated copy of one params section (values coerced, the schema only); raises ParamsError."""
    return _validated(MODELS[section], cfg, section)


def load_params(*sections: str, path: str | Path = "params.yaml") -> dict[str, dict[str, Any]]:
    """The named sections as plain dicts, values coerced; the whole file is checked. Raises ParamsError."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path} not found: run the stages from the repository root") from None
    except yaml.YAMLError as error:
        raise ParamsError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
    params = _validated(Params, raw)
    root, repo = Path(params["data"]["root"]), Path(path).resolve().parent
    if root.is_absolute() and root.resolve().is_relative_to(repo):  # dvc.lock records it: the same in every clone
        raise ParamsError(f"params.yaml: data.root {root} is an absolute path inside this repository: use the "
                          f"relative path {root.resolve().relative_to(repo).as_posix()} (dvc.lock records it, "
                          "and it must not differ per clone)")
    if "data" in sections and "features" in sections:
        check_backbone_fits_data(params["data"], params["features"])
    return {section: params[section] for section in sections}


def apply_overrides(params: dict, items: list[str], section: str) -> dict:
    """A benchmark's `-S KEY=VALUE` overrides, as dvc exp run -S: SECTION.KEY, or KEY of `section`."""
    for item in items:
        key, _, value = item.partition("=")
        where, _, name = key.rpartition(".")
        params[where or section][name] = yaml.safe_load(value)
    return params


def check_backbone_fits_data(data: dict, features: dict) -> None:
    """Random weights suit only the demo: on real videos a model on their features learns nothing, silently."""
    from actionrec.pipeline import paths

    if features["weights"] != "none" or data["allow_random_weights"]:
        return
    demo = paths("synthesize")["out"]
    if data["source"] != "synthetic":
        real = f"data.source is {data['source']}"
    elif Path(data["root"]) != Path(demo):
        real = f"data.root {data['root']} is not the demo's {demo} (real videos?)"
    else:
        return
    raise ParamsError(f"params.yaml: {real} but features.weights is none (a random backbone): set "
                      f"features.weights: DEFAULT (the backbone's torchvision weights, or a file under {WEIGHTS_DIR}/), or "
                      "data.allow_random_weights: true to do it on purpose")
