"""predict.py on the real clips, with a model file written as the train stage writes it."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from actionrec.model import build_model
from tests.conftest import ROOT, tiny_video

CLASSES = ["Archery", "Bowling", "Typing"]


@pytest.fixture
def model_file(tmp_path):
    meta = {"class_names": CLASSES, "feature_dim": 2048, "hidden_size": 8, "num_layers": 1, "dropout": 0.0,
            "bidirectional": False, "temporal_centering": True, "num_frames": 4, "backbone": "resnet50",
            "weights": "none", "weights_sha256": None, "precision": "fp32", "resize": 64, "crop": 56, "seed": 0,
            "decoder": "auto",
            "sampling": "segment_centres", "normalize": "imagenet",
            "feature_mean": torch.zeros(2048), "feature_std": torch.ones(2048)}
    torch.manual_seed(0)
    path = tmp_path / "lstm.pt"
    torch.save({"state_dict": build_model(meta).state_dict(), "meta": meta}, path)
    return path


def predict(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "predict.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_prints_the_seed_format_on_real_clips(real_clips, model_file):
    for path in real_clips.values():
        result = predict(path, "--model", model_file, "--top-k", "2")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].split(": ")[0] == "Prediction" and lines[0].split(": ")[1] in CLASSES
        assert lines[1].startswith("Confidence: ") and lines[1].endswith("%")
        ranked = [line for line in lines if line.startswith("  ")]
        percents = [float(line.split()[-1].rstrip("%")) for line in ranked]
        assert len(ranked) == 2 and percents == sorted(percents, reverse=True)
        assert lines[1] == f"Confidence: {percents[0]:.2f}%" and ranked[0].split()[1] == lines[0].split(": ")[1]


def test_json_output(real_clips, model_file):
    result = predict(real_clips["kinetics_arm_wrestling.mp4"], "--model", model_file, "--json", "--top-k", "3")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    confidences = [item["confidence"] for item in out["top_k"]]
    assert out["label"] in CLASSES and out["confidence"] == confidences[0] == max(confidences)
    assert [item["label"] for item in out["top_k"]][0] == out["label"] and len(out["top_k"]) == 3
    assert sum(item["confidence"] for item in out["top_k"]) == pytest.approx(1, abs=1e-3)


@pytest.mark.parametrize("case", ["missing video", "not a video", "text file", "JPEG", "no model", "no GPU"])
def test_user_errors_are_one_line_exit_2(tmp_path, model_file, case):
    video, model, args = tiny_video(tmp_path / "ok.avi", frames=8), model_file, []
    if case == "missing video":
        video = tmp_path / "nope.avi"
    elif case == "not a video":
        video = tmp_path / "notes.avi"
        video.write_text("hello\n" * 100)
    elif case == "text file":  # FFmpeg reads .txt as ANSI-art video: not a prediction
        video = tmp_path / "notes.txt"
        video.write_text("hello, this is a text file\n" * 300)
    elif case == "JPEG":
        from PIL import Image

        video = tmp_path / "photo.jpg"
        Image.new("RGB", (64, 48), (200, 30, 30)).save(video)
    elif case == "no GPU":
        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU: --device cuda is valid here")
        args = ["--device", "cuda"]
    else:
        model = tmp_path / "missing.pt"
    result = predict(video, "--model", model, *args)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr


def test_a_replaced_weights_file_is_refused(tmp_path, model_file):
    """The model file records the SHA-256 of the backbone weights; another file is refused."""
    checkpoint = torch.load(model_file, weights_only=True)
    weights = tmp_path / "weights" / "r50.pth"
    weights.parent.mkdir()
    torch.save(__import__("torchvision").models.resnet50().state_dict(), weights)
    from actionrec.download import sha256_of

    checkpoint["meta"].update(weights=str(weights), weights_sha256=sha256_of(weights))
    torch.save(checkpoint, model_file)
    video = tiny_video(tmp_path / "ok.avi", frames=8)
    assert predict(video, "--model", model_file).returncode == 0
    torch.save({"other": torch.zeros(1)}, weights)  # replaced by another file
    result = predict(video, "--model", model_file)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "is not the weights file the model was trained with" in result.stderr
