"""Shared fixtures: tiny generated videos and the real sample clips in tests/data/."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from actionrec.synthetic import write_avi

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_VIDEOS = ROOT / "tests" / "data"  # real clips recorded outside this project (README there)
REAL_CLIPS = ("v_ApplyEyeMakeup_g01_c01.avi", "kinetics_arm_wrestling.mp4", "short_32_frames.mp4")
# What `dvc exp run` applies to the workspace: tests read these as committed, so that `make
# test` passes whatever experiment the workspace holds.
EXPERIMENT_RESULTS = ("params.yaml", "dvc.lock", "metrics/", "plots/")


def committed(rel: str, repo: Path = ROOT) -> bytes | None:
    """The file rel as committed at HEAD of repo; None where HEAD has no such file."""
    result = subprocess.run(["git", "show", f"HEAD:{rel}"], cwd=repo, capture_output=True)
    return result.stdout if result.returncode == 0 else None


def committed_params(repo: Path = ROOT) -> dict:
    """params.yaml as committed, whatever experiment is applied to the workspace."""
    return yaml.safe_load(committed("params.yaml", repo))


def tiny_video(path: Path, frames: int, width: int = 64, height: int = 48, fps: int = 25) -> Path:
    """An MPEG-4 AVI whose frame i is filled with grey level 10 * i (so frames are tellable)."""
    data = np.zeros((frames, height, width, 3), np.uint8)
    for i in range(frames):
        data[i] = min(10 * i, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_avi(path, data, fps)
    return path


@pytest.fixture
def real_clips(tmp_path: Path) -> dict[str, Path]:
    """The three real clips, copied into the test's own folder so that tests may alter them."""
    out = {}
    for name in REAL_CLIPS:
        out[name] = tmp_path / name
        shutil.copy(SAMPLE_VIDEOS / name, out[name])
    return out
