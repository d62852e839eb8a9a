"""Results across machines and people, on the session's reproduced repository
(conftest.pipeline): a DVC remote shared by a team, `make verify` against the commit, the way
back after an experiment, and tests that read the committed results whatever is applied."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from tests.conftest import MAKE, ROOT, committed, copy_repo, git, read_metrics, run, stages_run, tool_env


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


WAY_BACK = "git checkout -- params.yaml && make repro"  # docs/reproducibility.md: back after an experiment


def verify(repo: Path, *args: str) -> tuple[int, str]:
    result = subprocess.run([sys.executable, "-m", "actionrec.verify", *args], cwd=repo, env=tool_env(),
                            capture_output=True, text=True, timeout=600)
    return result.returncode, result.stdout + result.stderr


def verdicts(out: str) -> dict[str, str]:
    """make verify's lines -> {what: verdict}."""
    found = {}
    for line in out.splitlines():
        for verdict in ("identical", "within tolerance", "not measured", "differs"):
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
    # every output that differs from the commit is named, with how far: within tolerance, as it
    # follows from the features (make verify once said "13 of 13 identical" to this); the model,
    # whose committed version this DVC cache lacks, as not measured (once "within tolerance")
    assert found["metrics/train.json"] == found[curve] == "within tolerance", out
    assert found[model] == found["dvc.lock"] == "not measured", out
    assert f"{model} (train): differs, not measured: hash " in out and "vs committed eeeeeeee" in out, out
    assert re.search(r"^verify: +\d+ compared with other: \d+ identical, \d+ within tolerance, 2 not measured, "
                     r"0 beyond tolerance", out, re.M), out
    assert re.search(r"metrics/train.json \(train\): best_val_loss [0-9.]+ -> [0-9.]+$", out, re.M), out
    assert re.search(rf"{re.escape(curve)} \(train\): 1 of \d+ rows differ, max abs difference 0.001$", out, re.M), out

    def three_videos_and_other_data():
        metrics = json.loads((repo / "metrics/evaluate.json").read_text())
        metrics["test_accuracy"] = round(metrics["test_accuracy"] - 3 / metrics["test_videos"], 6)
        (repo / "metrics/evaluate.json").write_text(json.dumps(metrics, indent=2) + "\n")
        lock = (repo / "dvc.lock").read_text()
        digest = yaml.safe_load(lock)["stages"]["subset"]["outs"][0]["md5"]
        (repo / "dvc.lock").write_text(lock.replace(digest, "c" * 32))  # not all digits: YAML would read a number
        (repo / "reference/features.npz").unlink()  # and no reference: nothing to extract

    git(repo, "branch", "-qD", "other")
    other_machine(three_videos_and_other_data)
    code, out = verify(repo, "--rev", "other")
    assert code == 1, out
    found = verdicts(out)
    assert found["test_accuracy"] == found["data/metadata.csv"] == found["dvc.lock"] == "differs", out
    assert found["reference/features.npz is not committed"] == "differs", out
    assert found["data/synthetic/UCF-101"] == "identical", out
    git(repo, "branch", "-qD", "other")


def test_make_verify_measures_the_features_and_the_model_that_the_dvc_cache_holds(repo, tmp_path):
    """A commit whose features and model differ a little from the workspace's (as another machine's
    would), both in this DVC cache: make verify measures each, and names dvc.lock with them. (On a
    cache of its own: `dvc commit` saves a run-cache entry, which other tests would restore.)"""
    local_config = repo / ".dvc/config.local"
    config = local_config.read_text() if local_config.exists() else None
    run(["dvc", "cache", "dir", "--local", str(tmp_path / "cache")], repo)
    try:
        run(["dvc", "commit", "-f"], repo)  # the committed outputs, into that cache
        git(repo, "checkout", "-qb", "other")
        for shard in (repo / "data/features/shards").glob("*.npy"):
            values = np.load(shard)
            shard.unlink()  # DVC links the workspace to its cache: a new file, not that one written over
            np.save(shard, values * np.float16(1.001))
        model_file = repo / "models/model.pt"
        model = torch.load(model_file, weights_only=True)
        next(iter(model["state_dict"].values()))[0] += 0.25
        model_file.unlink()
        torch.save(model, model_file)
        run(["dvc", "commit", "-f", "features", "train"], repo)
        git(repo, "commit", "-qam", "features and model from another machine")
        git(repo, "checkout", "-q", "main")
        run(["dvc", "checkout"], repo)
        code, out = verify(repo, "--rev", "other")
        found = verdicts(out)
        assert found["data/features"] == found["models/model.pt"] == found["dvc.lock"] == "within tolerance", out
        measured = re.search(r"data/features \(features\): max relative L2 of a frame (\S+) \(tolerance 0.002\)$",
                             out, re.M)
        assert measured and 0.0009 < float(measured[1]) < 0.0011, out  # float16 holds 1.001 as 1.00098
        assert "models/model.pt (train): parameters: max abs difference 0.25" in out, out
        assert "dvc.lock: the hashes of data/features, models/model.pt (each above)" in out, out
    finally:
        local_config.unlink()
        if config is not None:
            local_config.write_text(config)
        git(repo, "checkout", "-qf", "main")
        run(["dvc", "checkout", "--force"], repo)


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
    """`dvc exp run` applies params, dvc.lock, metrics and plots to the workspace (as the way
    back's test above shows); a repository copy for a test takes them as committed, so `make
    test` passes whatever is applied."""
    changed = ("params.yaml", "dvc.lock", "metrics/evaluate.json", "plots/confusion_test.csv")
    for rel in changed:  # what an applied experiment changes, changed here without running one
        with open(repo / rel, "a") as file:
            file.write("\n" if rel.endswith(".csv") else "\n# an experiment\n")
    copy = copy_repo(tmp_path / "copy", source=repo)
    for rel in changed:
        assert (repo / rel).read_bytes() != committed(rel, repo), rel
        assert (copy / rel).read_bytes() == committed(rel, repo), rel
