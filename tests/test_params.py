from pathlib import Path

import pytest
import yaml

from actionrec.params import ParamsError, load_params

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = yaml.safe_load((ROOT / "params.yaml").read_text())
SECTIONS = ("data", "synthesize", "subset", "split", "features", "train", "evaluate")


def write(tmp_path, section, key, value):
    params = {name: dict(cfg) for name, cfg in DEFAULTS.items()}
    params[section][key] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_committed_params_are_valid_and_match_the_contract():
    params = load_params(*SECTIONS, path=ROOT / "params.yaml")
    assert params["subset"]["num_classes"] == 25 and params["subset"]["videos_per_class"] == 200
    assert params["features"]["num_frames"] == 16 and params["features"]["backbone"] == "resnet50"
    assert (params["split"]["train"], params["split"]["val"], params["split"]["test"]) == (0.8, 0.1, 0.1)
    assert params["data"]["source"] == "synthetic" and params["features"]["weights"] == "none"


def test_numbers_written_by_dvc_exp_are_read_as_numbers(tmp_path):
    path = write(tmp_path, "train", "lr", "1e-4")  # YAML 1.1 reads 1e-4 as a string
    assert load_params("train", path=path)["train"]["lr"] == pytest.approx(1e-4)


@pytest.mark.parametrize("section,key,value,message", [
    ("subset", "num_classes", 0, "subset.num_classes must be"),
    ("split", "train", 0.9, "must sum to 1"),
    ("split", "method", "shuffle", "split.method must be one of group, official, random"),
    ("features", "backbone", "vgg16", "features.backbone must be one of"),
    ("features", "weights", "IMAGENET9K", "features.weights"),
    ("features", "num_frames", 0, "features.num_frames must be"),
    ("features", "precision", "fp8", "features.precision must be one of fp32, bf16"),
    ("train", "lr", "fast", "train.lr must be a number"),
    ("train", "bidirectional", "yes", "train.bidirectional must be true or false"),
    ("data", "source", "kinetics", "data.source must be one of"),
    ("train", "head", "tcn", "train.head must be one of lstm, gru, transformer, mean"),
    ("train", "proj_dim", -1, "train.proj_dim must be >= 0"),
    ("train", "transformer_heads", 0, "train.transformer_heads must be between 1 and 64"),
])
def test_bad_values_name_the_key_and_the_allowed_values(tmp_path, section, key, value, message):
    with pytest.raises(ParamsError, match=message):
        load_params(section, path=write(tmp_path, section, key, value))
    assert "\n" not in str(pytest.raises(ParamsError, load_params, section,
                                         path=write(tmp_path, section, key, value)).value)


@pytest.mark.parametrize("changes,message", [
    ({"head": "transformer", "proj_dim": 0}, "train.proj_dim must be >= 1 for train.head: transformer"),
    ({"head": "transformer", "proj_dim": 100, "transformer_heads": 8},
     r"train.proj_dim \(100\) must be a multiple of train.transformer_heads \(8\)"),
])
def test_transformer_width_is_checked(tmp_path, changes, message):
    params = {name: dict(cfg) for name, cfg in DEFAULTS.items()}
    params["train"].update(changes)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match=message):
        load_params("train", path=path)


def test_lstm_head_ignores_transformer_width(tmp_path):
    path = write(tmp_path, "train", "proj_dim", 0)  # no projection: fine for lstm, gru and mean
    assert load_params("train", path=path)["train"]["proj_dim"] == 0
