"""The features folder: per class folder a float16 [n, T, D] shard and its index (a new class adds two files,
DVC's cache grows by those only), and info.json; rows read on demand with pread (no copy, no mapped pages)."""
from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from actionrec.errors import UserError
from actionrec.pipeline import read_csv

SHARDS = "shards"


def shard_name(video: str) -> str:
    """The shard of a video (relative to data.root): its class folder's."""
    folder, sep, _ = video.partition("/")
    return f"{folder}.npy" if sep else "_.npy"  # a video directly in data.root


def write_features(out: Path, table: pd.DataFrame, load: Callable[[int], np.ndarray]) -> None:
    """The shards of table (video, rotation, warning) and load(i), the [T, D] features of its row i."""
    table = table.reset_index(drop=True)
    (out / SHARDS).mkdir(parents=True, exist_ok=True)
    for name, rows in table.groupby(table["video"].map(shard_name), sort=True):
        np.save(out / SHARDS / name, np.stack([load(i) for i in rows.index]).astype(np.float16))
        rows.to_csv((out / SHARDS / name).with_suffix(".csv"), index=False)


def read_index(features: Path) -> pd.DataFrame:
    """Every video of a features folder, shard by shard: its index columns, shard and row."""
    parts = [read_csv(path).assign(shard=path.with_suffix(".npy").name)
             for path in sorted((features / SHARDS).glob("*.csv"))]
    if not parts:
        raise UserError(f"{features} holds no features: run 'dvc repro'")
    return pd.concat([part.assign(row=np.arange(len(part))) for part in parts], ignore_index=True)


class Features:
    """float16 [N, T, D] rows of a features folder, read on demand as arrays (x[i], x[a:b], x[ints], np.asarray)."""

    def __init__(self, folder: Path, shards: np.ndarray, rows: np.ndarray):
        self.folder, self.shards, self.rows = Path(folder), np.asarray(shards), np.asarray(rows, np.int64)
        self._files: dict[str, tuple[int, int]] = {}  # shard -> (fd, offset of row 0)
        first = self._open(self.shards[0])[2] if len(self.shards) else (0, 0)
        self.shape, self.dtype = (len(self.rows), *first), np.dtype(np.float16)
        self.nbytes = int(np.prod(self.shape)) * 2

    def _open(self, name: str) -> tuple[int, int, tuple]:
        path = self.folder / SHARDS / name
        header = np.load(path, mmap_mode="r")  # for the shape and where row 0 starts: nothing read
        if header.dtype != np.float16 or not header.flags.c_contiguous:
            raise UserError(f"{path} is not a float16 C-order array: re-run the features stage")
        self._files[name] = (os.open(path, os.O_RDONLY), header.offset)
        return self._files[name] + (header.shape[1:],)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):  # x[rows, frames, dims]: the rows read, then the rest
            return self[key[0]][(slice(None),) * (np.ndim(np.arange(len(self))[key[0]]) > 0) + key[1:]]
        index = np.arange(len(self))[key]
        out = np.empty((np.size(index), *self.shape[1:]), np.float16)
        row_bytes = out[0].nbytes if len(out) else 0
        flat = out.reshape(len(out), row_bytes // 2).view(np.uint8)
        shards, rows = self.shards[index.ravel()], self.rows[index.ravel()]
        # one read per run of consecutive rows of one shard: [i, j) between the breaks
        breaks = np.flatnonzero((shards[1:] != shards[:-1]) | (rows[1:] != rows[:-1] + 1)) + 1
        for i, j in itertools.pairwise([0, *breaks, len(out)] if len(out) else []):
            fd, offset = self._files[shards[i]] if shards[i] in self._files else self._open(shards[i])[:2]
            if os.preadv(fd, [flat[i:j]], offset + int(rows[i]) * row_bytes) != (j - i) * row_bytes:
                raise UserError(f"{self.folder / SHARDS / shards[i]} is shorter than its index says: "
                                "re-run the features stage")
        return out[0] if np.ndim(index) == 0 else out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self[:] if dtype is None else self[:].astype(dtype)

    def __del__(self):
        for fd, _ in self._files.values():
            os.close(fd)


def open_features(features: Path) -> tuple[Features, pd.DataFrame]:
    """All the features of a features folder, in read_index's order, and that index."""
    table = read_index(features)
    return Features(features, table["shard"].to_numpy(), table["row"].to_numpy()), table


def load_split(name: str, features: Path, splits: Path) -> tuple[Features, pd.DataFrame, int]:
    """(features, split rows, count of the split's videos without features: each named in a warning)."""
    rows = read_csv(splits / f"{name}.csv")
    index = read_index(features)[["video", "shard", "row"]]
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
    feats = Features(features, joined["shard"].to_numpy(), joined["row"].to_numpy(dtype=np.int64))
    return feats, joined.drop(columns=["shard", "row"]).reset_index(drop=True), int(missing.sum())
