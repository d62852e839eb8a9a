"""End to end: the real `dvc repro` and `dvc exp run` on tiny params, in the session's one
reproduced copy of the repository (conftest.pipeline)."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from actionrec.dataset import read_index
from tests.conftest import back_to_head, committed_params, git, read_features, read_metrics, run, stages_run

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
    keys re-run nothing but validate (as every change does). (A features.* or subset.* change:
    the test below; restoring from the run-cache: tests/test_team.py.)"""
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
        # one more video in each class, and a fourth class: synthesize renders every clip again,
        # byte for byte, and adds its 4; features extracts the 3 + 4 new ones
        out = run(["dvc", "exp", "run", "-S", "synthesize.num_classes=4", "-S", "subset.num_classes=4",
                   "-S", "subset.videos_per_class=4"], repo)
        assert "Running stage 'synthesize'" in out and "Running stage 'features'" in out
        assert counts() == {"videos": 16, "extracted_videos": 7, "reused_videos": 9}
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
    """runtime.engine: ray (a local Ray here) is speed only (switching to it re-runs nothing:
    the speed keys above), and extracting every video with it gives bit-identical features (the
    same hash in dvc.lock), with none of Ray's own files among the outputs."""
    git(repo, "checkout", "--", ".")
    run(["dvc", "repro"], repo)  # restored from the run-cache after the first test
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "repro", "--allow-empty")
    features_lock = lambda: [out for out in yaml.safe_load((repo / "dvc.lock").read_text())  # noqa: E731
                             ["stages"]["features"]["outs"] if out["path"] == "data/features"]
    before = features_lock()
    store = repo / "data/features-store"
    try:
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["runtime"]["engine"] = "ray"
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
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


def test_predict_gives_the_probabilities_evaluate_computes(repo, tmp_path):
    """predict.py decodes and embeds the video itself; evaluate uses the stored float16
    features: the class probabilities agree within 0.01 (every video, in one predict.py run)."""
    import torch

    from actionrec.model import load_checkpoint, lstm_inputs

    model, meta = load_checkpoint(str(repo / "models/model.pt"))
    videos = read_index(repo / "data/features")
    test = pd.read_csv(repo / "data/splits/test.csv")
    stored = read_features(repo / "data/features")
    run([sys.executable, "predict.py", "data/synthetic/UCF-101", "--csv", str(tmp_path / "predicted.csv"),
         "--top-k", str(len(meta["class_names"]))], repo)
    predicted = pd.read_csv(tmp_path / "predicted.csv", keep_default_na=False).set_index("file")["top_k"]
    for video in test["video"]:
        row = int(np.flatnonzero(videos["video"] == video)[0])
        with torch.no_grad():
            expected = torch.softmax(model(lstm_inputs(np.array(stored[row:row + 1]), meta))[0], 0).numpy()
        got = dict(item.split(":") for item in predicted[video].split(";"))
        assert np.allclose([float(got[name]) for name in meta["class_names"]], expected, atol=0.01), video
