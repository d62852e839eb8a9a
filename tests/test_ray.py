"""The Ray engine (runtime.engine: ray): docs/scale.md's cluster steps with token authentication, a local
Ray on 127.0.0.1 only, workers that die retried a bounded number of times, and a stage that never hangs.
(tests/test_pipeline.py checks that a local Ray gives the local engine's features, bit for bit.) The tests
that need a cluster share one head (the `head` fixture): a Ray start costs seconds."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from actionrec.engine import CONNECT_S, RETRIES
from tests.conftest import ROOT, read_features, stage_argv
from tests.test_features_stage import distinct_videos, run_stage, stored_features, write_params, write_video_list

pytestmark = pytest.mark.pipeline
RAY = str(Path(sys.executable).parent / "ray")
# what Ray and logging print at error level: glog's "[date time E pid tid]", logging's "ERROR", a traceback
ERROR_LINE = re.compile(r"^\[[^]]* E \d+ \d+\]|\bERROR\b|^Traceback", re.M)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def title(process: psutil.Process) -> str:
    """A process's command line; Ray sets its workers' to what they run (ray::MapWorker(...).submit)."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def start_stage(tmp_path: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(stage_argv("features"), cwd=tmp_path, env=env, text=True, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # Ray's signals stay in its group


def dataset(tmp_path: Path, count: int, **features) -> list[str]:
    videos = distinct_videos(tmp_path / "videos", count, step=5)
    write_video_list(tmp_path, videos)
    write_params(tmp_path, tmp_path / "videos", **{"num_frames": 2, "resize": 32, "crop": 32, "batch_frames": 4,
                                                   "engine": "ray", **features})
    return videos


@pytest.fixture(scope="module")
def head(tmp_path_factory) -> Iterator[tuple[dict, psutil.Process]]:
    """docs/scale.md's cluster steps on this machine: a token, `ray start --head` on a free port, all on
    127.0.0.1; yields the stage's environment (RAY_AUTH_MODE=token, RAY_ADDRESS) and the head's process.
    HOME is the test's own, so the token (~/.ray/auth_token) is too. Ends this head alone, also on a
    failure: `ray stop` would stop every Ray of the machine, other tests' among them."""
    home = tmp_path_factory.mktemp("head")
    env = dict(os.environ, HOME=str(home), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    env.pop("RAY_ADDRESS", None)
    subprocess.run([RAY, "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=60)
    port, log = free_port(), home / "head.log"
    ray_dir = tempfile.mkdtemp(prefix="ray")  # short: a socket's path holds at most 107 bytes
    with open(log, "w") as out:
        process = subprocess.Popen([RAY, "start", "--head", f"--port={port}", f"--temp-dir={ray_dir}", "--block",
                                    "--disable-usage-stats", "--include-dashboard=false"],
                                   env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while "Ray runtime started" not in log.read_text():
            assert process.poll() is None and time.time() < deadline, log.read_text()
            time.sleep(0.2)
        assert "Token authentication is enabled for this Ray cluster" in log.read_text()
        yield dict(env, RAY_AUTH_MODE="token", RAY_ADDRESS=f"127.0.0.1:{port}"), psutil.Process(process.pid)
    finally:  # SIGKILL: `ray start --block` takes half a minute over SIGTERM
        ray_processes = psutil.Process(process.pid).children(recursive=True) if process.poll() is None else []
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
        for leftover in ray_processes:
            with contextlib.suppress(psutil.Error):
                leftover.kill()
        shutil.rmtree(ray_dir, ignore_errors=True)


def test_docs_cluster_steps_with_token_authentication_give_the_local_engines_features(head, tmp_path):
    """The stage on the head with RAY_AUTH_MODE and RAY_ADDRESS set, as docs/scale.md says: the same bytes as
    the local engine, a start-up line that says Ray and its resources, no error-level line."""
    docs = (ROOT / "docs/scale.md").read_text()
    for step in ("ray get-auth-token --generate", "ray start --head --port=6379",
                 "RAY_AUTH_MODE=token .venv/bin/ray start --address=<head>:6379",
                 "RAY_AUTH_MODE=token RAY_ADDRESS=<head>:6379 dvc repro", "ray stop"):
        assert step in docs, step
    env, _ = head
    videos = dataset(tmp_path, 6)
    (tmp_path / "videos/B").mkdir()
    (tmp_path / "videos/B/broken.avi").write_text("not a video\n" * 100)
    write_video_list(tmp_path, [*videos, "B/broken.avi"])
    write_params(tmp_path, tmp_path / "videos", num_frames=2, resize=32, crop=32, batch_frames=4, engine="ray",
                 max_failed_fraction=0.5)
    stage = start_stage(tmp_path, env)
    out, err = stage.communicate(timeout=300)
    assert stage.returncode == 0, err
    assert f"Ray 2.60.0 at {env['RAY_ADDRESS']}: " in out and " CPU(s), 0 GPU(s), " in out, out
    assert not ERROR_LINE.search(err), err
    failed = pd.read_csv(tmp_path / "metrics/failed_videos.csv")  # the decoder's own words, no path of this machine
    assert list(failed["video"]) == ["B/broken.avi"] and "not a video" in failed["error"][0]
    on_ray = {p.name: p.read_bytes() for p in (tmp_path / "data/features/shards").iterdir()}

    shutil.rmtree(tmp_path / "data")  # the local engine, from nothing
    write_video_list(tmp_path, [*videos, "B/broken.avi"])
    write_params(tmp_path, tmp_path / "videos", num_frames=2, resize=32, crop=32, batch_frames=4, engine="local",
                 max_failed_fraction=0.5)
    assert run_stage(tmp_path).returncode == 0
    assert {p.name: p.read_bytes() for p in (tmp_path / "data/features/shards").iterdir()} == on_ray


def test_a_killed_ray_worker_is_retried_and_no_video_is_extracted_twice(head, tmp_path):
    """SIGKILL the backbone actor mid-run: the stage runs the videos not done yet again; every video gets
    features, each store entry is written once, a broken file is a failed_videos row."""
    env, ray_head = head
    root = tmp_path / "videos"
    videos = dataset(tmp_path, 40)
    (root / "B").mkdir()
    (root / "B/broken.avi").write_text("not a video\n" * 100)
    write_video_list(tmp_path, [*videos, "B/broken.avi"])
    write_params(tmp_path, root, num_frames=2, resize=32, crop=32, batch_frames=4, engine="ray", max_failed_fraction=0.5)
    stage = start_stage(tmp_path, env)
    deadline = time.time() + 180
    while not stored_features(tmp_path) and time.time() < deadline:  # the actors are at work
        assert stage.poll() is None, "the stage ended before any video was stored"
        time.sleep(0.02)
    actor = next(p for p in ray_head.children(recursive=True) if "_Embed" in title(p))
    written = {path: path.stat().st_mtime_ns for path in stored_features(tmp_path)}
    actor.kill()
    out, err = stage.communicate(timeout=240)
    assert stage.returncode == 0, err
    assert 0 < len(written) < len(videos), f"killed too late: {len(written)} of {len(videos)} videos were done"
    assert f"(retry 1 of {RETRIES})" in err and "(retry 2" not in err
    assert f"extracted {len(videos)} videos" in out and "reused 0 videos" in out
    failed = pd.read_csv(tmp_path / "metrics/failed_videos.csv")
    assert list(failed["video"]) == ["B/broken.avi"] and "not a video" in failed["error"][0]
    stored = stored_features(tmp_path)
    assert len(stored) == len(videos)
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in written.items())  # none written twice
    assert read_features(tmp_path / "data/features").shape == (len(videos), 2, 2048)


def test_a_worker_that_dies_on_every_run_ends_the_stage_in_one_line_naming_its_batch(head, tmp_path):
    """Kill the backbone actor whenever it embeds a batch (as an out-of-memory or native crash on
    those videos would): after RETRIES runs again, one line that names the batch; Ray's own defaults
    restarted it without end."""
    env, ray_head = head
    videos = dataset(tmp_path, 12, backbone="resnet18", resize=112, crop=112, batch_frames=16)  # 8 videos a batch
    stage = start_stage(tmp_path, env)
    killed, started = set(), time.time()
    while stage.poll() is None and time.time() - started < 300:
        for process in ray_head.children(recursive=True):
            if "_Embed)).submit" in title(process) and process.pid not in killed:
                time.sleep(0.1)  # in our code by then (a batch takes longer), which names its videos
                process.kill()
                killed.add(process.pid)
        time.sleep(0.01)
    out, err = stage.communicate(timeout=60)
    assert stage.returncode == 2 and len(killed) == RETRIES + 1, (killed, err)
    error = err.strip().splitlines()[-1]
    assert error.startswith(f"error: Ray's workers died {RETRIES + 1} times (ActorDiedError: ")
    named = re.search(r"each time holding the batch of (.*): try them with runtime.engine: local", error).group(1)
    batch = named.split(", ")
    assert 0 < len(batch) <= 8 and set(batch) <= {f"videos/{video}" for video in videos}, error
    assert not stored_features(tmp_path) and "Traceback" not in err


def test_an_address_where_no_ray_answers_is_one_line_within_a_minute_and_sigterm_ends_the_wait(tmp_path):
    """Nothing listens: one line at once. A port that accepts and never answers (Ray retried it for
    over 10 minutes, deaf to SIGTERM): one line after CONNECT_S; a SIGTERM meanwhile ends the stage at once."""
    dataset(tmp_path, 2)
    closed = free_port()
    refused = subprocess.run(stage_argv("features"), cwd=tmp_path, capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, RAY_ADDRESS=f"127.0.0.1:{closed}"))
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1] == (
        f"error: no Ray cluster answers at RAY_ADDRESS=127.0.0.1:{closed} (Connection refused): start it "
        "(docs/scale.md), or unset RAY_ADDRESS to run a local Ray")

    listeners, accepted = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)], [[], []]
    for listener, connections in zip(listeners, accepted):
        threading.Thread(target=lambda listener=listener, connections=connections:
                         [connections.append(listener.accept()) for _ in iter(int, 1)], daemon=True).start()
    envs = [dict(os.environ, RAY_ADDRESS=f"127.0.0.1:{listener.getsockname()[1]}",
                 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0") for listener in listeners]  # Ray keeps 127.0.0.1 as given
    stopped, waiting, started = start_stage(tmp_path, envs[0]), start_stage(tmp_path, envs[1]), time.time()
    while len(accepted[0]) < 2 and time.time() - started < 60:  # the stage's probe, then Ray's connection
        time.sleep(0.1)
    time.sleep(1)
    stopped.send_signal(signal.SIGTERM)
    signalled = time.time()
    _, err = stopped.communicate(timeout=30)
    assert time.time() - signalled < 5 and stopped.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1] == "features: stopped by SIGTERM; the videos done so far are stored"
    _, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 2 and CONNECT_S <= time.time() - started < 60, err
    assert err.strip().splitlines()[-1].startswith(
        f"error: the Ray cluster at RAY_ADDRESS={envs[1]['RAY_ADDRESS']} did not answer within {CONNECT_S} s: ")
    for listener in listeners:
        listener.close()


def test_a_local_ray_listens_on_127_0_0_1_only_and_ctrl_c_ends_it_with_its_workers(tmp_path):
    """No RAY_ADDRESS: every socket Ray's processes listen on is on 127.0.0.1 (not the machine's
    address: ShadowRay, CVE-2023-48022), its start says so, no error-level line; Ctrl-C mid-run ends
    the stage and every Ray process it started."""
    dataset(tmp_path, 40)
    stage = start_stage(tmp_path, {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    deadline = time.time() + 180
    while not stored_features(tmp_path) and time.time() < deadline:
        assert stage.poll() is None, stage.communicate()
        time.sleep(0.02)
    ray_processes = psutil.Process(stage.pid).children(recursive=True)
    addresses = set()
    for process in ray_processes:
        try:
            addresses |= {c.laddr.ip for c in process.net_connections("inet") if c.status == psutil.CONN_LISTEN}
        except psutil.Error:
            pass
    assert addresses and addresses <= {"127.0.0.1", "::ffff:127.0.0.1"}, addresses
    stage.send_signal(signal.SIGINT)
    signalled = time.time()
    out, err = stage.communicate(timeout=60)
    assert time.time() - signalled < 10 and stage.returncode == 128 + signal.SIGINT, err
    assert "Ray 2.60.0 at 127.0.0.1 (a local Ray): " in out and not ERROR_LINE.search(err), err
    assert err.strip().splitlines()[-1] == "features: stopped by SIGINT; the videos done so far are stored"
    time.sleep(1)
    assert not [p for p in ray_processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_ray_decode_and_embed_give_the_local_engines_features_for_a_video_backbone(tmp_path, monkeypatch):
    """engine._decode and _Embed as Ray calls them, without Ray (its tracker bookkeeping off): a video backbone's
    uint8 clips [videos, S, L, 3, crop, crop], zeros for a file that does not decode, and the local engine's features."""
    from actionrec import engine
    from actionrec.backbone import preprocessing
    from actionrec.extract import iter_features

    monkeypatch.setattr(engine, "_holding", lambda tracker, indices: contextlib.nullcontext())
    videos = [str(tmp_path / "videos" / video) for video in distinct_videos(tmp_path / "videos", 3, step=5)]
    (tmp_path / "broken.avi").write_text("not a video\n" * 100)
    videos.append(str(tmp_path / "broken.avi"))
    cfg = {"backbone": "r3d_18", "weights": "none", "seed": 0, "resize": 40, "crop": 32, "interpolation": "auto",
           "clip_frames": 4, "num_frames": 2, "precision": "fp32", "device": "cpu", "batch_frames": 8,
           "decoder": "auto", "num_workers": 0}
    batch = engine._decode({"index": np.arange(4), "path": np.array(videos)}, 2, preprocessing(cfg), "auto", None)
    assert batch["frames"].shape == (4, 2, 4, 3, 32, 32) and batch["frames"].dtype == np.uint8
    assert batch["frames"][:3].any(axis=(1, 2, 3, 4, 5)).all() and not batch["frames"][3].any()
    assert "not a video" in batch["error"][3] and not any(batch["error"][:3])
    actor = engine._Embed(cfg, 0, None)
    on_ray = actor(batch)["feats"]
    local = {index: feats for index, feats, *_ in iter_features(actor.model, videos, cfg)}  # the same backbone
    assert on_ray.shape == (4, 2, 512) and local[3] is None
    np.testing.assert_array_equal(on_ray[:3], np.stack([local[i] for i in range(3)]))
    assert not on_ray[3].any()
