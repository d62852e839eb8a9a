"""data.source folder: scanning <root>/<Class>/..., groups from data.group_pattern, and the
split stage's checks on folder data (no decoding here: see test_folder_pipeline.py)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from actionrec.folder import scan_folder
from actionrec.errors import ParamsError, UserError
from actionrec.params import load_params
from actionrec.splits import group_split, shared_groups
from tests.conftest import committed_params, stage_argv

FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}
FILES = ["Wave/bob_1.mkv", "Wave/alice_2.MP4", "Wave/alice_1.mp4", "Wave/session 2/carol_1.MOV",
         "Wave/session 2/deep/carol_2.webm", "Wave/dan_1.m4v", "Wave/.DS_Store", "Wave/._alice_1.mp4",
         "Wave/notes.txt", "Wave/.thumbs/x.mp4", "clap/erin_1.avi", "clap/frank_1.Avi",
         "clap/gina_1.mov", "README.md", ".hidden_class/h_1.mp4"]


def make_tree(root: Path, files: list[str] = FILES) -> Path:
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")  # scanning never opens a file
    return root


def test_scan_finds_videos_sorted_with_relative_paths_and_counts_the_rest(tmp_path):
    clips, skipped = scan_folder(make_tree(tmp_path))
    assert list(clips.columns) == ["video", "class_name", "group", "clip"]
    assert clips["video"].tolist() == [
        "Wave/alice_1.mp4", "Wave/alice_2.MP4", "Wave/bob_1.mkv", "Wave/dan_1.m4v",
        "Wave/session 2/carol_1.MOV", "Wave/session 2/deep/carol_2.webm",
        "clap/erin_1.avi", "clap/frank_1.Avi", "clap/gina_1.mov"]
    assert clips["class_name"].tolist() == ["Wave"] * 6 + ["clap"] * 3
    # no pattern: each video is its own group, named by its path below the class folder
    assert clips["group"].tolist() == [v.split("/", 1)[1] for v in clips["video"]]
    assert (clips["clip"] == 1).all()
    assert skipped == {"hidden": [".hidden_class/", "Wave/.DS_Store", "Wave/._alice_1.mp4", "Wave/.thumbs/"],
                       "not_video": ["Wave/notes.txt"], "outside_class_folder": ["README.md"]}
    again, _ = scan_folder(make_tree(tmp_path / "copy", list(reversed(FILES))))
    assert again.equals(clips), "the order must not depend on creation order"


def test_linked_folders_are_followed_once(tmp_path):
    make_tree(tmp_path, ["A/s1/x.mp4", "B/y.avi"])
    (tmp_path / "A/s1/loop").symlink_to(tmp_path / "A", target_is_directory=True)
    (tmp_path / "A/linked").symlink_to(tmp_path / "B", target_is_directory=True)
    clips, _ = scan_folder(tmp_path)
    assert clips["video"].tolist() == ["A/linked/y.avi", "A/s1/x.mp4", "B/y.avi"]


def test_group_pattern_takes_the_group_from_the_path(tmp_path):
    clips, _ = scan_folder(make_tree(tmp_path), r"(?P<group>[^_/]+)_")
    assert clips["group"].tolist() == ["alice", "alice", "bob", "dan", "carol", "carol", "erin", "frank", "gina"]
    assert clips["clip"].tolist() == [1, 2, 1, 1, 1, 2, 1, 1, 1]
    by_folder, _ = scan_folder(make_tree(tmp_path / "s", ["A/s1/x.mp4", "A/s1/y.mp4", "A/s2/x.mp4"]),
                               r"^(?P<group>[^/]+)/")
    assert by_folder["group"].tolist() == ["s1", "s1", "s2"] and by_folder["clip"].tolist() == [1, 2, 1]


def test_a_file_the_pattern_misses_is_an_error_naming_it(tmp_path):
    with pytest.raises(UserError, match="finds no group in clap/erin_1.avi"):
        scan_folder(make_tree(tmp_path), r"(?P<group>[a-d][a-z]*)_")


@pytest.mark.parametrize("junk", [[], ["Empty/.DS_Store", "Empty/list.txt"]])
def test_a_class_folder_without_videos_is_a_one_line_error_naming_it(tmp_path, junk):
    (tmp_path / "Empty").mkdir()
    with pytest.raises(UserError, match="class folder Empty under .* holds no videos") as error:
        scan_folder(make_tree(tmp_path, FILES + junk))
    assert "\n" not in str(error.value)


def test_no_class_folder_is_an_error(tmp_path):
    with pytest.raises(UserError, match="no class folders"):
        scan_folder(make_tree(tmp_path, ["a.mp4"]))


def write_params(tmp_path: Path, **data) -> Path:
    params = committed_params()
    params["data"].update(data)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path / "params.yaml"


@pytest.mark.parametrize("pattern,message", [
    ("(?P<group>[^_]+", "is not a valid regular expression"),
    ("([^_]+)_", r"has no named group \(\?P<group>"),
    (12, "must be a regular expression"),
])
def test_bad_group_patterns_are_one_line_params_errors(tmp_path, pattern, message):
    with pytest.raises(ParamsError, match=message) as error:
        load_params("data", path=write_params(tmp_path, source="folder", group_pattern=pattern))
    assert "\n" not in str(error.value)


def test_folder_params_are_accepted(tmp_path):
    data = load_params("data", path=write_params(tmp_path, source="folder", group_pattern=None))["data"]
    assert data["source"] == "folder" and data["group_pattern"] == ""


def test_group_split_with_string_groups_shares_none(tmp_path):
    rows = [{"video": f"{c}/{g}_{i}.mp4", "label": n, "class_name": c, "group": g, "clip": i}
            for n, c in enumerate(["a", "b"]) for g in ["NA", "None", "alice", "bob", "10", "9"]
            for i in (1, 2)]
    subset = pd.DataFrame(rows)
    split = group_split(subset, FRACTIONS, seed=0)
    assert set(split) == {"train", "val", "test"} and shared_groups(subset, split) == 0


def run_split(workdir: Path, metadata: pd.DataFrame, **data) -> subprocess.CompletedProcess:
    write_params(workdir, **data)
    (workdir / "data").mkdir(exist_ok=True)
    metadata.to_csv(workdir / "data/metadata.csv", index=False)
    return subprocess.run(stage_argv("split"), cwd=workdir, capture_output=True, text=True, timeout=120)


def test_split_stage_on_folder_data(tmp_path):
    clips, _ = scan_folder(make_tree(tmp_path / "videos", [f"{c}/{g}_{i}.mp4" for c in ("a", "b")
                                                          for g in ("NA", "null", "x", "y") for i in (1, 2)]),
                           r"(?P<group>[^_/]+)_")
    metadata = clips.assign(label=(clips["class_name"] == "b").astype(int))

    result = run_split(tmp_path, metadata, source="folder", root="videos", group_pattern="(?P<group>[^_/]+)_")
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
    parts = {s: pd.read_csv(tmp_path / f"data/splits/{s}.csv", keep_default_na=False) for s in FRACTIONS}
    assert sum(len(p) for p in parts.values()) == 16  # no row lost to a group read as NaN
    seen = [set(zip(p["class_name"], p["group"].astype(str))) for p in parts.values()]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])

    result = run_split(tmp_path, metadata, source="folder", root="videos", group_pattern="")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1 and "leak between splits" in warnings[0] and "data.group_pattern" in warnings[0]

    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["split"]["method"] = "official"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run(stage_argv("split"), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: split.method official") and "data.source: ucf101" in result.stderr
