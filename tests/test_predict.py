"""predict.py on the real clips, with a model file written as the train stage writes it."""
from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from actionrec.dataset import write_features
from actionrec.model import build_model
from actionrec.synthetic import write_avi
from actionrec.pipeline import paths
from tests.conftest import ROOT, SAMPLE_VIDEOS, committed_params, rotated_video, stage_argv, tiny_video, white_corner

CLASSES = ["Archery", "Bowling", "Typing"]


@pytest.fixture
def model_file(tmp_path):
    return write_model(tmp_path / "model.pt")


def predict(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "predict.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_prints_the_seed_format_on_real_clips(real_clips, model_file, cli):
    for path in real_clips.values():
        code, out, err = cli(path, "--model", model_file, "--top-k", "2")
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0].split(": ")[0] == "Prediction" and lines[0].split(": ")[1] in CLASSES
        assert lines[1].startswith("Confidence: ") and lines[1].endswith("%")
        ranked = [line for line in lines if line.startswith("  ")]
        percents = [float(line.split()[-1].rstrip("%")) for line in ranked]
        assert len(ranked) == 2 and percents == sorted(percents, reverse=True)
        assert lines[1] == f"Confidence: {percents[0]:.2f}%" and ranked[0].split()[1] == lines[0].split(": ")[1]


def test_json_output(real_clips, model_file, cli):
    code, out, err = cli(real_clips["kinetics_arm_wrestling.mp4"], "--model", model_file, "--json", "--top-k", "3")
    assert code == 0, err
    out = json.loads(out)
    confidences = [item["confidence"] for item in out["top_k"]]
    assert out["label"] in CLASSES and out["confidence"] == confidences[0] == max(confidences)
    assert [item["label"] for item in out["top_k"]][0] == out["label"] and len(out["top_k"]) == 3
    assert sum(item["confidence"] for item in out["top_k"]) == pytest.approx(1, abs=1e-3)


@pytest.mark.parametrize("case", ["missing video", "not a video", "text file", "JPEG", "GIF", "one-frame video",
                                  "directory", "no model", "no GPU", "unknown decoder", "window 0",
                                  "stride alone", "csv for one video"])
def test_user_errors_are_one_line_exit_2(tmp_path, model_file, cli, case):
    """In-process (predict.py's main()), but one case as its own process: the whole stderr."""
    video, model, args = tiny_video(tmp_path / "ok.avi", frames=8), model_file, []
    if case in ("unknown decoder", "window 0", "stride alone", "csv for one video"):
        args = {"unknown decoder": ["--decoder", "ffmpeg"], "window 0": ["--window", "0"],
                "stride alone": ["--stride", "1"], "csv for one video": ["--csv", tmp_path / "out.csv"]}[case]
    elif case == "GIF":  # a still image in a video-capable container
        from PIL import Image

        video = tmp_path / "still.gif"
        Image.new("RGB", (64, 48), (200, 30, 30)).save(video)
    elif case == "one-frame video":
        video = tiny_video(tmp_path / "one.avi", frames=1)
    elif case == "directory":
        video = tmp_path
    elif case == "missing video":
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
    if case == "not a video":
        result = predict(video, "--model", model, *args)
        code, out, err = result.returncode, result.stdout, result.stderr
    else:
        code, out, err = cli(video, "--model", model, *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert "Traceback" not in err
    if case == "directory":
        assert "is a directory; use --csv" in err


def test_a_replaced_weights_file_is_refused(tmp_path, model_file, cli):
    """The model file records the SHA-256 of the backbone weights; another file is refused."""
    checkpoint = torch.load(model_file, weights_only=True)
    weights = tmp_path / "weights" / "r50.pth"
    weights.parent.mkdir()
    torch.save(__import__("torchvision").models.resnet50().state_dict(), weights)
    from actionrec.download import sha256_of

    checkpoint["meta"].update(weights=str(weights), weights_sha256=sha256_of(weights))
    torch.save(checkpoint, model_file)
    video = tiny_video(tmp_path / "ok.avi", frames=8)
    assert cli(video, "--model", model_file)[0] == 0
    torch.save({"other": torch.zeros(1)}, weights)  # replaced by another file
    code, _, err = cli(video, "--model", model_file)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "is not the weights file the model was trained with" in err


# ---- predict.py for real use (issue 16): run in-process, where a subprocess adds nothing ----

def write_model(path: Path, **changes) -> Path:
    """A model file as stages/train.py writes it, with a tiny head and small frames."""
    meta = {"class_names": CLASSES, "feature_dim": 2048, "hidden_size": 8, "num_layers": 1, "dropout": 0.0,
            "bidirectional": False, "temporal_centering": True, "num_frames": 4, "backbone": "resnet50",
            "weights": "none", "weights_sha256": None, "precision": "fp32", "resize": 64, "crop": 56, "seed": 0,
            "decoder": "auto", "sampling": "segment_centres", "normalize": "imagenet", **changes}
    meta.update(feature_mean=torch.zeros(meta["feature_dim"]), feature_std=torch.ones(meta["feature_dim"]))
    torch.manual_seed(0)
    torch.save({"state_dict": build_model(meta).state_dict(), "meta": meta}, path)
    return path


def grey_video(path: Path, seconds: int, fps: int = 10) -> Path:
    """Frame i is grey 4 * i: a PNG of a sampled frame tells which frame it is."""
    frames = np.zeros((seconds * fps, 48, 64, 3), np.uint8)
    for i in range(len(frames)):
        frames[i] = 4 * i
    write_avi(path, frames, fps)
    return path


def png(path: str | Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path))


@pytest.mark.parametrize("kind", ["old demo file", "synthetic", "random backbone on real data", "real"])
def test_a_demo_or_random_backbone_model_says_so(tmp_path, cli, kind):
    """The issue: the demo model printed `MoveRight 27.73%` on a real clip without a word."""
    if kind == "real":  # weights from a file (here resnet18's, small): nothing to warn about
        weights = tmp_path / "r18.pth"
        torch.save(__import__("torchvision").models.resnet18().state_dict(), weights)
        model = write_model(tmp_path / "m.pt", backbone="resnet18", feature_dim=512, weights=str(weights),
                            data_source="folder")
    else:
        source = {"old demo file": {}, "synthetic": {"data_source": "synthetic"},
                  "random backbone on real data": {"data_source": "folder"}}[kind]
        model = write_model(tmp_path / "m.pt", **source)
    video = tiny_video(tmp_path / "v.avi", frames=8)
    code, out, err = cli(video, "--model", model)
    assert code == 0 and out.startswith("Prediction: ")
    _, out_json, err_json = cli(video, "--model", model, "--json")
    warnings = json.loads(out_json)["warnings"]
    assert err_json == ""  # with --json, the one object on stdout says it all
    if kind == "real":
        assert warnings == [] and "warning" not in err
        return
    assert len(warnings) == 1 and err.splitlines() == [f"warning: {warnings[0]}"]
    assert "labels mean" in warnings[0] and "docs/predict.md" in warnings[0]
    assert ("synthetic demo dataset with a random backbone" in warnings[0]) == (kind == "synthetic")
    assert ("random backbone (features.weights: none" in warnings[0]) == (kind != "synthetic")
    # the cause named: on real videos, the random backbone (not the data: train on real videos, it once said)
    assert ("train on real videos" in warnings[0]) == (kind == "synthetic")
    assert ("retrain with trained weights (features.weights: DEFAULT" in warnings[0]) == (kind != "synthetic")


def test_the_train_stage_records_the_data_source(tmp_path):
    """The model file says which data it learned, so predict.py can tell the demo's model."""
    import pandas as pd
    import yaml

    features = tmp_path / "data/features"
    features.mkdir(parents=True)
    videos = [f"C{c}/v_C{c}_g0{g}_c01.avi" for c in range(2) for g in range(1, 4)]
    rng = np.random.default_rng(0)
    values = rng.normal(size=(len(videos), 4, 8)).astype(np.float16)
    rows = pd.DataFrame({"video": videos, "label": [i // 3 for i in range(6)],
                         "class_name": [v.split("/")[0] for v in videos], "group": [i % 3 for i in range(6)],
                         "clip": 1})
    write_features(features, rows[["video"]], lambda i: values[i])
    rows.to_csv(tmp_path / "data/metadata.csv", index=False)
    (features / "info.json").write_text(json.dumps(
        {"num_frames": 4, "backbone": "resnet18", "weights": "none", "weights_sha256": None,
         "precision": "fp32", "resize": 64, "crop": 56, "decoder": "auto", "seed": 0}))
    (tmp_path / "data/splits").mkdir()
    rows.iloc[[0, 1, 3, 4]].to_csv(tmp_path / "data/splits/train.csv", index=False)
    rows.iloc[[2, 5]].to_csv(tmp_path / "data/splits/val.csv", index=False)
    params = committed_params()
    params["train"].update(max_epochs=1, batch_size=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run(stage_argv("train"), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    meta = torch.load(tmp_path / paths("train")["model_file"], weights_only=True)["meta"]
    assert meta["data_source"] == "synthetic"


def test_a_damaged_file_is_predicted_with_a_warning(real_clips, model_file, cli):
    damaged = real_clips["v_ApplyEyeMakeup_g01_c01.avi"]
    damaged.write_bytes(damaged.read_bytes()[:150_000])  # about half of it
    code, out, err = cli(damaged, "--model", model_file)
    assert code == 0 and out.startswith("Prediction: ")
    assert re.search(r"warning: .*v_ApplyEyeMakeup_g01_c01.avi: decoded \d+ of \d+ frames: damaged file\?", err)
    code, out, _ = cli(damaged, "--model", model_file, "--json")
    assert code == 0 and any("damaged file?" in line for line in json.loads(out)["warnings"])


def test_the_decoder_can_be_chosen_and_they_agree(real_clips, model_file, cli):
    video = real_clips["kinetics_arm_wrestling.mp4"]
    results = {}
    for decoder in cli.module.DECODERS:
        if decoder != "auto" and decoder not in __import__("actionrec.video").video.available_decoders():
            continue
        code, out, err = cli(video, "--model", model_file, "--json", "--top-k", "3", "--decoder", decoder)
        assert code == 0, err
        results[decoder] = json.loads(out)
        assert decoder == "auto" or results[decoder]["decoder"] == decoder
    assert {"auto", "pyav"} <= set(results)
    expected = {item["label"]: item["confidence"] for item in results["pyav"]["top_k"]}
    for decoder, result in results.items():
        assert {item["label"]: pytest.approx(item["confidence"], abs=0.01) for item in result["top_k"]} == expected


def test_frames_out_are_exactly_what_the_backbone_sees(real_clips, model_file, tmp_path, cli):
    from actionrec.backbone import preprocessing, resize_crop
    from actionrec.video import sample_clip

    video, folder = real_clips["kinetics_arm_wrestling.mp4"], tmp_path / "seen"
    code, out, err = cli(video, "--model", model_file, "--frames-out", folder, "--json")
    assert code == 0, err
    saved = json.loads(out)["frames"]
    assert sorted(saved) == saved == [str(p) for p in sorted(folder.iterdir())] and len(saved) == 4
    clip = sample_clip(video, 4)
    assert [int(re.search(r"frame(\d+)", name)[1]) for name in saved] == clip.indices
    meta = torch.load(model_file, weights_only=True)["meta"]
    expected = resize_crop(clip.frames, preprocessing(meta)).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(np.stack([png(path) for path in saved]), expected)
    assert expected.shape == (4, 56, 56, 3) and expected.std() > 5

    code, _, err = cli(video, "--model", model_file, "--frames-out", folder)  # not empty now
    assert code == 2 and err.startswith("error: --frames-out") and len(err.splitlines()) == 1


@pytest.mark.parametrize("degrees, corner", [(90, "TR"), (270, "BL")])
def test_frames_out_of_a_phone_video_are_upright(tmp_path, model_file, cli, degrees, corner):
    """Stored landscape with a white top-left corner, shown portrait: the frames the model sees
    are turned as a player shows them (then resized and cropped)."""
    video = rotated_video(tmp_path / "phone.mp4", degrees)
    code, _, err = cli(video, "--model", model_file, "--frames-out", tmp_path / "seen")
    assert code == 0, err
    frames = [png(path) for path in sorted((tmp_path / "seen").iterdir())]
    assert len(frames) == 4 and all(white_corner(frame) == corner for frame in frames)


def test_a_folder_gives_one_csv_row_per_file_with_one_model_load(tmp_path, model_file, cli, monkeypatch):
    folder = tmp_path / "videos"
    tiny_video(folder / "a.avi", frames=8)
    tiny_video(folder / "trip/day 2/b.AVI", frames=12)  # nested, upper-case extension
    shutil.copy(SAMPLE_VIDEOS / "short_32_frames.mp4", folder / "trip/c.mp4")
    (folder / "broken.mp4").write_text("not a video\n" * 100)
    (folder / "notes.txt").write_text("hello")
    (folder / ".DS_Store").write_bytes(b"\0" * 10)
    tiny_video(folder / ".thumbs/x.avi", frames=4)
    loads = []
    real_load = cli.module.load_predictor
    monkeypatch.setattr(cli.module, "load_predictor", lambda *a: loads.append(a) or real_load(*a))
    out_csv = tmp_path / "out.csv"
    code, out, err = cli(folder, "--csv", out_csv, "--model", model_file, "--top-k", "2")
    assert code == 0 and out == "" and len(loads) == 1
    rows = list(csv.DictReader(out_csv.open()))
    assert list(rows[0]) == ["file", "label", "confidence", "top_k", "error", "warning"]
    by_file = {row["file"]: row for row in rows}
    assert sorted(by_file) == [".DS_Store", ".thumbs/", "a.avi", "broken.mp4", "notes.txt", "trip/c.mp4",
                               "trip/day 2/b.AVI"]
    for name in ("a.avi", "trip/c.mp4", "trip/day 2/b.AVI"):
        row = by_file[name]
        ranked = [item.split(":") for item in row["top_k"].split(";")]
        assert row["error"] == "" and row["label"] in CLASSES and len(ranked) == 2
        assert ranked[0] == [row["label"], row["confidence"]] and float(ranked[0][1]) >= float(ranked[1][1])
    assert by_file["broken.mp4"]["label"] == "" and by_file["broken.mp4"]["error"]
    assert by_file["notes.txt"]["error"].startswith("skipped: not a video")
    assert by_file[".DS_Store"]["error"].startswith("skipped: hidden")
    summary = err.splitlines()[0]
    assert summary.startswith("classified 3 of 4 videos") and "1 could not be read" in summary
    assert "3 other files skipped" in summary and err.splitlines()[1].startswith("warning: ")

    code, out, err = cli(folder, "--csv", out_csv, "--model", model_file, "--json")
    assert code == 0 and err == "" and json.loads(out) | {"warnings": []} == {
        "folder": str(folder), "csv": str(out_csv), "videos": 4, "classified": 3, "failed": 1, "skipped": 3,
        "warnings": []}


def test_a_folder_without_readable_videos_is_exit_2(tmp_path, model_file, cli):
    folder, out_csv = tmp_path / "videos", tmp_path / "out.csv"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    code, out, err = cli(folder, "--csv", out_csv, "--model", model_file)
    assert code == 2 and out == "" and err.startswith("error: no video under") and not out_csv.exists()
    tiny_video(folder / "keep.avi", frames=4)
    code, _, err = cli(folder, "--csv", folder / "keep.avi", "--model", model_file)  # not over a video
    assert code == 2 and err.startswith("error: --csv") and (folder / "keep.avi").stat().st_size > 1000
    (folder / "keep.avi").unlink()
    (folder / "broken.avi").write_text("not a video\n" * 100)
    code, out, err = cli(folder, "--csv", out_csv, "--model", model_file)
    assert code == 2 and len(err.splitlines()) == 1 and "none of the 1 videos" in err
    assert [row["file"] for row in csv.DictReader(out_csv.open())] == ["broken.avi", "notes.txt"]


def test_windows_each_classify_their_own_frames(tmp_path, model_file, cli):
    video = grey_video(tmp_path / "long.avi", seconds=6)
    code, out, err = cli(video, "--model", model_file, "--window", "2", "--stride", "1", "--json",
                         "--frames-out", tmp_path / "seen", "--top-k", "2")
    assert code == 0, err
    result = json.loads(out)
    assert result["duration"] == pytest.approx(6, abs=0.1) and result["window"] == 2 and result["stride"] == 1
    timeline = result["timeline"]
    assert [(w["start"], w["end"]) for w in timeline] == [(0, 2), (1, 3), (2, 4), (3, 5), (4, 6)]
    for window in timeline:
        indices = [int(re.search(r"frame(\d+)", name)[1]) for name in window["frames"]]
        assert len(indices) == 4 and all(10 * window["start"] <= i < 10 * window["end"] for i in indices)
        greys = [png(name).mean() for name in window["frames"]]
        assert greys == pytest.approx([4 * i for i in indices], abs=3)  # the PNG is that frame
        assert window["label"] == window["top_k"][0]["label"] in CLASSES and len(window["top_k"]) == 2

    code, out, err = cli(video, "--model", model_file, "--window", "2")  # stride defaults to the window
    lines = out.splitlines()
    assert code == 0 and lines[0].endswith("6.00 s, windows of 2 s every 2 s") and len(lines) == 4
    assert [line.split()[0] for line in lines[1:]] == ["0.00-2.00", "2.00-4.00", "4.00-6.00"]
    assert all(line.split()[2] in CLASSES and line.endswith("%") for line in lines[1:])


def test_a_window_longer_than_the_video_is_the_whole_video(tmp_path, model_file, cli):
    video = grey_video(tmp_path / "short.avi", seconds=3)
    code, out, _ = cli(video, "--model", model_file, "--window", "10", "--json")
    result = json.loads(out)
    assert code == 0 and [(w["start"], w["end"]) for w in result["timeline"]] == [(0, 3)]
    assert "one window over the whole video" in result["warnings"][0]
    code, out, err = cli(video, "--model", model_file, "--window", "10")
    assert code == 0 and len(out.splitlines()) == 2 and "one window over the whole video" in err


def test_window_bounds_cover_the_end_of_the_video(cli):
    bounds = cli.module.window_bounds
    assert bounds(6.0, 2, 1, 0.04) == [(0, 2), (1, 3), (2, 4), (3, 5), (4, 6)]
    assert bounds(7.0, 2, 2, 0.04) == [(0, 2), (2, 4), (4, 6), (5, 7)]  # the last second too
    assert bounds(6.02, 2, 2, 0.04) == [(0, 2), (2, 4), (4, 6.02)]       # not for a frame
    assert bounds(1.5, 2, 1, 0.04) == [(0, 1.5)]
    assert bounds(6.0, 1, 2.5, 0.04) == [(0, 1), (2.5, 3.5), (5, 6)]     # stride > window: gaps


def test_a_window_that_cannot_be_decoded_is_an_error_in_its_place(tmp_path, model_file, cli, monkeypatch):
    """The other windows keep their labels (here a decoder failing from 2 s on)."""
    import actionrec.video

    real_sample_clip = actionrec.video.sample_clip

    def failing_late(path, num_frames, decoder="auto", start=None, end=None, *device_and_clip):
        if start >= 2:
            raise actionrec.video.VideoError("PyAV: Invalid data found when processing input")
        return real_sample_clip(path, num_frames, decoder, start, end, *device_and_clip)

    monkeypatch.setattr(actionrec.video, "sample_clip", failing_late)
    video = grey_video(tmp_path / "long.avi", seconds=4)
    code, out, err = cli(video, "--model", model_file, "--window", "1", "--json")
    timeline = json.loads(out)["timeline"]
    assert code == 0 and [("label" in w, "error" in w) for w in timeline] == [(True, False)] * 2 + [(False, True)] * 2
    code, out, _ = cli(video, "--model", model_file, "--window", "1")
    assert code == 0 and out.splitlines()[3].endswith("error: PyAV: Invalid data found when processing input")
    monkeypatch.setattr(actionrec.video, "sample_clip", lambda path, frames, decoder, start, *rest:
                        failing_late(path, frames, decoder, 2, *rest))
    code, out, err = cli(video, "--model", model_file, "--window", "1")
    assert code == 2 and out == "" and err.startswith("error: cannot read") and len(err.splitlines()) == 1
