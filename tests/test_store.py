"""`make gc`: the feature store keeps what the current params, HEAD's and each branch's dvc.lock can use,
and nothing else (on the session's reproduced repository, conftest.pipeline)."""
from __future__ import annotations

import json
import re
import shutil

import yaml

from tests.conftest import MAKE, git, run


def test_make_gc_keeps_the_entries_that_the_params_or_a_branchs_lock_can_use_and_frees_the_rest(repo):
    store = repo / "data/features-store"
    (committed,) = [entry for entry in store.iterdir() if json.loads((entry / "key.json").read_text())["features"]
                    == yaml.safe_load((repo / "params.yaml").read_text())["features"]]
    key = json.loads((committed / "key.json").read_text())

    def entry(name: str, num_frames: int | None) -> None:
        """A store entry (one video's features) made with features.num_frames: num_frames (None: no key.json,
        as code before make gc wrote)."""
        (store / name).mkdir()
        shutil.copy(next(committed.glob("*.npz")), store / name)
        if num_frames:
            (store / name / "key.json").write_text(json.dumps(
                {**key, "features": {**key["features"], "num_frames": num_frames}}))

    lock = (repo / "dvc.lock").read_text()  # a branch whose dvc.lock has num_frames 5, the workspace 6
    git(repo, "checkout", "-qb", "five")
    (repo / "dvc.lock").write_text(lock.replace("num_frames: 4", "num_frames: 5"))
    git(repo, "commit", "-qam", "num_frames 5")
    git(repo, "checkout", "-q", "main")
    (repo / "params.yaml").write_text((repo / "params.yaml").read_text().replace("num_frames: 4", "num_frames: 6"))
    for name, num_frames in (("branch", 5), ("workspace", 6), ("experiment", 7), ("older-code", None)):
        entry(name, num_frames)

    try:
        out = run(MAKE + ["gc"], repo)
        assert re.search(r"removed \d+ entries \([\d.]+ MiB\), kept \d+", out), out
        assert {path.name for path in store.iterdir()} >= {committed.name, "branch", "workspace"}
        assert not (store / "experiment").exists() and not (store / "older-code").exists()
        assert {json.loads((path / "key.json").read_text())["features"]["num_frames"] for path in store.iterdir()} \
            <= {4, 5, 6}  # whatever other tests left there too

        git(repo, "checkout", "--", "params.yaml")  # the committed lock's features, from the entry kept
        run(["dvc", "repro", "-f", "-s", "features"], repo)
        metrics = json.loads((repo / "metrics/features.json").read_text())
        assert metrics["reused_videos"] == metrics["videos"] and metrics["extracted_videos"] == 0, metrics
    finally:
        for name in ("branch", "workspace", "experiment", "older-code"):
            shutil.rmtree(store / name, ignore_errors=True)
