"""End to end on your own videos: a class-per-folder tree of real tiny videos in mixed
containers, `dvc repro` and `dvc exp run -S data.group_pattern=...` on tiny params, predict.py."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import MAKE, copy_repo, git, run, stage_argv, tiny_video, tool_env

pytestmark = pytest.mark.pipeline

TINY = {
    # random weights on real-looking videos: refused unless asked for, and asked for here (speed)
    "data": {"source": "folder", "root": "videos", "group_pattern": "", "allow_random_weights": True},
    "subset": {"num_classes": 3},
    "features": {"num_frames": 4, "resize": 64, "crop": 56},
    "runtime": {"batch_frames": 16, "compile": False},
    "train": {"hidden_size": 8, "max_epochs": 4, "patience": 2},
}
# names as people record them: a person per prefix, a sub-folder, upper-case extensions
VIDEOS = ["clap/alice_1.mp4", "clap/alice_2.MP4", "clap/bob_1.mkv", "clap/carol_1.mov", "clap/carol_2.avi",
          "jump rope/session-a/dave_1.webm", "jump rope/session-a/dave_2.m4v", "jump rope/erin_1.AVI",
          "jump rope/frank_1.mp4", "wave/gina_1.mp4", "wave/hank_1.MOV", "wave/hank_2.mkv", "wave/ivan_1.avi"]
JUNK = ["wave/.DS_Store", "wave/._gina_1.mp4", "wave/notes.txt", "empty/.DS_Store"]
CONTAINERS = {".mp4": ("mp4", "mpeg4"), ".m4v": ("mp4", "mpeg4"), ".mov": ("mov", "mpeg4"),
              ".mkv": ("matroska", "mpeg4"), ".webm": ("webm", "libvpx")}
PATTERN = "(?P<group>[^_/]+)_"


def write_video(path: Path, frames: int, level: int) -> None:
    """A tiny real video in the container its extension names (AVI: conftest.tiny_video)."""
    if path.suffix.lower() == ".avi":
        tiny_video(path, frames)
        return
    container_format, codec = CONTAINERS[path.suffix.lower()]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            frame = np.full((48, 64, 3), (level + 20 * i) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_repo(dest: Path) -> Path:
    """A git + DVC copy of the repository's sources with tiny folder params and a video tree."""
    copy_repo(dest, TINY)
    for index, rel in enumerate(VIDEOS):
        write_video(dest / "videos" / rel, frames=6, level=40 * (index % 5))
    for rel in JUNK:
        (dest / "videos" / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / "videos" / rel).write_text("not a video\n")
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "tiny folder data")
    return dest


def split_groups(repo: Path) -> dict[str, set]:
    parts = {s: pd.read_csv(repo / f"data/splits/{s}.csv", keep_default_na=False) for s in ("train", "val", "test")}
    return {s: set(zip(p["class_name"], p["group"].astype(str))) for s, p in parts.items()}


def test_own_videos_end_to_end(tmp_path):
    repo = make_repo(tmp_path)

    # a class folder without videos: `make repro` stops with one line naming it before DVC runs (DVC does
    # not see an empty folder), and `dvc repro` in the subset stage (it once only warned there first)
    for command in (MAKE + ["repro"], ["dvc", "repro"]):
        result = subprocess.run(command, cwd=repo, env=tool_env(), capture_output=True, text=True, timeout=600)
        said = (result.stdout + result.stderr).splitlines()
        assert result.returncode != 0 and [line for line in said if line.startswith(("error: ", "warning: "))] == [
            "error: class folder empty under videos holds no videos (mp4, avi, mkv, mov, webm, m4v): add videos or "
            "remove the folder"], said
        assert ("Running stage" in result.stdout) == (command[0] == "dvc"), said
    stage = subprocess.run(stage_argv("subset"), cwd=repo, capture_output=True, text=True, timeout=120)
    assert stage.returncode == 2 and stage.stderr.count("\n") == 1 and stage.stderr.startswith("error: ")

    shutil.rmtree(repo / "videos/empty")
    run(["git", "-c", "user.name=test", "-c", "user.email=test@localhost", "commit", "-qam", "no empty"], repo)
    out = run(["dvc", "repro"], repo)
    for name in ("subset", "split", "features", "train", "evaluate"):
        assert f"Running stage '{name}'" in out
    assert len([line for line in out.splitlines() if "data.group_pattern is not set" in line]) == 1
    metadata = pd.read_csv(repo / "data/metadata.csv")
    assert list(metadata.columns) == ["video", "label", "class_name", "group", "clip"]
    assert sorted(metadata["video"]) == sorted(VIDEOS)
    assert dict(zip(metadata["class_name"], metadata["label"])) == {"clap": 0, "jump rope": 1, "wave": 2}
    subset = json.loads((repo / "metrics/subset.json").read_text())
    assert (subset["videos"], subset["skipped_hidden"], subset["skipped_not_video"]) == (13, 2, 1)
    assert json.loads((repo / "metrics/features.json").read_text())["failed_videos"] == 0
    assert 0.0 <= json.loads((repo / "metrics/evaluate.json").read_text())["test_accuracy"] <= 1.0

    # predict.py on a video of the tree, with the model that repro trained
    video = repo / "videos/jump rope/session-a/dave_1.webm"
    result = subprocess.run([sys.executable, "predict.py", str(video), "--json"], cwd=repo,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["label"] in {"clap", "jump rope", "wave"}

    # the README's way to set the pattern: whole people go to one split, and no warning
    # (quoted inside: -S values follow Hydra's override grammar, where ( and [ are special)
    out = run(["dvc", "exp", "run", "-S", f"data.group_pattern='{PATTERN}'"], repo)
    assert "data.group_pattern is not set" not in out and "Running stage 'split'" in out
    assert yaml.safe_load((repo / "params.yaml").read_text())["data"]["group_pattern"] == PATTERN
    assert json.loads((repo / "metrics/split.json").read_text())["shared_groups"] == 0
    groups = split_groups(repo)
    assert not (groups["train"] & groups["val"] or groups["train"] & groups["test"] or groups["val"] & groups["test"])
    assert {g for s in groups.values() for _, g in s} == set("alice bob carol dave erin frank gina hank ivan".split())
