import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from actionrec.errors import ParamsError
from actionrec.backbone import check_features
from actionrec.params import load_params

from tests.conftest import committed, committed_params, stage_argv

DEFAULTS = committed_params()  # as committed: an experiment applied to the workspace is not the contract
SECTIONS = ("data", "synthesize", "subset", "split", "features", "train", "evaluate", "runtime")


def load_checked(*sections, path):
    """load_params, plus what torchvision says of the features (as every stage that reads them does)."""
    params = load_params(*sections, path=path)
    if "features" in params:
        check_features(params["features"])
    return params


def write(tmp_path, section, key, value):
    params = {name: dict(cfg) for name, cfg in DEFAULTS.items()}
    params[section][key] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_committed_params_are_valid_and_match_the_contract(tmp_path):
    (tmp_path / "params.yaml").write_bytes(committed("params.yaml"))
    params = load_params(*SECTIONS, path=tmp_path / "params.yaml")
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
    ("features", "backbone", "resnet9000", "features.backbone must be a torchvision image or video classification model"),
    ("features", "weights", "IMAGENET9K", "features.weights 'IMAGENET9K' is not a weights name of resnet50: "
                                          "use none, IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT or a file under weights/"),
    ("features", "weights", "elsewhere/r50.pth", "features.weights file elsewhere/r50.pth not found"),
    ("features", "num_frames", 0, "features.num_frames must be"),
    ("features", "precision", "fp8", "features.precision must be one of auto, fp32, bf16, fp16"),
    ("runtime", "device", "tpu", "runtime.device must be auto, cpu, cuda or cuda:N"),
    ("runtime", "compile", "yes", "runtime.compile must be auto, true or false"),
    ("runtime", "decoder", "opencv", "runtime.decoder must be one of auto, decord, pyav, torchcodec"),
    ("runtime", "num_workers", -1, "runtime.num_workers must be auto or an integer"),
    ("train", "lr", "fast", "train.lr must be a number"),
    ("train", "bidirectional", "yes", "train.bidirectional must be true or false"),
    ("data", "source", "kinetics", "data.source must be one of"),
    ("train", "head", "tcn", "train.head must be one of lstm, gru, transformer, mean"),
    ("train", "proj_dim", -1, "train.proj_dim must be >= 0"),
    ("train", "transformer_heads", 0, "train.transformer_heads must be between 1 and 64"),
])
def test_bad_values_name_the_key_and_the_allowed_values(tmp_path, section, key, value, message):
    with pytest.raises(ParamsError, match=message) as error:
        load_checked(section, path=write(tmp_path, section, key, value))
    assert "\n" not in str(error.value)


def test_weights_are_checked_against_the_chosen_backbones_enum(tmp_path):
    path = write(tmp_path, "features", "backbone", "efficientnet_b0")
    params = yaml.safe_load(path.read_text())
    params["features"]["weights"] = "IMAGENET1K_V2"  # a ResNet50 name, not efficientnet_b0's
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match="use none, IMAGENET1K_V1, DEFAULT or a file under weights/"):
        load_checked("features", path=path)


def test_a_weights_file_must_lie_under_the_weights_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights/r50.pth").write_bytes(b"x")
    (tmp_path / "r50.pth").write_bytes(b"x")
    assert load_checked("features", path=write(tmp_path, "features", "weights", "weights/r50.pth"))
    with pytest.raises(ParamsError, match="must lie under weights/"):
        load_checked("features", path=write(tmp_path, "features", "weights", "r50.pth"))


def test_random_weights_on_real_data_are_refused_unless_asked_for(tmp_path):
    params = {name: dict(cfg) for name, cfg in DEFAULTS.items()}
    params["data"]["source"] = "ucf101"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match="set features.weights: DEFAULT .* or data.allow_random_weights: true"):
        load_params("data", "features", path=path)
    params["data"]["allow_random_weights"] = True
    path.write_text(yaml.safe_dump(params))
    assert load_params("data", "features", path=path)["features"]["weights"] == "none"


def test_params_loading_does_not_import_torch(tmp_path):
    """subset and split run without torch: params.py must not pull it in."""
    code = ("import sys; from actionrec.params import load_params; "
            "load_params('data', 'subset', 'split', path=sys.argv[1]); print('torch' in sys.modules)")
    (tmp_path / "params.yaml").write_bytes(committed("params.yaml"))
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "params.yaml")], capture_output=True,
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


@pytest.mark.parametrize("section,key,guess", [
    ("train", "lr_typo", "train.lr"),             # a typo'd key
    ("train", "learning_rate", "train.lr"),       # the long name of a short key
    ("train", "hidden_sise", "train.hidden_size"),
    ("train", "device", "runtime.device"),        # a key of another section
    ("features", "num_frame", "features.num_frames"),
    ("evaluate", "batchsize", "train.batch_size"),     # close to a key of another section
])
def test_an_unknown_key_anywhere_is_refused_with_the_nearest_known_key(tmp_path, section, key, guess):
    path = write(tmp_path, section, key, 1)
    with pytest.raises(ParamsError) as error:
        load_params("data", path=path)  # whatever section is asked for: the whole file is checked
    assert str(error.value) == f"params.yaml: unknown key {section}.{key}: did you mean {guess}?"


def test_an_unknown_section_is_refused_with_the_nearest_known_one(tmp_path):
    params = {name: dict(cfg) for name, cfg in DEFAULTS.items()}
    params["trian"] = params.pop("train")
    params["lr"] = 0.1  # a key put at the top level
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match="unknown section (trian: did you mean train|lr: did you mean train.lr)\\?"):
        load_params("data", path=path)
    del params["lr"]
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match="^params.yaml: unknown section trian: did you mean train\\?$"):
        load_params("subset", path=path)


def test_yes_and_numbers_as_strings(tmp_path):
    with pytest.raises(ParamsError, match="train.lr must be a number, got True"):
        load_params("train", path=write(tmp_path, "train", "lr", True))  # true is not 1
    assert load_params("train", path=write(tmp_path, "train", "max_epochs", "12"))["train"]["max_epochs"] == 12
    with pytest.raises(ParamsError, match="train.max_epochs must be an integer, got 2.5"):
        load_params("train", path=write(tmp_path, "train", "max_epochs", 2.5))


def test_an_absolute_data_root_inside_the_repository_is_refused(tmp_path, tmp_path_factory):
    inside = tmp_path / "videos" / "mine"
    with pytest.raises(ParamsError) as error:
        load_params("data", path=write(tmp_path, "data", "root", str(inside)))
    assert str(error.value).startswith(f"params.yaml: data.root {inside} is an absolute path inside this "
                                       "repository: use the relative path videos/mine (dvc.lock")
    outside = tmp_path_factory.mktemp("elsewhere")  # a dataset kept outside the clone: fine
    assert load_params("data", path=write(tmp_path, "data", "root", str(outside)))["data"]["root"] == str(outside)


def test_random_weights_on_real_videos_of_the_synthetic_source_are_refused(tmp_path):
    """data.source synthetic but data.root not the synthesize stage's output: real videos."""
    with pytest.raises(ParamsError, match="data.root videos is not the demo's data/synthetic/UCF-101 .* but "
                                          "features.weights is none"):
        load_params("data", "features", path=write(tmp_path, "data", "root", "videos"))
    assert load_params("data", "features", path=write(tmp_path, "data", "root", "./data/synthetic/UCF-101/"))


@pytest.mark.parametrize("changes,message", [
    ({"backbone": "squeezenet1_0"}, "features.backbone squeezenet1_0 has no Linear classifier"),
    ({"backbone": "vit_b_16", "crop": 112, "resize": 128}, "features.backbone vit_b_16 cannot take 112x112 crops"),
    ({"resize": 200}, r"features.crop \(auto: 224\) must be <= features.resize \(200\)"),
    ({"interpolation": "lanczos"}, "features.interpolation must be one of auto, bilinear, bicubic, nearest"),
])
def test_features_the_code_cannot_take_are_refused(tmp_path, changes, message):
    params = {name: dict(cfg) for name, cfg in DEFAULTS.items()}
    params["features"].update(changes)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match=message) as error:
        load_checked("features", path=path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("backbone", ["resnet50", "efficientnet_b0", "convnext_tiny", "vit_b_16"])
def test_backbones_with_auto_preprocessing_are_accepted(tmp_path, backbone):
    features = load_checked("features", path=write(tmp_path, "features", "backbone", backbone))["features"]
    assert (features["resize"], features["crop"], features["interpolation"]) == ("auto", "auto", "auto")


# The validate stage under real DVC, in a clone of the session's tiny repository (conftest.pipeline)
# without its outputs: every stage is out of date, and only validate has run.
from tests.conftest import clone_of, git, run, stages_run, tool_env  # noqa: E402


@pytest.fixture(scope="module")
def dvc_repo(pipeline, tmp_path_factory) -> Path:
    repo = clone_of(pipeline, tmp_path_factory.mktemp("validate") / "repo", checkout=False)
    run(["dvc", "repro", "validate"], repo)
    return repo


def dvc(repo: Path, *args: str) -> tuple[int, str]:
    """A dvc command as a user types it, on a machine where torch sees no GPU; params.yaml is
    restored afterwards (a failed `dvc exp run` leaves its -S changes in the workspace)."""
    result = subprocess.run(["dvc", *args], cwd=repo, env={**tool_env(), "CUDA_VISIBLE_DEVICES": ""},
                            capture_output=True, text=True, timeout=600)
    git(repo, "checkout", "--", "params.yaml")
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("setting,message", [  # -S adds a new key with + (-S train.lr_typo=1: DVC refuses)
    ("+train.lr_typo=1", "error: params.yaml: unknown key train.lr_typo: did you mean train.lr?"),
    ("runtime.device=cuda", "error: runtime.device is cuda but torch sees no CUDA GPU here"),
])
def test_dvc_exp_run_fails_in_the_validate_stage_before_any_other(dvc_repo, setting, message):
    code, out = dvc(dvc_repo, "exp", "run", "-S", setting)
    assert code != 0 and message in out, out
    assert stages_run(out) == {"validate"}, out  # first, although every other stage is out of date


def test_a_key_added_by_hand_fails_dvc_repro(dvc_repo):
    params = yaml.safe_load((dvc_repo / "params.yaml").read_text())
    params["train"]["learning_rate"] = 0.01
    (dvc_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    code, out = dvc(dvc_repo, "repro")
    assert code != 0 and "error: params.yaml: unknown key train.learning_rate: did you mean train.lr?" in out
    assert stages_run(out) == {"validate"}, out


def test_validate_runs_on_every_change_is_never_restored_and_leaves_status_clean(dvc_repo):
    """(A new clone runs it once, on its first repro: tests/test_team.py, the team's clone.)"""
    params = yaml.safe_load((dvc_repo / "params.yaml").read_text())
    for threads in (1, 0):  # 0 again: a stage with an uncached output has no run-cache to restore from
        params["runtime"]["threads"] = threads
        (dvc_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        out = run(["dvc", "repro", "validate"], dvc_repo)
        assert stages_run(out) == {"validate"} and "is cached" not in out, out
        assert "Data and pipelines are up to date" in dvc(dvc_repo, "status", "validate")[1]
    assert stages_run(dvc(dvc_repo, "repro", "validate")[1]) == set()


def test_the_validate_stage_checks_the_machine(tmp_path, monkeypatch):
    """What only this machine can tell: a GPU, an installed decoder; run as DVC runs the stage."""
    import actionrec.video
    from actionrec.runtime import resolve_runtime

    real = actionrec.video.load_error
    monkeypatch.setattr(actionrec.video, "load_error", lambda name: "" if name == "decord" else real(name))
    (tmp_path / "committed.yaml").write_bytes(committed("params.yaml"))
    cfg = load_params("features", "runtime", path=tmp_path / "committed.yaml")
    with pytest.raises(ParamsError, match="^runtime.decoder is decord but decord is not installed"):
        resolve_runtime(cfg["features"], {**cfg["runtime"], "decoder": "decord"})
    params = {name: dict(cfg) for name, cfg in DEFAULTS.items()}
    params["runtime"]["device"] = "cuda:0"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run(stage_argv("validate"), cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env={**tool_env(), "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == ("error: runtime.device is cuda:0 but torch sees no CUDA GPU here: set "
                             "runtime.device: auto or cpu\n")
    # under `dvc exp run`, whose -S value stays in params.yaml when the run fails, the way back too
    result = subprocess.run(stage_argv("validate"), cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**tool_env(), "CUDA_VISIBLE_DEVICES": "", "DVC_EXP_NAME": "exp-1"})
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: runtime.device is cuda:0 but torch sees no CUDA GPU here") and \
        "`git checkout -- params.yaml` puts back the committed ones" in result.stderr, result.stderr
