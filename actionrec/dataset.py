"""Join a split to the features: the features stage stores every video once (in
data/features/), the split stage says which video goes where (data/splits/<split>.csv)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from actionrec.params import UserError

FEATURES = Path("data/features")


def feature_info(features: Path = FEATURES) -> dict:
    """What made the features (backbone, weights and their SHA-256, precision, ...)."""
    return json.loads((features / "info.json").read_text())


def load_split(name: str, features: Path = FEATURES, splits: Path = Path("data/splits"),
               ) -> tuple[np.ndarray, pd.DataFrame, int]:
    """(float16 [N, T, D] features, their split rows in split order, videos of the split
    that have no features because they could not be decoded)."""
    rows = pd.read_csv(splits / f"{name}.csv")
    index = pd.read_csv(features / "videos.csv", usecols=["video"])
    index["row"] = np.arange(len(index))
    joined = rows.merge(index, on="video", how="left", validate="one_to_one")
    missing = joined["row"].isna()
    if missing.all() and len(rows):
        raise UserError(f"no video of data/splits/{name}.csv has features in {features}: "
                        "run 'dvc repro' so that both come from the same data/metadata.csv")
    joined = joined[~missing]
    table = np.load(features / "features.npy", mmap_mode="r")
    feats = np.asarray(table[joined["row"].to_numpy(dtype=np.int64)])  # this split only, float16
    return feats, joined.drop(columns="row").reset_index(drop=True), int(missing.sum())
