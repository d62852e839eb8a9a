import subprocess
import sys
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
    ("features", "backbone", "resnet9000", "features.backbone must be a torchvision image classification model"),
    ("features", "weights", "IMAGENET9K", "features.weights 'IMAGENET9K' is not a weights name of resnet50: "
                                          "use none, IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT or a file under weights/"),
    ("features", "weights", "elsewhere/r50.pth", "features.weights file elsewhere/r50.pth not found"),
    ("features", "num_frames", 0, "features.num_frames must be"),
    ("features", "precision", "fp8", "features.precision must be one of auto, fp32, bf16, fp16"),
    ("features", "device", "tpu", "features.device must be auto, cpu, cuda or cuda:N"),
    ("features", "compile", "yes", "features.compile must be auto, true or false"),
    ("features", "decoder", "opencv", "features.decoder must be one of auto, decord, pyav, torchcodec"),
    ("features", "num_workers", -1, "features.num_workers must be auto or an integer"),
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


def test_weights_are_checked_against_the_chosen_backbones_enum(tmp_path):
    path = write(tmp_path, "features", "backbone", "efficientnet_b0")
    params = yaml.safe_load(path.read_text())
    params["features"]["weights"] = "IMAGENET1K_V2"  # a ResNet50 name, not efficientnet_b0's
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match="use none, IMAGENET1K_V1, DEFAULT or a file under weights/"):
        load_params("features", path=path)


def test_a_weights_file_must_lie_under_the_weights_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights/r50.pth").write_bytes(b"x")
    (tmp_path / "r50.pth").write_bytes(b"x")
    assert load_params("features", path=write(tmp_path, "features", "weights", "weights/r50.pth"))
    with pytest.raises(ParamsError, match="must lie under weights/"):
        load_params("features", path=write(tmp_path, "features", "weights", "r50.pth"))


def test_random_weights_on_real_data_are_refused_unless_asked_for(tmp_path):
    params = {name: dict(cfg) for name, cfg in DEFAULTS.items()}
    params["data"]["source"] = "ucf101"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match="set features.weights: IMAGENET1K_V2 .* or features.allow_random_weights: true"):
        load_params("data", "features", path=path)
    params["features"]["allow_random_weights"] = True
    path.write_text(yaml.safe_dump(params))
    assert load_params("data", "features", path=path)["features"]["weights"] == "none"


def test_params_loading_does_not_import_torch():
    """subset and split run without torch: params.py must not pull it in."""
    code = ("import sys; from actionrec.params import load_params; "
            "load_params('data', 'subset', 'split', path=sys.argv[1]); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "params.yaml")], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "False"

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
