"""The features stage on a dataset with broken and odd videos, run as users run it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from tests.conftest import ROOT, SAMPLE_VIDEOS, tiny_video

TINY_FEATURES = {"num_frames": 4, "resize": 64, "crop": 56, "batch_frames": 8, "num_workers": 1}


def make_dataset(tmp_path: Path) -> Path:
    """data.root with good clips and every kind of bad file, and split CSVs naming them all."""
    root = tmp_path / "videos"
    good = [tiny_video(root / f"Good/v_Good_g0{g}_c01.avi", frames=12) for g in range(1, 7)]
    odd = {
        "Odd/v_Odd_g01_c01.avi": lambda p: tiny_video(p, frames=2),                   # 2 frames
        "Odd/v_Odd_g02_c01.avi": lambda p: tiny_video(p, frames=3, width=1920, height=1080),
        "Odd/v_Odd_g03_c01.avi": lambda p: p.write_bytes(                            # truncated
            (SAMPLE_VIDEOS / "v_ApplyEyeMakeup_g01_c01.avi").read_bytes()[:150_000]),
        "Bad/v_Bad_g01_c01.avi": lambda p: p.write_bytes(b""),                        # zero bytes
        "Bad/v_Bad_g02_c01.avi": lambda p: p.write_text("not a video\n" * 500),      # text
    }
    for rel, make in odd.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        make(root / rel)
    videos = [str(p.relative_to(root)) for p in good] + list(odd)
    rows = pd.DataFrame({"video": videos, "label": 0, "class_name": "x", "group": range(len(videos)), "clip": 1})
    splits = tmp_path / "data" / "splits"
    splits.mkdir(parents=True)
    for name, part in (("train", rows.iloc[:7]), ("val", rows.iloc[7:9]), ("test", rows.iloc[9:])):
        part.to_csv(splits / f"{name}.csv", index=False)
    return root


def write_params(tmp_path: Path, root: Path, max_failed_fraction: float) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["root"] = str(root)
    params["features"].update(TINY_FEATURES, max_failed_fraction=max_failed_fraction)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))


def run_stage(tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "stages/features.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=dict(os.environ))


def test_broken_videos_are_listed_and_decodable_ones_get_features(tmp_path):
    root = make_dataset(tmp_path)
    write_params(tmp_path, root, max_failed_fraction=0.0)
    refused = run_stage(tmp_path)
    assert refused.returncode == 2
    error = refused.stderr.strip().splitlines()[-1]
    assert error.startswith("error: 2 of 11 videos could not be decoded") and "failed_videos.csv" in error
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "data/features").exists()  # nothing DVC could take as complete
    assert list((tmp_path / "data/features-partial").rglob("chunk_*.npz"))  # finished work kept

    write_params(tmp_path, root, max_failed_fraction=0.5)
    result = run_stage(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "resuming: 11 videos already done" in result.stdout
    failed = pd.read_csv(tmp_path / "metrics/failed_videos.csv")
    assert list(failed.columns) == ["video", "error"]
    assert sorted(failed["video"]) == ["Bad/v_Bad_g01_c01.avi", "Bad/v_Bad_g02_c01.avi"]
    kept = pd.concat(pd.read_csv(tmp_path / f"data/features/{s}.csv") for s in ("train", "val", "test"))
    assert len(kept) == 9 and not kept["video"].str.startswith("Bad/").any()
    for split in ("train", "val", "test"):
        feats = np.load(tmp_path / f"data/features/{split}.npy")
        assert feats.shape[1:] == (4, 2048) and feats.dtype == np.float16
        assert len(feats) == len(pd.read_csv(tmp_path / f"data/features/{split}.csv"))
        assert np.isfinite(feats.astype(np.float32)).all() and (np.abs(feats.astype(np.float32)).sum(axis=(1, 2)) > 0).all()
    assert not list((tmp_path / "data/features-partial").rglob("chunk_*.npz"))  # cleaned up when done
