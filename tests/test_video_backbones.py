"""Video backbones (torchvision.models.video, issue 30): preprocessing from the weights, feature sizes, a real
checkpoint from TORCH_HOME, the [S, D] clip sequence through every head, clip sampling, one-line refusals, and
the pipeline on r3d_18 with predict.py."""
from __future__ import annotations

import json
import shutil
import urllib.error

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision

from actionrec.backbone import (build_backbone, check_backbone, check_features, clip_inputs, embed, normalize,
                                prepare_for_inference, preprocessing)
from actionrec.dataset import read_index
from actionrec.errors import ParamsError
from actionrec.model import HEADS, build_model, load_checkpoint, lstm_inputs
from actionrec.video import frame_indices, sample_clip
from tests.conftest import SAMPLE_VIDEOS, read_features, read_metrics, run, stages_run, tiny_video

VIDEO_MODELS = torchvision.models.list_models(module=torchvision.models.video)
AUTO = dict.fromkeys(("resize", "crop", "interpolation", "clip_frames"), "auto")
SMALL = {"resize": 40, "crop": 32, "clip_frames": 4}  # r3d_18 takes any size: cheap clips


def features_cfg(backbone: str, weights: str = "none", **overrides) -> dict:
    return {"backbone": backbone, "weights": weights, **AUTO, **overrides}


@pytest.mark.parametrize("name", VIDEO_MODELS)
def test_video_preprocessing_is_the_weights_own(name):
    """resize (an exact [h, w] where the weights' transforms give two sizes), crop, mean, std and interpolation of
    the DEFAULT weights' transforms(), without antialiasing as they resize; clips of 16 frames at the frame rate
    the weights' docs name (15, or 7.5 for MViT). Weights none take the same: the size the model was built for."""
    default = torchvision.models.get_model_weights(name).DEFAULT
    own = default.transforms()
    expected_resize = own.resize_size[0] if len(own.resize_size) == 1 else list(own.resize_size)
    for weights in ("none", "DEFAULT", default.name):
        prep = preprocessing(features_cfg(name, weights))
        assert prep == {"resize": expected_resize, "crop": own.crop_size[0], "interpolation": own.interpolation.value,
                        "mean": list(own.mean), "std": list(own.std), "antialias": False, "clip_frames": 16,
                        "clip_fps": prep["clip_fps"]}, weights
        assert prep["clip_fps"] in (15.0, 7.5) and f"frame_rate={prep['clip_fps']:g}`" in default.meta["_docs"]
    explicit = preprocessing(features_cfg(name, clip_frames=32, crop=200, resize=210))  # params win
    assert (explicit["clip_frames"], explicit["crop"], explicit["resize"], explicit["clip_fps"]) == (
        32, 200, 210, prep["clip_fps"])


@pytest.mark.parametrize("name", ["r3d_18", "s3d", "swin3d_t"])
def test_video_frames_are_preprocessed_as_the_weights_transforms_do(name):
    """clip_inputs + normalize on a real clip equal torchvision's weights.transforms() on the same decoded frames
    within one grey level: r3d_18 resizes to exactly 128x171 and s3d to 256x256 (4:3 squashed), none antialiased."""
    prep = preprocessing(features_cfg(name))
    clip_path = SAMPLE_VIDEOS / "v_ApplyEyeMakeup_g01_c01.avi"  # 320x240
    clip, items = clip_inputs(clip_path, 2, prep)
    crop = prep["crop"]
    assert items.dtype == torch.uint8 and items.shape == (2, 16, 3, crop, crop)
    assert len(clip.indices) == 32 and clip.indices == sorted(clip.indices)
    ours = normalize(items, prep)
    frames = torch.from_numpy(clip.frames).permute(0, 3, 1, 2).unflatten(0, (2, 16))  # [S, L, 3, H, W]
    theirs = torchvision.models.get_model_weights(name).DEFAULT.transforms()(frames)
    assert ours.shape == theirs.shape == (2, 3, 16, crop, crop)  # the layout the model takes

    def grey_levels(x: torch.Tensor) -> torch.Tensor:  # |difference| in 0..255 pixel steps
        return (x - theirs).abs() * torch.tensor(prep["std"]).view(1, 3, 1, 1, 1) * 255

    assert grey_levels(ours).max() < 1.01 and grey_levels(ours).mean() < 0.3, grey_levels(ours).mean()
    if isinstance(prep["resize"], list):  # downscaled (r3d: 240 -> 128 rows; s3d: 320 -> 256 columns), not antialiased
        antialiased = normalize(clip_inputs(clip_path, 2, {**prep, "antialias": True})[1], prep)
        assert grey_levels(antialiased).mean() > 3 * grey_levels(ours).mean()


@pytest.mark.parametrize("name,dim", [("r3d_18", 512), ("s3d", 1024), ("mvit_v2_s", 768), ("swin3d_t", 768)])
def test_video_backbones_are_accepted_with_their_feature_size(name, dim):
    """A meta-device forward of a clip of its own size (no weights, no compute): the size of the features."""
    cfg = features_cfg(name)
    check_features(cfg)
    prep = preprocessing(cfg)
    assert check_backbone(name, prep["crop"], "none", prep["clip_frames"]) == dim


def test_s3ds_classifier_is_a_conv3d_and_its_input_is_the_feature():
    with torch.device("meta"):
        model = torchvision.models.video.s3d()
    assert isinstance(model.classifier[-1], torch.nn.Conv3d) and model.classifier[-1].in_channels == 1024
    assert not any(isinstance(module, torch.nn.Linear) for module in model.modules())  # no Linear to remove
    assert check_backbone("s3d", 224, "KINETICS400_V1", 16) == 1024


# ---------------------------------------------------------------- a real checkpoint from TORCH_HOME

S3D_FILE = "s3d-d76dad2f.pth"  # torchvision's file name for s3d's KINETICS400_V1 (the smallest: 32 MB)


def offline(monkeypatch) -> None:
    def refuse(url, *args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_kinetics_weights_load_from_the_torch_home_cache(tmp_path, monkeypatch):
    """A seeded s3d state dict under torchvision's file name in a temporary TORCH_HOME loads as KINETICS400_V1
    (and DEFAULT), offline: its weights, and the features of a real clip are those of an s3d with that state
    dict (the mean of its classifier's input). Without the file, offline: tests/test_backbone.py
    (test_named_weights_offline_are_one_line_from_the_features_stage_and_predict) names it."""
    offline(monkeypatch)
    assert torchvision.models.video.S3D_Weights.KINETICS400_V1.url.endswith("/" + S3D_FILE)
    cache = tmp_path / "hub/checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(123)
    reference = torchvision.models.video.s3d()
    state = reference.state_dict()
    torch.save(state, cache / S3D_FILE)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    prep = preprocessing(features_cfg("s3d", "KINETICS400_V1"))
    _, items = clip_inputs(SAMPLE_VIDEOS / "kinetics_arm_wrestling.mp4", 1, prep)
    seen = []
    reference.classifier.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    with torch.inference_mode():
        reference.eval()(normalize(items, prep))
    expected = seen[0].mean(dim=(2, 3, 4))
    for weights in ("DEFAULT", "KINETICS400_V1"):
        model = build_backbone("s3d", weights)
        loaded = model.state_dict()
        assert model.feature_dim == 1024 and not model.training
        assert all(torch.equal(loaded[key], state[key]) for key in loaded) and len(loaded) == len(state) - 2
    with torch.inference_mode():
        features = model(normalize(items, prep))
    assert features.shape == (1, 1024) and torch.equal(features, expected)
    assert (expected != 0).float().mean() > 0.5 and len(expected.unique()) > 256  # the clip's, not a constant


# ---------------------------------------------------------------- the clip sequence through every head


@pytest.fixture(scope="module")
def r3d_sequences() -> torch.Tensor:
    """[2, 3, 512]: 3 clips of 4 frames (32x32) of two real clips through r3d_18 (seeded random weights)."""
    prep = preprocessing(features_cfg("r3d_18", **SMALL))
    model = prepare_for_inference(build_backbone("r3d_18", "none", seed=0), "fp32", False, prep=prep)
    return torch.stack([embed(model, clip_inputs(SAMPLE_VIDEOS / name, 3, prep)[1], "fp32")
                        for name in ("v_ApplyEyeMakeup_g01_c01.avi", "kinetics_arm_wrestling.mp4")])


@pytest.mark.parametrize("head", HEADS)
def test_every_head_takes_the_clip_sequence(r3d_sequences, head):
    """[B, S, 512] with S = 3 clips (not 16 frames): each head classifies it, learns from it, and all but mean see
    the order of the clips."""
    assert r3d_sequences.shape == (2, 3, 512) and torch.isfinite(r3d_sequences).all()
    x = (r3d_sequences - r3d_sequences.mean((0, 1))) / (r3d_sequences.std((0, 1)) + 1e-6)
    assert (x[:, 0] - x[:, 1]).abs().mean() > 0.05  # the clips of a video differ
    meta = {"head": head, "feature_dim": 512, "num_frames": 3, "class_names": ["A", "B", "C"], "hidden_size": 8,
            "num_layers": 1, "bidirectional": False, "proj_dim": 16, "transformer_layers": 1,
            "transformer_heads": 4, "dropout": 0.0}
    torch.manual_seed(0)
    model = build_model(meta)
    assert model(x).shape == (2, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    labels = torch.tensor([0, 2])
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(x), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    model.eval()
    assert torch.allclose(model(x), model(x.flip(1)), atol=1e-5) == (head == "mean")


# ---------------------------------------------------------------- one-line refusals


@pytest.mark.parametrize("backbone,changes,message", [
    ("mvit_v2_s", {"clip_frames": 8}, "features.backbone mvit_v2_s cannot take clips of 8 frames of 224x224 "
                                      r"\(.*\): set features.clip_frames and features.crop to auto"),
    ("s3d", {"crop": 112}, r"features.backbone s3d cannot take clips of 16 frames of 112x112 \(.*\): set "
                           "features.clip_frames and features.crop to auto"),
    ("s3d", {"clip_frames": 8}, "features.backbone s3d cannot take clips of 8 frames of 224x224"),
    ("resnet50", {"clip_frames": 16}, "features.clip_frames applies to video backbones .*r3d_18.*; resnet50 is an "
                                      "image model: set features.clip_frames: auto"),
    ("raft_small", {}, "features.backbone must be a torchvision image or video classification model .*got "
                       "'raft_small'"),
    ("r3d_18", {"crop": 160}, r"features.crop \(160\) must be <= features.resize \(auto: \[128, 171\]\): set both, "
                              "or both auto"),
    ("swin3d_t", {"resize": 200}, r"features.crop \(auto: 224\) must be <= features.resize \(200\)"),
])
def test_video_refusals_are_one_line(backbone, changes, message):
    with pytest.raises(ParamsError, match="^params.yaml: " + message) as error:
        check_features(features_cfg(backbone, **changes))
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------- sampling clips


def old_frame_indices(n: int, count: int) -> list[int]:
    """What frame_indices gave before clips: TSN segment centres."""
    return [min(int((i + 0.5) * n / count), n - 1) for i in range(count)]


def test_clip_indices():
    for n in range(1, 70):
        for count in (1, 2, 3, 4, 7, 16, 32):
            assert frame_indices(n, count) == frame_indices(n, count, 1, 2.5) == old_frame_indices(n, count)
            for length, step in ((4, 1.0), (16, 25 / 15), (16, 2.0), (8, 0.5), (16, 28 / 7.5)):
                indices = frame_indices(n, count, length, step)
                clips = [indices[c * length:(c + 1) * length] for c in range(count)]
                assert len(indices) == count * length and 0 <= min(indices) and max(indices) <= n - 1
                assert all(clip == sorted(clip) for clip in clips) and [c[0] for c in clips] == sorted(c[0] for c in clips)
                span = (length - 1) * step
                if span <= n - 1:  # the clip fits: frames `step` apart, centred on the segment centre where it can be
                    for i, clip in enumerate(clips):
                        assert all(np.floor(step) <= b - a <= np.ceil(step) for a, b in zip(clip, clip[1:])), clip
                        assert clip[-1] - clip[0] >= span - 1
                        centre = (i + 0.5) * n / count
                        if span / 2 <= centre <= n - 1 - span / 2:
                            assert abs((clip[0] + clip[-1]) / 2 - centre) <= 1, (n, count, length, step, clip)
                else:  # longer than the video: slowed down to fit, whole, never beyond the end
                    assert all(clip[0] == 0 and clip[-1] == n - 1 for clip in clips), (n, length, step, clips)
                    slower = np.ceil((n - 1) / (length - 1))
                    assert all(0 <= b - a <= slower for clip in clips for a, b in zip(clip, clip[1:]))


def test_clip_frames_come_back_in_order(tmp_path):
    """2 clips of 4 frames of a 24-frame video at 25 fps, at 12.5 fps (every 2nd frame): frame i is grey 10 * i."""
    path = tiny_video(tmp_path / "v.avi", frames=24, fps=25)
    clip = sample_clip(path, 2, clip_frames=4, clip_fps=12.5)
    # centres 6 and 18, a span of 6 frames around each
    assert clip.indices == frame_indices(24, 2, 4, 2.0) == [3, 5, 7, 9, 15, 17, 19, 21]
    assert clip.frames.shape == (8, 48, 64, 3)
    assert np.allclose(clip.frames.mean(axis=(1, 2, 3)), [10 * i for i in clip.indices], atol=4)
    slow = sample_clip(tiny_video(tmp_path / "short.avi", frames=6, fps=25), 1, clip_frames=16, clip_fps=15)
    assert slow.indices == sorted(slow.indices) and (slow.indices[0], slow.indices[-1]) == (0, 5)
    assert np.allclose(slow.frames.mean(axis=(1, 2, 3)), [10 * i for i in slow.indices], atol=4)


# ---------------------------------------------------------------- the pipeline on a video backbone

R3D_EXPERIMENT = {"backbone": "r3d_18", "weights": "none", "num_frames": 2, **SMALL}  # 2 clips of 4 frames of 32x32


@pytest.mark.pipeline
def test_video_backbone_pipeline(repo, cli, tmp_path):
    """`dvc exp run -S features.backbone=r3d_18 ...` on the shared tiny demo: shards [videos, 2 clips, 512], train
    and evaluate; a second run of the features stage takes every video from the store; predict.py classifies a real
    clip, its windows, and a folder (whose demo videos get the probabilities evaluate computes from the stored
    features)."""
    out = run(["dvc", "exp", "run", *[arg for key, value in R3D_EXPERIMENT.items()
                                      for arg in ("-S", f"features.{key}={value}")]], repo)
    assert stages_run(out) == {"validate", "features", "train", "evaluate"}, out
    metadata = pd.read_csv(repo / "data/metadata.csv")
    features, info = read_features(repo / "data/features"), json.loads((repo / "data/features/info.json").read_text())
    assert features.shape == (len(metadata), 2, 512) and features.dtype == np.float16
    assert list(read_index(repo / "data/features")["video"]) == list(metadata["video"])
    assert (features[:, 0] != features[:, 1]).mean() > 0.5  # two clips, two vectors
    assert info["preprocessing"] == {**preprocessing(features_cfg("r3d_18")), **SMALL}
    metrics = read_metrics(repo)
    assert metrics["features.json"]["frames"] == len(metadata) * 2 * 4 and metrics["features.json"]["feature_dim"] == 512
    assert (metrics["features.json"]["extracted_videos"], metrics["features.json"]["reused_videos"]) == (len(metadata), 0)
    model, meta = load_checkpoint(str(repo / "models/model.pt"))
    assert (meta["backbone"], meta["feature_dim"], meta["num_frames"], meta["preprocessing"]) == (
        "r3d_18", 512, 2, info["preprocessing"])
    test_videos = pd.read_csv(repo / "data/splits/test.csv")["video"]
    assert metrics["evaluate.json"]["test_videos"] == len(test_videos) > 0

    out = run(["dvc", "repro", "-f", "-s", "features"], repo)
    again = json.loads((repo / "metrics/features.json").read_text())
    assert (again["extracted_videos"], again["reused_videos"]) == (0, len(metadata)), out
    assert np.array_equal(read_features(repo / "data/features"), features)

    model_file, clip = repo / "models/model.pt", SAMPLE_VIDEOS / "kinetics_arm_wrestling.mp4"
    code, out, err = cli(clip, "--model", model_file, "--json", "--top-k", "3")
    assert code == 0, err
    result = json.loads(out)
    assert result["label"] in meta["class_names"] and result["decoder"] == "pyav"
    assert sum(item["confidence"] for item in result["top_k"]) == pytest.approx(1, abs=1e-3)
    code, out, err = cli(clip, "--model", model_file, "--json", "--window", "2")
    assert code == 0, err
    timeline = json.loads(out)["timeline"]
    assert len(timeline) == 5 and all(item["label"] in meta["class_names"] for item in timeline)  # a 10 s clip
    folder = tmp_path / "videos"
    for video in [*test_videos[:2], "kinetics_arm_wrestling.mp4"]:
        (folder / video).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / "data/synthetic/UCF-101" / video if "/" in video else clip, folder / video)
    code, out, err = cli(folder, "--model", model_file, "--csv", tmp_path / "out.csv", "--top-k", "3")
    assert code == 0, err
    rows = pd.read_csv(tmp_path / "out.csv", keep_default_na=False).set_index("file")
    assert len(rows) == 3 and set(rows["label"]) <= set(meta["class_names"]) and (rows["error"] == "").all()
    videos = list(read_index(repo / "data/features")["video"])
    for video in test_videos[:2]:
        stored = features[videos.index(video)][None]
        with torch.no_grad():
            expected = torch.softmax(model(lstm_inputs(stored, meta))[0], 0).numpy()
        got = dict(item.split(":") for item in rows.loc[video, "top_k"].split(";"))
        assert np.allclose([float(got[name]) for name in meta["class_names"]], expected, atol=0.01), video
