import copy
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml

from actionrec.backbone import (DEFAULT_PREPROCESSING, _classifier_to_identity, build_backbone, check_backbone, degradation, embed, normalize, prepare_for_inference, preprocessing, resize_crop, weights_file)
from actionrec.errors import ParamsError, UserError
from actionrec.video import sample_clip
from tests.conftest import ROOT, committed_params, stage_argv, tiny_video

OFFLINE = {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "no_proxy": ""}  # nothing answers


def test_imagenet_weights_load_from_the_torch_home_cache(tmp_path, monkeypatch):
    """The real IMAGENET1K_V2 path, offline: a checkpoint under the name torchvision expects."""
    weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V2
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(123)
    reference = torchvision.models.resnet50().state_dict()
    torch.save(reference, cache / weights.url.rsplit("/", 1)[1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    model = build_backbone("resnet50", "IMAGENET1K_V2")
    loaded = model.state_dict()
    assert torch.equal(loaded["conv1.weight"], reference["conv1.weight"])
    assert torch.equal(loaded["layer4.2.bn3.running_var"], reference["layer4.2.bn3.running_var"])
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_weights_from_a_state_dict_file(tmp_path):
    torch.manual_seed(7)
    reference = torchvision.models.resnet18().state_dict()
    torch.save(reference, tmp_path / "r18.pth")
    model = build_backbone("resnet18", str(tmp_path / "r18.pth"))
    assert torch.equal(model.state_dict()["conv1.weight"], reference["conv1.weight"])


def test_random_weights_are_seeded():
    a, b = build_backbone("resnet18", "none", seed=3), build_backbone("resnet18", "none", seed=3)
    assert torch.equal(a.state_dict()["conv1.weight"], b.state_dict()["conv1.weight"])


def test_resize_crop_keeps_uint8_and_centre():
    frames = np.zeros((2, 240, 320, 3), np.uint8)
    frames[:, 100:140, 140:180] = 255  # a white square in the centre survives the crop
    out = resize_crop(frames, DEFAULT_PREPROCESSING)
    assert out.shape == (2, 3, 224, 224) and out.dtype == torch.uint8
    assert out[:, :, 112, 112].min() == 255 and out[:, :, 0, 0].max() == 0


@pytest.mark.pipeline
def test_bf16_and_compiled_features_agree_with_fp32_on_real_clips(real_clips):
    """Agreement measured so that unrelated frames would fail: the relative L2 error of the
    fast paths must be far below the relative distance between frames of different clips
    (random-weight features of unrelated clips still have cosine similarity ~0.998, so a
    cosine threshold would prove nothing). Measured here: bf16 0.0045, cross-clip >= 0.039."""
    model = build_backbone("resnet50", "none", seed=0)
    batch = torch.cat([resize_crop(sample_clip(path, 4).frames, DEFAULT_PREPROCESSING) for path in real_clips.values()])
    with torch.inference_mode():
        reference = model(normalize(batch, DEFAULT_PREPROCESSING).contiguous())  # unfused, fp32, eager
    clip = torch.arange(len(batch)) // 4
    cross = torch.cdist(reference, reference) / reference.norm(dim=1, keepdim=True)
    cross_clip = cross[clip[:, None] != clip[None, :]].min()
    assert cross_clip > 0.02, "the sample clips should give distinct features"
    for precision, compiled in (("fp32", False), ("bf16", False), ("fp32", True)):
        fast = prepare_for_inference(copy.deepcopy(model), precision, compiled)
        features = embed(fast, batch, precision)
        error = (features - reference).norm(dim=1) / reference.norm(dim=1)
        assert features.shape == (12, 2048), (precision, compiled)
        assert error.max() < min(0.02, cross_clip / 4), (precision, compiled, error.max(), cross_clip)



def test_s3d_runs_in_bf16_on_the_cpu():
    """s3d's AvgPool3d has no bf16 CPU kernel in torch ("avg_pool3d_out_frame" not implemented for 'BFloat16', the
    stage's crash with precision auto on a CPU with native bf16): it pools in float32. Its smallest clip, 13 frames
    of 209 px; torchvision's random weights (build_backbone's normalisation would cost seconds): bf16 0.005 from fp32."""
    torch.manual_seed(0)
    model = torchvision.models.get_model("s3d").eval().requires_grad_(False)
    model.feature_dim = _classifier_to_identity(model)
    prep = {**DEFAULT_PREPROCESSING, "resize": 209, "crop": 209, "clip_frames": 13, "antialias": False}
    clip = resize_crop(sample_clip(ROOT / "tests/data/v_ApplyEyeMakeup_g01_c01.avi", 1, clip_frames=13).frames, prep)
    with torch.inference_mode():
        reference = model(normalize(clip, prep))  # unfused, fp32, eager
    features = embed(prepare_for_inference(model, "bf16", False, prep=prep), clip, "bf16")
    assert features.shape == (1, 1024) and features.dtype == torch.float32
    assert 0 < (features - reference).norm() / reference.norm() < 0.02

def suggested_backbones() -> list[str]:
    """The backbones params.yaml's comment on features.backbone names ("resnet18/50, efficientnet_b0, ...")."""
    line = next(line for line in (ROOT / "params.yaml").read_text().splitlines() if line.strip().startswith("backbone:"))
    names = []
    for item in filter(lambda item: item not in ("", "..."), map(str.strip, line.split("#")[1].split(":")[1].split(","))):
        first, *sizes = item.split("/")
        names += [first, *(first.rstrip("0123456789") + size for size in sizes)]
    return names


@pytest.mark.parametrize("name,dim", [("resnet18", 512), ("resnet50", 2048), ("efficientnet_b0", 1280),
                                      ("convnext_tiny", 768), ("mobilenet_v3_large", 1280)])
def test_suggested_backbones_give_features_float16_holds_with_random_weights(name, dim, real_clips):
    """The classifier is removed and the feature size read from the model itself; with seeded random
    weights (the offline demo) the features of real frames are finite and of a size float16 stores
    (efficientnet_b0's were 1e-13 and mobilenet_v3_large's 1e-9: all zeros once stored)."""
    assert name in suggested_backbones()
    model = build_backbone(name, "none", seed=0)
    assert model.feature_dim == dim
    fast = prepare_for_inference(model, "fp32", False)
    frames = resize_crop(sample_clip(real_clips["short_32_frames.mp4"], 2).frames, DEFAULT_PREPROCESSING)
    features = embed(fast, frames, "fp32").numpy()  # a clip that is not among the calibration clips
    assert features.shape == (2, dim) and degradation(features) == ""
    stored = features.astype(np.float16)
    assert (stored != 0).mean() > 0.5 and (stored[0] != stored[1]).mean() > 0.5  # the frames' own features


def test_features_float16_cannot_hold_are_named():
    """What the features stage refuses before storing float16 (stages/features.py)."""
    usable = np.random.default_rng(0).normal(0, 3, (4, 64)).astype(np.float32)
    assert degradation(usable) == ""
    assert "float16 (as stored) makes 100% of them zeros or subnormals" in degradation(usable * 1e-13)
    assert "of order 2e-13" in degradation(usable * 1e-13)
    assert "makes 100% of them zeros" in degradation(np.zeros_like(usable))
    assert "beyond float16's largest value" in degradation(usable * 1e5)
    assert "not finite" in degradation(np.where(usable > 5, np.nan, usable))
    assert "not finite" in degradation(np.where(usable > 5, np.inf, usable))


def test_weights_file_is_named_by_torchvision_or_the_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert weights_file("IMAGENET1K_V2", "resnet50") == tmp_path / "hub/checkpoints/resnet50-11ad3fa6.pth"
    assert weights_file("weights/mine.pth", "resnet50") == Path("weights/mine.pth")
    assert weights_file("none", "resnet50") is None


def features_cfg(backbone: str, weights: str, **overrides) -> dict:
    return {"backbone": backbone, "weights": weights, "resize": "auto", "crop": "auto", "interpolation": "auto",
            **overrides}


@pytest.mark.parametrize("backbone,weights,expected", [
    ("resnet50", "IMAGENET1K_V2", (232, 224, "bilinear")),
    ("resnet50", "IMAGENET1K_V1", (256, 224, "bilinear")),
    ("efficientnet_b0", "DEFAULT", (256, 224, "bicubic")),
    ("convnext_tiny", "IMAGENET1K_V1", (236, 224, "bilinear")),
    ("vit_b_16", "IMAGENET1K_SWAG_E2E_V1", (384, 384, "bicubic")),
    ("resnet50", "none", (256, 224, "bilinear")),
    ("resnet50", "weights/mine.pth", (256, 224, "bilinear")),
    ("resnet50", "weights/resnet50-11ad3fa6.pth", (232, 224, "bilinear")),  # torchvision's own file, by name
])
def test_auto_preprocessing_is_the_weights_own(backbone, weights, expected):
    prep = preprocessing(features_cfg(backbone, weights))
    assert (prep["resize"], prep["crop"], prep["interpolation"]) == expected
    if weights in ("none", "weights/mine.pth"):
        assert prep == DEFAULT_PREPROCESSING


def test_explicit_values_win_and_old_model_files_keep_the_defaults():
    prep = preprocessing(features_cfg("efficientnet_b0", "DEFAULT", resize=300, interpolation="nearest"))
    assert (prep["resize"], prep["crop"], prep["interpolation"]) == (300, 224, "nearest")
    recorded = {**DEFAULT_PREPROCESSING, "resize": 64, "crop": 56}
    assert preprocessing({"backbone": "resnet50", "weights": "IMAGENET1K_V2", "resize": "auto", "crop": "auto",
                          "interpolation": "auto", "preprocessing": recorded}) == recorded  # a new model file
    old_meta = {"backbone": "resnet50", "weights": "IMAGENET1K_V2", "resize": 64, "crop": 56}  # no such keys yet
    assert preprocessing(old_meta) == {**DEFAULT_PREPROCESSING, "resize": 64, "crop": 56}


@pytest.mark.parametrize("backbone,weights", [("efficientnet_b0", "IMAGENET1K_V1"), ("resnet50", "IMAGENET1K_V2")])
def test_frames_are_preprocessed_as_the_weights_own_transforms_do(real_clips, backbone, weights):
    """Our uint8 resize/crop then normalize() equals torchvision's weights.transforms() on the
    same frames (bicubic for efficientnet_b0, 232 for ResNet50 V2), to rounding."""
    frames = sample_clip(real_clips["v_ApplyEyeMakeup_g01_c01.avi"], 2).frames
    prep = preprocessing(features_cfg(backbone, weights))
    ours = normalize(resize_crop(frames, prep), prep)
    theirs = torchvision.models.get_model_weights(backbone)[weights].transforms()(
        torch.from_numpy(frames).permute(0, 3, 1, 2))
    assert ours.shape == theirs.shape == (2, 3, 224, 224)

    def grey_levels(x: torch.Tensor) -> torch.Tensor:  # |difference| in 0..255 pixel steps
        return (x - theirs).abs() * torch.tensor(prep["std"]).view(1, 3, 1, 1) * 255

    # uint8 bicubic rounds its overshoot differently from torchvision's float path at a few edges
    assert grey_levels(ours).mean() < 0.25 and (grey_levels(ours) > 1.01).float().mean() < 0.001
    default = normalize(resize_crop(frames, DEFAULT_PREPROCESSING), DEFAULT_PREPROCESSING)
    assert grey_levels(default).mean() > 3 * grey_levels(ours).mean()  # the old fixed 256 bilinear


def test_embed_normalises_by_the_models_preprocessing():
    model = build_backbone("resnet18", "none", seed=0)
    batch = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    odd = {**DEFAULT_PREPROCESSING, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    with torch.inference_mode():
        expected = model(normalize(batch, odd))
    got = embed(prepare_for_inference(copy.deepcopy(model), "fp32", False, prep=odd), batch, "fp32")
    assert torch.allclose(got, expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name,crop,weights,dim", [
    ("resnet50", 224, "none", 2048), ("efficientnet_b0", 224, "none", 1280), ("convnext_tiny", 56, "none", 768),
    ("vit_b_16", 224, "none", 768), ("vit_b_16", 384, "IMAGENET1K_SWAG_E2E_V1", 768),  # its weights' size
    ("regnet_y_400mf", 224, "none", 440), ("googlenet", 224, "none", 1024)])
def test_backbones_the_feature_code_can_take_are_accepted(name, crop, weights, dim):
    assert check_backbone(name, crop, weights) == dim


@pytest.mark.parametrize("name,crop,weights,message", [
    ("squeezenet1_0", 224, "none", "features.backbone squeezenet1_0 has no Linear classifier"),
    ("vit_b_16", 56, "none", "features.backbone vit_b_16 cannot take 56x56 crops .*Expected 224"),
    ("vit_b_16", 224, "IMAGENET1K_SWAG_E2E_V1", "features.backbone vit_b_16 cannot take 224x224 crops .*Expected 384"),
])
def test_backbones_it_cannot_take_are_refused_in_one_line(name, crop, weights, message):
    with pytest.raises(ParamsError, match=message) as error:
        check_backbone(name, crop, weights)
    assert "\n" not in str(error.value) and "resnet50" in str(error.value)  # suggests one that works


def test_named_weights_offline_say_where_to_put_the_file(tmp_path, monkeypatch):
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError) as error:
        build_backbone("resnet18", "IMAGENET1K_V1")
    message = str(error.value)
    assert "\n" not in message and "resnet18-f37072fd.pth" in message
    assert f"{tmp_path}/hub/checkpoints/" in message and "TORCH_HOME" in message and "weights/" in message


@pytest.mark.pipeline
@pytest.mark.parametrize("backbone,weights,file,dim", [("resnet18", "IMAGENET1K_V1", "resnet18-f37072fd.pth", 512),
                                                       ("s3d", "KINETICS400_V1", "s3d-d76dad2f.pth", 1024)])
def test_named_weights_offline_are_one_line_from_the_features_stage_and_predict(tmp_path, backbone, weights, file, dim):
    env = {**os.environ, **OFFLINE, "TORCH_HOME": str(tmp_path / "torch"), "PYTHONPATH": str(ROOT)}
    tiny_video(tmp_path / "videos/A/v_A_g01_c01.avi", frames=4)
    (tmp_path / "data").mkdir()
    (tmp_path / "data/video_list.csv").write_text("video\nA/v_A_g01_c01.avi\n")
    params = committed_params()
    params["data"]["root"] = "videos"
    params["features"].update(backbone=backbone, weights=weights)
    params["runtime"]["compile"] = False
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    stage = subprocess.run(stage_argv("features"), cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    meta = {"class_names": ["A", "B"], "feature_dim": dim, "hidden_size": 4, "num_layers": 1, "dropout": 0.0,
            "bidirectional": False, "temporal_centering": False, "num_frames": 2, "backbone": backbone,
            "weights": weights, "weights_sha256": None, "precision": "fp32", "resize": "auto",
            "crop": "auto", "interpolation": "auto", "seed": 0, "decoder": "auto",
            "feature_mean": torch.zeros(dim), "feature_std": torch.ones(dim)}
    from actionrec.model import build_model

    torch.save({"state_dict": build_model(meta).state_dict(), "meta": meta}, tmp_path / "model.pt")
    predict = subprocess.run([sys.executable, str(ROOT / "predict.py"), "videos/A/v_A_g01_c01.avi", "--model",
                              "model.pt"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    for result in (stage, predict):
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        line = result.stderr.strip().splitlines()[-1]
        assert line.startswith(f"error: cannot download the {backbone} {weights} weights")
        assert f"{file} into {tmp_path}/torch/hub/checkpoints/" in line
    assert not (tmp_path / "data/features").exists()
    assert not list((tmp_path / "torch").rglob("*.pth"))  # nothing was downloaded
