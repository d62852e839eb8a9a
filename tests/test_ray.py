"""The Ray engine (runtime.engine: ray) on a local Ray: a killed worker costs nothing.
(tests/test_pipeline.py checks that it gives the local engine's features, bit for bit.)"""
from __future__ import annotations

import subprocess
import time

import pandas as pd
import psutil
import pytest

from tests.conftest import read_features, stage_argv
from tests.test_features_stage import distinct_videos, stored_features, write_params, write_video_list


@pytest.mark.pipeline
def test_a_killed_ray_worker_is_retried_and_no_video_is_extracted_twice(tmp_path):
    """SIGKILL the backbone actor mid-run: Ray restarts it and retries what it held; every
    video gets features, each store entry is written once, a broken file is a failed_videos row."""
    root = tmp_path / "videos"
    videos = distinct_videos(root, 40, step=5)
    (root / "B").mkdir()
    (root / "B/broken.avi").write_text("not a video\n" * 100)
    write_video_list(tmp_path, [*videos, "B/broken.avi"])
    write_params(tmp_path, root, num_frames=2, resize=32, crop=32, batch_frames=4, engine="ray",
                 max_failed_fraction=0.5)
    stage = subprocess.Popen(stage_argv("features"), cwd=tmp_path, text=True, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # Ray's signals stay there
    deadline = time.time() + 180
    while not stored_features(tmp_path) and time.time() < deadline:  # the actors are at work
        assert stage.poll() is None, "the stage ended before any video was stored"
        time.sleep(0.02)
    actor = next(p for p in psutil.Process(stage.pid).children(recursive=True)
                 if "_Embed" in " ".join(p.cmdline()))
    written = {path: path.stat().st_mtime_ns for path in stored_features(tmp_path)}
    actor.kill()  # SIGKILL: Ray restarts the actor and retries what it held
    out, err = stage.communicate(timeout=240)
    assert stage.returncode == 0, err
    assert 0 < len(written) < len(videos), f"killed too late: {len(written)} of {len(videos)} videos were done"
    assert f"extracted {len(videos)} videos" in out and "reused 0 videos" in out
    failed = pd.read_csv(tmp_path / "metrics/failed_videos.csv")
    assert list(failed["video"]) == ["B/broken.avi"] and "not a video" in failed["error"][0]
    stored = stored_features(tmp_path)
    assert len(stored) == len(videos)
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in written.items())  # none written twice
    assert read_features(tmp_path / "data/features").shape == (len(videos), 2, 2048)
