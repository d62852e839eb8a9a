"""End to end: the real `dvc repro` and `dvc exp run` on tiny params, in a temp copy of the repo."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "synthesize": {"num_classes": 3, "groups_per_class": 3, "clips_per_group": 2, "min_seconds": 0.6,
                   "max_seconds": 1.0, "fps": 10, "width": 64, "height": 48},
    "subset": {"num_classes": 3},
    "features": {"num_frames": 4, "resize": 64, "crop": 56, "batch_frames": 16},
    "train": {"hidden_size": 8, "max_epochs": 4, "patience": 2},
}


def tool_env() -> dict:
    """The venv's dvc and python first; a git identity, which `dvc exp` commits need."""
    identity = {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
                for what, value in (("NAME", "test"), ("EMAIL", "test@localhost"))}
    return dict(os.environ, **identity,
                PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def run(args: list[str], cwd: Path) -> str:
    env = tool_env()
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git + DVC copy of this repository's tracked files, with tiny params."""
    dest = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\n")
    for rel in filter(None, files):
        if (ROOT / rel).is_file() and not rel.startswith(("data/", "models/")):  # outputs, not sources
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]
    run(["git", "init", "-q", "-b", "main"], dest)
    run(git + ["add", "-A"], dest)
    run(git + ["commit", "-qm", "tiny"], dest)
    return dest


def read_metrics(repo: Path) -> dict:
    return {name: json.loads((repo / "metrics" / name).read_text())
            for name in ("split.json", "features.json", "train.json", "evaluate.json")}


def test_repro_end_to_end_is_deterministic_and_experiments_reuse_features(repo):
    out = run(["dvc", "repro"], repo)
    for stage in ("synthesize", "subset", "split", "features", "train", "evaluate"):
        assert f"Running stage '{stage}'" in out
    metadata = pd.read_csv(repo / "data/metadata.csv")
    assert {"video", "label", "class_name", "group", "clip"} <= set(metadata.columns)
    assert sorted(metadata["label"].unique()) == [0, 1, 2]
    first = read_metrics(repo)
    assert first["split.json"]["shared_groups"] == 0
    assert first["features.json"]["failed_videos"] == 0
    features = np.load(repo / "data/features/train.npy")
    assert features.dtype == np.float16 and features.shape[1:] == (4, 2048)
    assert len(features) == len(pd.read_csv(repo / "data/features/train.csv"))
    assert 0.0 <= first["evaluate.json"]["test_accuracy"] <= 1.0
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repo)
    assert (repo / "plots/confusion_test.csv").read_text().startswith("actual,predicted")
    assert (repo / "metrics/failed_videos.csv").read_text().strip() == "video,error"

    run(["dvc", "repro", "-f"], repo)
    assert read_metrics(repo) == first, "a forced re-run changed the metrics"
    assert np.array_equal(np.load(repo / "data/features/train.npy"), features)

    run(["git", "-c", "user.name=test", "-c", "user.email=test@localhost", "commit", "-qam", "repro"], repo)
    out = run(["dvc", "exp", "run", "-S", "train.lr=0.003"], repo)
    assert "Running stage 'train'" in out and "Running stage 'evaluate'" in out
    assert "Running stage 'features'" not in out and "Stage 'features' didn't change" in out
    shown = run(["dvc", "exp", "show", "--no-pager", "--csv"], repo)
    assert "0.003" in shown and "test_accuracy" in shown


def test_sigkill_during_features_then_repro_completes(repo):
    """Kill `dvc repro` and its stage with SIGKILL mid-features: the next repro completes and
    `dvc status` is clean afterwards."""
    import signal
    import time

    env = tool_env()
    partial = repo / "data/features-partial"
    shutil.rmtree(partial, ignore_errors=True)
    proc = subprocess.Popen(["dvc", "repro", "-f", "-s", "features"], cwd=repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while not partial.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the stage finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    run(["dvc", "repro"], repo)
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repo)


@pytest.mark.parametrize("head", ["lstm", "gru", "transformer", "mean"])
def test_every_head_trains_evaluates_and_predicts(repo, head):
    out = run(["dvc", "exp", "run", "-S", f"train.head={head}"], repo)
    assert "Running stage 'features'" not in out
    checkpoint = torch.load(repo / "models/lstm.pt", weights_only=True)
    assert checkpoint["meta"]["head"] == head
    assert checkpoint["meta"]["temporal_centering"] == (head != "mean")  # the mean head never centres
    metrics = read_metrics(repo)
    assert 0.0 <= metrics["evaluate.json"]["test_accuracy"] <= 1.0
    assert metrics["train.json"]["epochs_run"] >= 1
    video = repo / "data/synthetic/UCF-101" / pd.read_csv(repo / "data/splits/test.csv")["video"].iloc[0]
    result = subprocess.run([sys.executable, str(repo / "predict.py"), str(video), "--json", "--top-k", "2"],
                            cwd=repo, env=tool_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    prediction = json.loads(result.stdout)
    assert prediction["label"] in checkpoint["meta"]["class_names"] and len(prediction["top_k"]) == 2


def test_compare_runs_heads_x_seeds_through_the_dvc_queue(repo):
    """`python -m actionrec.compare` as `make compare` runs it, on 2 heads x 2 seeds."""
    out = run([sys.executable, "-m", "actionrec.compare", "--heads", "mean,gru", "--seeds", "0,1",
               "--timeout", "900", "--out", "compare.md"], repo)
    table = (repo / "compare.md").read_text()
    rows = {line.split("|")[1].strip(): line.split("|") for line in table.splitlines() if line.startswith("| ")}
    assert set(rows) == {"head", "mean", "gru"}
    for head in ("mean", "gru"):
        assert rows[head][4].strip() == "2 (0,1)"
        accuracy, spread = (float(v) for v in rows[head][2].split("±"))
        assert 0 <= accuracy <= 1 and spread >= 0
    assert "test videos, so one video =" in table and "queued 4 experiments" in out
    assert "Success" in run(["dvc", "queue", "status"], repo)


def test_compare_restarts_a_lost_queue_worker(repo, monkeypatch):
    """Queued experiments with no worker (what a worker lost to the kombu JSONDecodeError race
    leaves): the wait starts a worker again and sees them through."""
    from actionrec import compare

    monkeypatch.chdir(repo)
    for key, value in tool_env().items():
        monkeypatch.setenv(key, value)
    names = compare.queue_experiments("mean", [5], [])
    statuses, workers = compare.parse_queue_status(compare.dvc("queue", "status"))
    assert statuses[names[0]] == "Queued" and workers == 0
    messages = []
    final = compare.wait_for_queue(names, jobs=1, timeout=600, poll=2, log=messages.append)
    assert final == {names[0]: "Success"}
    assert any("no worker is running" in m for m in messages)
