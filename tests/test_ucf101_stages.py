"""subset + split stages on a UCF-101-shaped tree built from the official lists."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from actionrec.ucf101 import read_split_list
from tests.conftest import committed_params, stage_argv, tiny_video

CLASSES = ["ApplyEyeMakeup", "HandstandPushups", "Typing"]


@pytest.fixture(scope="module")
def ucf_tree(tmp_path_factory) -> Path:
    """data.root as real copies have it: every listed clip of CLASSES (hard links to one tiny
    video), plus a stray file that must be reported, not used."""
    root = tmp_path_factory.mktemp("UCF-101")
    source = tiny_video(root.parent / "source.avi", frames=4)
    for video in read_split_list("train", 1) + read_split_list("test", 1):
        if video.split("/")[0] in CLASSES:
            (root / video).parent.mkdir(exist_ok=True)
            os.link(source, root / video)
    (root / "Typing" / "README.txt").write_text("not a clip\n")
    return root


def run_stages(workdir: Path, root: Path, method: str) -> subprocess.CompletedProcess:
    params = committed_params()
    params["data"].update(source="ucf101", root=str(root))
    params["subset"].update(classes=CLASSES)
    params["split"].update(method=method, fold=1)
    workdir.mkdir(exist_ok=True)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in ("subset", "split"):
        result = subprocess.run(stage_argv(stage), cwd=workdir,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
    return result


def test_official_split_on_a_ucf_tree(ucf_tree, tmp_path):
    result = run_stages(tmp_path / "a", ucf_tree, "official")
    splits = {s: pd.read_csv(tmp_path / "a" / f"data/splits/{s}.csv") for s in ("train", "val", "test")}
    for part in splits.values():
        assert list(part.columns) == ["video", "label", "class_name", "group", "clip"]
    expected = {v for v in read_split_list("test", 1) if v.split("/")[0] in CLASSES}
    assert set(splits["test"]["video"]) == expected
    assert set(splits["test"]["group"]) == set(range(1, 8))
    hand = splits["train"][splits["train"]["class_name"] == "HandstandPushups"]
    assert hand["video"].str.startswith("HandstandPushups/v_HandStandPushups_g").all()
    metadata = pd.read_csv(tmp_path / "a/data/metadata.csv")
    assert "Typing/README.txt" not in set(metadata["video"]) and "split" in result.args[1]
    assert (tmp_path / "a/metrics/split.json").read_text().count('"shared_groups": 0') == 1

    run_stages(tmp_path / "b", ucf_tree, "official")
    for name in ("metadata.csv", "splits/train.csv", "splits/val.csv", "splits/test.csv"):
        assert (tmp_path / "a/data" / name).read_bytes() == (tmp_path / "b/data" / name).read_bytes()


def test_group_split_on_a_ucf_tree(ucf_tree, tmp_path):
    run_stages(tmp_path, ucf_tree, "group")
    metrics = yaml.safe_load((tmp_path / "metrics/split.json").read_text())
    assert metrics["shared_groups"] == 0
    for name, target in (("train", 0.8), ("val", 0.1), ("test", 0.1)):
        assert abs(metrics[name]["fraction"] - target) <= 0.05 and metrics[name]["classes"] == 3
