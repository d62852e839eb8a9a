"""Join a split to the features: the features stage stores every video once, the split
stage says which video goes where (<splits>/<split>.csv)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from actionrec.errors import UserError

def feature_info(features: Path) -> dict:
    """What made the features (backbone, weights and their SHA-256, precision, ...)."""
    return json.loads((features / "info.json").read_text())


def load_split(name: str, features: Path, splits: Path) -> tuple[np.ndarray, pd.DataFrame, int]:
    """(float16 [N, T, D] features, their split rows in split order, videos of the split
    that have no features because they could not be decoded: each named in a warning, with
    the classes it leaves without a video in this split)."""
    rows = pd.read_csv(splits / f"{name}.csv")
    index = pd.read_csv(features / "videos.csv", usecols=["video"])
    index["row"] = np.arange(len(index))
    joined = rows.merge(index, on="video", how="left", validate="one_to_one")
    missing = joined["row"].isna()
    if missing.all() and len(rows):
        raise UserError(f"no video of {splits / name}.csv has features in {features}: "
                        "run 'dvc repro' so that both come from the same subset")
    for video in joined.loc[missing, "video"]:
        print(f"warning: {name} video {video} has no features (it could not be decoded): left out", file=sys.stderr)
    emptied = sorted(set(rows["class_name"]) - set(joined.loc[~missing, "class_name"]))
    if emptied and missing.any():
        print(f"warning: the {name} split has no video of {', '.join(emptied)} left", file=sys.stderr)
    joined = joined[~missing]
    table = np.load(features / "features.npy", mmap_mode="r")
    feats = np.asarray(table[joined["row"].to_numpy(dtype=np.int64)])  # this split only, float16
    return feats, joined.drop(columns="row").reset_index(drop=True), int(missing.sum())
