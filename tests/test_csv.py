"""The project's CSVs are read as written (actionrec.pipeline.read_csv): a class folder named NA, None,
null or nan, which pandas reads as a missing value by default, stays a class through train and evaluate."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pandas as pd
import yaml

from actionrec.dataset import write_features
from actionrec.pipeline import paths, read_csv
from tests.conftest import committed_params, stage_argv

CLASSES = ["NA", "None", "nan", "null"]  # each a missing value to pandas' default reader


def test_classes_named_like_missing_values_go_through_train_and_evaluate(tmp_path):
    """Before: train and evaluate stopped on a TypeError when a split had no video of such a class left."""
    rows = pd.DataFrame([{"video": f"{name}/{name}_{g}.mp4", "label": label, "class_name": name, "group": str(g),
                          "clip": 1} for label, name in enumerate(CLASSES) for g in range(4)])
    values = np.random.default_rng(0).normal(size=(len(rows), 4, 8)).astype(np.float16)
    values += 3 * rows["label"].to_numpy()[:, None, None].astype(np.float16)  # each class its own features
    undecoded = {"None/None_2.mp4", "NA/NA_3.mp4"}  # the only val video of None, the only test video of NA
    features = tmp_path / paths("train")["features"]
    write_features(features, rows[~rows["video"].isin(undecoded)][["video"]].assign(rotation=0, warning=""),
                   lambda i: values[rows.index[~rows["video"].isin(undecoded)][i]])
    (features / "info.json").write_text(json.dumps({"num_frames": 4, "backbone": "resnet18", "weights": "none",
                                                    "weights_sha256": None, "precision": "fp32"}))
    rows.to_csv(tmp_path / paths("train")["metadata"], index=False)
    splits = tmp_path / paths("train")["splits"]
    splits.mkdir(parents=True)
    for split, groups in {"train": ["0", "1"], "val": ["2"], "test": ["3"]}.items():
        rows[rows["group"].isin(groups)].to_csv(splits / f"{split}.csv", index=False)
    params = committed_params()
    params["train"].update(max_epochs=2, batch_size=4, hidden_size=8, proj_dim=8)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))

    for stage, split, emptied in (("train", "val", "None"), ("evaluate", "test", "NA")):
        result = subprocess.run(stage_argv(stage), cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert f"warning: the {split} split has no video of {emptied} left" in result.stderr, result.stderr
    per_class = read_csv(tmp_path / paths("evaluate")["per_class_csv"])
    assert sorted(per_class["class_name"]) == sorted(set(CLASSES) - {"NA"})  # NA's one test video: undecoded
    metrics = json.loads((tmp_path / paths("evaluate")["metrics_file"]).read_text())
    assert metrics["test_videos"] == 3 and metrics["test_videos_not_decoded"] == 1
