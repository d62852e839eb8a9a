"""Choose the subset and split it into train/val/test by whole groups: a UCF-101 group (gNN) is cut from one
source video (one actor, scene, camera), so a group on both sides would measure the scene, not the action."""
from __future__ import annotations

import itertools
import zlib

import numpy as np
import pandas as pd

from actionrec.errors import UserError

SPLITS = ("train", "val", "test")


def class_rng(seed: int, class_name: str) -> np.random.Generator:
    """A generator per class (seed, name): adding a class leaves the others' subset and split unchanged."""
    return np.random.default_rng([seed, zlib.crc32(class_name.encode())])


def choose_subset(clips: pd.DataFrame, classes: list[str], num_classes: int,
                  videos_per_class: int, seed: int) -> pd.DataFrame:
    """The labelled subset; a class keeps its clips round-robin over its groups (seeded): most groups survive."""
    available = sorted(clips["class_name"].unique())
    missing = [c for c in classes if c not in available]
    if missing:
        raise UserError(f"subset.classes names classes not found under data.root: {missing[:5]}")
    if not classes and num_classes > len(available):
        raise UserError(f"subset.num_classes is {num_classes} but data.root holds "
                        f"{len(available)} classes: lower it or point data.root elsewhere")
    chosen = sorted(classes) if classes else available[:num_classes]
    kept = []
    for label, class_name in enumerate(chosen):
        rng = class_rng(seed, class_name)
        rows = clips[clips["class_name"] == class_name].sort_values(["group", "clip"])
        queues = [list(g.index[rng.permutation(len(g))]) for _, g in rows.groupby("group")]
        queues = [queues[i] for i in rng.permutation(len(queues))]  # no group always first
        rounds = itertools.zip_longest(*queues)  # one clip of each group in turn
        picked = [index for row in rounds for index in row if index is not None][:videos_per_class]
        kept.append(clips.loc[picked].assign(label=label))
    subset = pd.concat(kept).sort_values(["label", "group", "clip"])
    return subset[["video", "label", "class_name", "group", "clip"]].reset_index(drop=True)


def _assign_groups(sizes: dict[int, int], fractions: dict[str, float],
                   rng: np.random.Generator) -> dict[int, str]:
    """Greedy: largest groups first, each to the split furthest below its target; small splits seeded first."""
    order = list(rng.permutation(sorted(sizes)))
    order.sort(key=lambda g: -sizes[g])  # stable: seeded order among equal sizes
    total = sum(sizes.values())
    counts = {s: 0 for s in fractions}
    assignment = {}
    # smallest groups seed the small splits so that each split holds the class (group_split: enough groups)
    for split in sorted(fractions, key=lambda s: fractions[s])[:-1]:
        group = order.pop()
        assignment[group] = split
        counts[split] += sizes[group]
    tie_break = dict(zip(fractions, rng.permutation(len(fractions))))  # no split always wins ties
    for group in order:
        split = max(fractions, key=lambda s: (round(fractions[s] * total - counts[s], 9), tie_break[s]))
        assignment[group] = split
        counts[split] += sizes[group]
    return assignment


def group_split(subset: pd.DataFrame, fractions: dict[str, float], seed: int) -> pd.Series:
    """Split name per row: whole groups per class, stratified by class."""
    result = pd.Series("", index=subset.index)
    for class_name, rows in subset.groupby("class_name", sort=True):
        rng = class_rng(seed, class_name)
        sizes = rows.groupby("group").size().to_dict()
        if len(sizes) < len(fractions):
            raise UserError(f"class {class_name} has {len(sizes)} groups; a group split needs "
                            f"at least {len(fractions)}: add videos or use split.method: random")
        assignment = _assign_groups(sizes, fractions, rng)
        result[rows.index] = rows["group"].map(assignment)
    return result


def official_split(subset: pd.DataFrame, test_list: list[str], fractions: dict[str, float],
                   seed: int) -> pd.Series:
    """test: the official test list within the subset; val: whole groups of the official train part."""
    result = pd.Series("test", index=subset.index)
    train_part = subset[~subset["video"].isin(set(test_list))]
    total = fractions["train"] + fractions["val"]
    result[train_part.index] = group_split(train_part, {k: fractions[k] / total for k in ("train", "val")}, seed)
    return result


def random_split(subset: pd.DataFrame, fractions: dict[str, float], seed: int) -> pd.Series:
    """The leaky split of the reference notebook: clips shuffled per class, groups ignored."""
    result = pd.Series("", index=subset.index)
    for class_name, rows in subset.groupby("class_name", sort=True):
        rng = class_rng(seed, class_name)
        index = list(rows.index[rng.permutation(len(rows))])
        n_test = max(1, round(fractions["test"] * len(index)))
        n_val = max(1, round(fractions["val"] * len(index)))
        result[index[:n_test]] = "test"
        result[index[n_test:n_test + n_val]] = "val"
        result[index[n_test + n_val:]] = "train"
    return result


def shared_groups(subset: pd.DataFrame, split: pd.Series) -> int:
    """How many (class, group) pairs have clips in more than one split."""
    keys = subset["class_name"] + "/" + subset["group"].astype(str)
    return int((pd.DataFrame({"key": keys, "split": split}).groupby("key")["split"].nunique() > 1).sum())
