"""End to end: the real `dvc repro` and `dvc exp run` on tiny params, in the session's one
reproduced copy of the repository (conftest.pipeline)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from actionrec.dataset import read_index
from tests.conftest import (ROOT, back_to_head, committed, committed_params, copy_repo, git, read_features,
                            read_metrics, run, stages_run, tool_env)

pytestmark = pytest.mark.pipeline


def test_repro_end_to_end_is_deterministic_and_every_stage_is_run_cached(pipeline, repo):
    out = pipeline.repro_output  # the session's one `dvc repro` from nothing (conftest.pipeline)
    assert stages_run(out) == {"validate", "synthesize", "subset", "split", "features", "train", "evaluate"}
    # every stage but validate, whose only output is an uncached marker: it checks each machine itself
    assert len(pipeline.saved_runs) == 6, "DVC saved no run-cache entry for some stage"
    assert out.index("Running stage 'validate'") < out.index("Running stage 'synthesize'")
    metadata = pd.read_csv(repo / "data/metadata.csv")
    assert {"video", "label", "class_name", "group", "clip"} <= set(metadata.columns)
    assert sorted(metadata["label"].unique()) == [0, 1, 2]
    first = pipeline.first_metrics
    assert first["split.json"]["shared_groups"] == 0 and "shared_groups_counts" in first["split.json"]
    assert first["features.json"]["failed_videos"] == 0
    info = json.loads((repo / "data/features/info.json").read_text())
    assert info["precision"] == "fp32" and info["device"] == "cpu"  # what was used, recorded with the features
    # metrics are numbers: `dvc exp show` gets one column per metric, none named like a param
    assert all(isinstance(v, (int, float)) for v in first["features.json"].values()), first["features.json"]
    features = pipeline.first_features
    videos = read_index(repo / "data/features")
    assert features.dtype == np.float16 and features.shape == (len(metadata), 4, 2048)
    assert list(videos["video"]) == list(metadata["video"])  # every video, whatever the split
    test_rows = pd.read_csv(repo / "data/splits/test.csv")
    assert first["evaluate.json"]["test_videos"] == len(test_rows)
    assert first["evaluate.json"]["test_videos_not_decoded"] == 0
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repo)
    assert stages_run(run(["dvc", "repro"], repo)) == set()
    prep = json.loads((repo / "data/features/info.json").read_text())["preprocessing"]
    assert prep == {"resize": 64, "crop": 56, "interpolation": "bilinear", "mean": [0.485, 0.456, 0.406],
                    "std": [0.229, 0.224, 0.225]}  # TINY's sizes, the defaults of weights: none
    assert torch.load(repo / "models/model.pt", weights_only=True)["meta"]["preprocessing"] == prep
    assert (repo / "plots/confusion_test.csv").read_text().startswith("actual,predicted")
    assert (repo / "metrics/failed_videos.csv").read_text().strip() == "video,error"

    assert (first["features.json"]["extracted_videos"], first["features.json"]["reused_videos"]) == (len(metadata), 0)

    again = read_metrics(repo)  # after the fixture's `dvc repro -f`
    assert again["features.json"].pop("reused_videos") == len(metadata)  # the store served them all
    assert again["features.json"].pop("extracted_videos") == 0
    assert again == {**first, "features.json": {k: v for k, v in first["features.json"].items()
                                                if k not in ("extracted_videos", "reused_videos")}}, \
        "a forced re-run changed the metrics"
    assert np.array_equal(read_features(repo / "data/features"), features)


def test_only_what_changed_runs_again(repo):
    """train.* re-runs train + evaluate; split.* re-runs split + train + evaluate; speed-only
    keys re-run nothing but validate (as every change does); switching the backbone and back
    restores from the run-cache."""
    # a value no other test sets: the run-cache, shared by the session, has no run of it yet
    out = run(["dvc", "exp", "run", "-S", "train.lr=0.004"], repo)
    assert stages_run(out) == {"validate", "train", "evaluate"} and "Stage 'features' didn't change" in out
    shown = run(["dvc", "exp", "show", "--no-pager", "--csv"], repo)
    assert "0.004" in shown
    header = shown.splitlines()[0].split(",")  # one column per param, metric or dependency
    assert len(header) == len(set(header)), sorted({c for c in header if header.count(c) > 1})

    out = run(["dvc", "exp", "run", "-S", "split.seed=1", "-S", "split.train=0.7", "-S", "split.val=0.15",
               "-S", "split.test=0.15"], repo)
    assert stages_run(out) == {"validate", "split", "train", "evaluate"} and "Stage 'features' didn't change" in out

    speed = ["runtime.device=cpu", "runtime.num_workers=0", "runtime.threads=1", "runtime.batch_frames=12",
             "runtime.compile=auto", "runtime.max_failed_fraction=0.5", "runtime.decoder=pyav",
             "runtime.train_threads=2", "runtime.engine=ray"]
    assert {s.split("=")[0].split(".")[1] for s in speed} == set(committed_params()["runtime"])  # every one
    out = run(["dvc", "exp", "run", *[arg for key in speed for arg in ("-S", key)]], repo)
    assert stages_run(out) == {"validate"} and "Stage 'features' didn't change" in out

    before = read_features(repo / "data/features")
    out = run(["dvc", "exp", "run", "-S", "features.backbone=resnet18"], repo)
    assert {"features", "train", "evaluate"} <= stages_run(out)
    assert read_features(repo / "data/features").shape[2] == 512
    out = run(["dvc", "exp", "run", "-S", "features.backbone=resnet50"], repo)
    assert "features" not in stages_run(out) and "Stage 'features' is cached - skipping run" in out
    assert np.array_equal(read_features(repo / "data/features"), before)


def features_by_video(repo: Path) -> dict[str, np.ndarray]:
    table = read_features(repo / "data/features")
    return dict(zip(read_index(repo / "data/features")["video"], table))


def test_only_new_videos_are_extracted_and_the_result_equals_a_fresh_extraction(repo):
    """Features depend on the videos and the feature params, not on labels, groups or the
    split: raising videos_per_class or adding a class decodes only the videos that have no
    features yet, and what comes out equals an extraction from nothing."""
    fresh = features_by_video(repo)  # the first repro's: every video of 3 classes, from nothing
    store = repo / "data/features-store"
    shutil.move(store, repo / "store-aside")  # start with nothing stored
    counts = lambda: {k: json.loads((repo / "metrics/features.json").read_text())[k]  # noqa: E731
                      for k in ("videos", "extracted_videos", "reused_videos")}
    try:
        run(["dvc", "exp", "run", "-S", "subset.videos_per_class=3"], repo)
        assert counts() == {"videos": 9, "extracted_videos": 9, "reused_videos": 0}
        out = run(["dvc", "exp", "run", "-S", "subset.videos_per_class=4"], repo)
        assert "Running stage 'features'" in out
        assert counts() == {"videos": 12, "extracted_videos": 3, "reused_videos": 9}
        # a fourth class: synthesize renders every clip again, byte for byte, and adds its 4
        out = run(["dvc", "exp", "run", "-S", "synthesize.num_classes=4", "-S", "subset.num_classes=4",
                   "-S", "subset.videos_per_class=4"], repo)
        assert "Running stage 'synthesize'" in out
        assert counts() == {"videos": 16, "extracted_videos": 4, "reused_videos": 12}
        incremental = features_by_video(repo)
        assert all(np.array_equal(incremental[v], fresh[v]) for v in incremental if v in fresh)
        shutil.rmtree(store)
        run(["dvc", "repro", "-f", "-s", "features"], repo)  # the same 16 videos from nothing
        assert counts() == {"videos": 16, "extracted_videos": 16, "reused_videos": 0}
        from_nothing = features_by_video(repo)
        assert incremental.keys() == from_nothing.keys()
        assert all(np.array_equal(incremental[v], from_nothing[v]) for v in incremental)
    finally:
        shutil.rmtree(store, ignore_errors=True)
        shutil.move(repo / "store-aside", store)


def test_the_ray_engine_extracts_the_same_features_and_nothing_re_runs(repo):
    """runtime.engine: ray (a local Ray here) is speed only: switching to it re-runs nothing,
    and extracting every video with it gives bit-identical features (the same hash in
    dvc.lock), with none of Ray's own files among the outputs."""
    git(repo, "checkout", "--", ".")
    run(["dvc", "repro"], repo)  # restored from the run-cache after the first test
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "repro", "--allow-empty")
    features_lock = lambda: [out for out in yaml.safe_load((repo / "dvc.lock").read_text())  # noqa: E731
                             ["stages"]["features"]["outs"] if out["path"] == "data/features"]
    before = features_lock()
    store = repo / "data/features-store"
    try:
        out = run(["dvc", "exp", "run", "-S", "runtime.engine=ray"], repo)
        assert stages_run(out) == {"validate"}, out
        assert "Data and pipelines are up to date" in run(["dvc", "status"], repo)
        shutil.move(store, repo / "store-aside")  # so that Ray extracts every video
        run(["dvc", "repro", "-f", "-s", "features"], repo)
        summary = json.loads((repo / "metrics/features.json").read_text())
        assert summary["extracted_videos"] == summary["videos"] > 0, summary
        assert features_lock() == before
        files = {str(p.relative_to(repo / "data/features")) for p in (repo / "data/features").rglob("*")}
        shards = {f"shards/{name[:-4]}{ext}" for name in read_index(repo / "data/features")["shard"] for ext in (".npy", ".csv")}
        assert files == {"info.json", "shards", *shards} and len(shards) == 6, files
    finally:
        if (repo / "store-aside").exists():
            shutil.rmtree(store, ignore_errors=True)
            shutil.move(repo / "store-aside", store)
        back_to_head(repo)


def test_predict_gives_the_probabilities_evaluate_computes(repo):
    """predict.py decodes and embeds the video itself; evaluate uses the stored float16
    features: the class probabilities agree within 0.01."""
    import torch

    from actionrec.model import load_checkpoint, lstm_inputs

    model, meta = load_checkpoint(str(repo / "models/model.pt"))
    videos = read_index(repo / "data/features")
    test = pd.read_csv(repo / "data/splits/test.csv")
    stored = read_features(repo / "data/features")
    for video in test["video"][:2]:
        row = int(np.flatnonzero(videos["video"] == video)[0])
        with torch.no_grad():
            expected = torch.softmax(model(lstm_inputs(np.array(stored[row:row + 1]), meta))[0], 0).numpy()
        out = run([sys.executable, "predict.py", f"data/synthetic/UCF-101/{video}", "--json",
                   "--top-k", str(len(meta["class_names"]))], repo)
        got = {item["label"]: item["confidence"] for item in json.loads(out.strip().splitlines()[-1])["top_k"]}
        assert np.allclose([got[name] for name in meta["class_names"]], expected, atol=0.01), video


def test_a_team_shares_runs_through_a_dvc_remote(repo, tmp_path):
    """Clone A pushes; a fresh clone B pulls the run-cache and runs nothing, and an experiment
    A ran is restored in B from the run-cache, not retrained."""
    assert "Data and pipelines are up to date" in run(["dvc", "status"], repo)
    run(["dvc", "remote", "add", "-d", "team", str(tmp_path / "remote")], repo)
    git(repo, "commit", "-qam", "team remote")
    run([sys.executable, "-m", "actionrec.share"], repo)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    run(["dvc", "pull", "--run-cache"], clone)
    out = run(["dvc", "repro"], clone)
    # the new clone checks params.yaml on its machine once (validate); everything else is restored
    assert stages_run(out) == {"validate"} and "Data and pipelines are up to date" in run(["dvc", "status"], clone)

    out = run(["dvc", "exp", "run", "-S", "train.lr=0.0003"], repo)
    assert stages_run(out) == {"validate", "train", "evaluate"}
    expected = json.loads((repo / "metrics/evaluate.json").read_text())
    run([sys.executable, "-m", "actionrec.share"], repo)
    run(["dvc", "pull", "--run-cache"], clone)
    out = run(["dvc", "exp", "run", "--pull", "-S", "train.lr=0.0003"], clone)
    assert stages_run(out) == {"validate"}, out  # the params are checked on this machine, never restored
    assert "Stage 'train' is cached - skipping run, checking out outputs" in out
    assert json.loads((clone / "metrics/evaluate.json").read_text()) == expected


MAKE = ["make", "-o", ".venv/.installed"]  # the copy uses this venv (first on PATH), never builds one
WAY_BACK = "git checkout -- params.yaml && make repro"  # docs/reproducibility.md: back after an experiment


def verify(repo: Path, *args: str) -> tuple[int, str]:
    result = subprocess.run([sys.executable, "-m", "actionrec.verify", *args], cwd=repo, env=tool_env(),
                            capture_output=True, text=True, timeout=600)
    return result.returncode, result.stdout + result.stderr


def verdicts(out: str) -> dict[str, str]:
    """make verify's lines -> {what: verdict}."""
    found = {}
    for line in out.splitlines():
        for verdict in ("identical", "within tolerance", "differs"):
            if line.startswith(verdict + " "):
                found[line[len(verdict):].strip().split(" (")[0].split(":")[0]] = verdict
    return found


def test_make_verify_says_identical_within_tolerance_or_differs(repo):
    """After `make repro` on the committing machine everything is identical; a commit from
    "another machine" (its reference features slightly off, its metrics one test video off)
    is within tolerance, exit 0; beyond that, or another data hash, differs, exit 1."""
    run([sys.executable, "-m", "actionrec.verify", "--write-reference"], repo)
    git(repo, "add", "reference/features.npz")
    git(repo, "commit", "-qm", "reference features")
    out = run(MAKE + ["verify"], repo)
    found = verdicts(out)
    assert set(found.values()) == {"identical"}, out
    assert {"params.yaml", "data/synthetic/UCF-101", "data/metadata.csv", "data/splits", "test_accuracy",
            "baseline_test_accuracy", "test_macro_f1", "test predictions"} <= set(found), out
    assert any(key.startswith("features of 4 reference clips") for key in found), out

    def other_machine(change) -> None:
        """A commit on branch `other` with files as another machine would have committed them."""
        git(repo, "checkout", "-qb", "other")
        change()
        git(repo, "commit", "-qam", "from another machine")
        git(repo, "checkout", "-q", "main")

    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    model = next(o["path"] for o in lock["stages"]["train"]["outs"] if o["path"].startswith("models/"))
    curve = next(o["path"] for o in lock["stages"]["train"]["outs"] if o["path"].endswith("val/loss.tsv"))

    def reference_one_video_and_what_follows_from_the_features():
        saved = np.load(repo / "reference/features.npz")
        noise = np.random.default_rng(0).standard_normal(saved["features"].shape).astype(np.float32)
        feats = saved["features"] + 3e-4 * noise * np.linalg.norm(saved["features"], axis=-1, keepdims=True) / 45
        np.savez(repo / "reference/features.npz", features=feats, meta=saved["meta"])
        for name, key, delta in (("evaluate.json", "test_accuracy", None), ("train.json", "best_val_loss", 2e-6)):
            metrics = json.loads((repo / "metrics" / name).read_text())
            metrics[key] = round(metrics[key] + (delta or -1 / metrics["test_videos"]), 6)
            (repo / "metrics" / name).write_text(json.dumps(metrics, indent=2) + "\n")
        table = pd.read_csv(repo / curve, sep="\t")
        table.loc[1, "loss"] += 0.001
        table.to_csv(repo / curve, sep="\t", index=False)
        digest = next(o["md5"] for o in lock["stages"]["train"]["outs"] if o["path"] == model)
        (repo / "dvc.lock").write_text((repo / "dvc.lock").read_text().replace(digest, "e" * 32))

    other_machine(reference_one_video_and_what_follows_from_the_features)
    code, out = verify(repo, "--rev", "other")
    assert code == 0, out
    found = verdicts(out)
    assert found["test_accuracy"] == "within tolerance" and found["test_macro_f1"] == "identical", out
    assert [v for k, v in found.items() if k.startswith("features of")] == ["within tolerance"], out
    # every output that differs from the commit is named, with how far: within tolerance, as
    # it follows from the features (make verify once said "13 of 13 identical" to this)
    assert found[model] == found["metrics/train.json"] == found[curve] == "within tolerance", out
    assert f"{model} (train): hash " in out and "vs committed eeeeeeee" in out, out
    assert re.search(r"metrics/train.json \(train\): best_val_loss [0-9.]+ -> [0-9.]+$", out, re.M), out
    assert re.search(rf"{re.escape(curve)} \(train\): 1 of \d+ rows differ, max abs difference 0.001$", out, re.M), out

    def three_videos_and_other_data():
        metrics = json.loads((repo / "metrics/evaluate.json").read_text())
        metrics["test_accuracy"] = round(metrics["test_accuracy"] - 3 / metrics["test_videos"], 6)
        (repo / "metrics/evaluate.json").write_text(json.dumps(metrics, indent=2) + "\n")
        lock = (repo / "dvc.lock").read_text()
        digest = yaml.safe_load(lock)["stages"]["subset"]["outs"][0]["md5"]
        (repo / "dvc.lock").write_text(lock.replace(digest, "c" * 32))  # not all digits: YAML would read a number

    git(repo, "branch", "-qD", "other")
    other_machine(three_videos_and_other_data)
    code, out = verify(repo, "--rev", "other")
    assert code == 1, out
    found = verdicts(out)
    assert found["test_accuracy"] == "differs" and found["data/metadata.csv"] == "differs", out
    assert found["data/synthetic/UCF-101"] == "identical", out
    git(repo, "branch", "-qD", "other")


def test_the_way_back_after_an_experiment_recomputes_nothing_with_another_machines_lock(repo):
    """dvc.lock committed on another machine names features and a model this machine never
    made. After `make repro` here and an experiment, the documented way back restores the
    committed params' results from the run-cache: nothing runs, nothing is deleted."""
    assert WAY_BACK in (ROOT / "docs/reproducibility.md").read_text()
    lock = (repo / "dvc.lock").read_text()
    for stage, path in (("features", "data/features"), ("train", "models/model.pt")):
        digest = next(o for o in yaml.safe_load(lock)["stages"][stage]["outs"] if o["path"] == path)["md5"]
        lock = lock.replace(digest, ("f" * 32) + (".dir" if digest.endswith(".dir") else ""))
    (repo / "dvc.lock").write_text(lock)
    git(repo, "commit", "-qam", "dvc.lock from another machine")
    try:
        # here, DVC trusts the lock's names for an unchanged stage and runs features again:
        # the feature store serves every video; train and evaluate come from the run-cache
        out = run(MAKE + ["repro"], repo)
        assert stages_run(out) == {"features"}, out
        assert json.loads((repo / "metrics/features.json").read_text())["extracted_videos"] == 0
        committed_metrics = read_metrics(repo)
        run(["dvc", "exp", "run", "-S", "train.lr=0.002"], repo)
        assert read_metrics(repo) != committed_metrics

        out = run(["bash", "-c", WAY_BACK.replace("make ", " ".join(MAKE) + " ")], repo)
        assert stages_run(out) == {"validate"}, out  # params checked; nothing recomputed
        assert (repo / "data/features/info.json").is_file() and (repo / "models/model.pt").is_file()
        assert read_metrics(repo) == committed_metrics
        assert "Data and pipelines are up to date" in run(["dvc", "status"], repo)
        # only dvc.lock differs from the commit: it names this machine's features and model
        assert git(repo, "status", "--porcelain").split() == ["M", "dvc.lock"]
    finally:
        git(repo, "reset", "-q", "--hard", "HEAD~1")
        run(["dvc", "checkout"], repo)


def test_tests_read_the_committed_params_and_results_not_an_applied_experiment(repo, tmp_path):
    """`dvc exp run` applies params, dvc.lock, metrics and plots to the workspace; a repository
    copy for a test takes them as committed, so `make test` passes whatever is applied."""
    # the way back's experiment (above): restored from the session's run-cache, not trained again
    run(["dvc", "exp", "run", "-S", "train.lr=0.002"], repo)
    assert yaml.safe_load((repo / "params.yaml").read_text())["train"]["lr"] == 0.002
    copy = copy_repo(tmp_path / "copy", source=repo)
    assert (repo / "params.yaml").read_bytes() != committed("params.yaml", repo)
    for rel in ("params.yaml", "dvc.lock", "metrics/evaluate.json", "plots/confusion_test.csv"):
        assert (copy / rel).read_bytes() == committed(rel, repo), rel


@pytest.mark.parametrize("head", ["lstm", "gru", "transformer", "mean"])
def test_every_head_trains_evaluates_and_predicts(repo, head):
    out = run(["dvc", "exp", "run", "-S", f"train.head={head}"], repo)
    assert "Running stage 'features'" not in out
    checkpoint = torch.load(repo / "models/model.pt", weights_only=True)
    assert checkpoint["meta"]["head"] == head
    assert checkpoint["meta"]["temporal_centering"] == (head != "mean")  # the mean head never centres
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
    """`python -m actionrec.compare` as `make compare` runs it, on 2 heads x 2 seeds."""
    out = run([sys.executable, "-m", "actionrec.compare", "--heads", "mean,gru", "--seeds", "0,1",
               "--timeout", "900", "--out", "compare.md"], repo)
    table = (repo / "compare.md").read_text()
    rows = {line.split("|")[1].strip(): line.split("|") for line in table.splitlines() if line.startswith("| ")}
    assert set(rows) == {"head", "mean", "gru"}
    for head in ("mean", "gru"):
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
    names = compare.queue_experiments("mean", [1], [])  # a run the test above made: restored, not trained
    assert compare.experiments()[names[0]]["State"] == "Queued" and compare.workers() == 0
    messages = []
    final = compare.wait_for_queue(names, jobs=1, timeout=600, poll=2, log=messages.append)
    assert final == {names[0]: "Success"}
    assert any("no worker is running" in m for m in messages)
