"""Heads through DVC and `make compare` (heads x seeds through the DVC queue), on the
session's reproduced repository (conftest.pipeline)."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import torch

from tests.conftest import read_metrics, run, tool_env


def test_another_head_trains_evaluates_and_predicts(repo):
    """Each head trains and predicts in tests/test_training.py and test_model.py; here one runs
    through DVC (the mean head: it never centres clips), and compare below restores its run."""
    out = run(["dvc", "exp", "run", "-S", "train.head=mean"], repo)
    assert "Running stage 'features'" not in out
    checkpoint = torch.load(repo / "models/model.pt", weights_only=True)
    assert checkpoint["meta"]["head"] == "mean" and checkpoint["meta"]["temporal_centering"] is False
    metrics = read_metrics(repo)
    assert metrics["evaluate.json"]["test_videos"] == len(pd.read_csv(repo / "data/splits/test.csv"))
    assert metrics["train.json"]["epochs_run"] >= 1
    video = repo / "data/synthetic/UCF-101" / pd.read_csv(repo / "data/splits/test.csv")["video"].iloc[0]
    result = subprocess.run([sys.executable, str(repo / "predict.py"), str(video), "--json", "--top-k", "2"],
                            cwd=repo, env=tool_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    prediction = json.loads(result.stdout)
    assert prediction["label"] in checkpoint["meta"]["class_names"] and len(prediction["top_k"]) == 2


def test_compare_runs_heads_x_seeds_through_the_dvc_queue(repo):
    """`python -m actionrec.compare` as `make compare` runs it, on 2 heads x 2 seeds (seed 0 of
    each: restored from the run-cache, of the fixture's run and of the test above)."""
    out = run([sys.executable, "-m", "actionrec.compare", "--heads", "lstm,mean", "--seeds", "0,1",
               "--timeout", "900", "--out", "compare.md"], repo)
    table = (repo / "compare.md").read_text()
    rows = {line.split("|")[1].strip(): line.split("|") for line in table.splitlines() if line.startswith("| ")}
    assert set(rows) == {"head", "lstm", "mean"}
    for head in ("lstm", "mean"):
        assert rows[head][2].strip() == "2 (0,1)"
        assert len(rows[head][3].split("±")) == 2  # mean ± std
    assert "test videos: one video is" in table and "queued 4 experiments" in out
    assert "Success" in run(["dvc", "queue", "status"], repo)


def test_compare_restarts_a_lost_queue_worker(repo, monkeypatch):
    """Queued experiments with no worker (what a worker lost to the kombu JSONDecodeError race
    leaves): the wait starts a worker again and sees them through."""
    import time

    from actionrec import compare

    monkeypatch.chdir(repo)
    for key, value in tool_env().items():
        monkeypatch.setenv(key, value)
    deadline = time.monotonic() + 120
    while compare.workers() and time.monotonic() < deadline:  # an earlier sweep's worker exits once idle
        time.sleep(2)
    names = compare.queue_experiments("", "mean", [1], [])  # a run the test above made: restored, not trained
    assert compare.experiments()[names[0]]["State"] == "Queued" and compare.workers() == 0
    messages = []
    final = compare.wait_for_queue(names, jobs=1, timeout=600, poll=2, log=messages.append)
    assert final == {names[0]: "Success"}
    assert any("no worker is running" in m for m in messages)
