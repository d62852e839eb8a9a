"""Choose the class/video subset and split it into train/val/test without leaking groups.

A UCF-101 group (gNN) is cut from one long source video, so its clips share the actor, the
scene and the camera. A split that puts clips of one group on both sides measures
recognition of that scene, not of the action: whole groups go to one split.
"""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from actionrec.errors import UserError

SPLITS = ("train", "val", "test")


def class_rng(seed: int, class_name: str) -> np.random.Generator:
    """Each class draws from its own generator, seeded by the seed and the class name, so
    adding or removing a class leaves every other class's subset and split unchanged."""
    return np.random.default_rng([seed, zlib.crc32(class_name.encode())])


def choose_subset(clips: pd.DataFrame, classes: list[str], num_classes: int,
                  videos_per_class: int, seed: int) -> pd.DataFrame:
    """The subset with labels. Classes: the explicit list if given, else the first
    num_classes in alphabetical (= classInd.txt) order. A class with more clips than
    videos_per_class keeps clips round-robin over its groups (seeded), so as many groups
    as possible survive."""
    available = sorted(clips["class_name"].unique())
    if classes:
        missing = [c for c in classes if c not in available]
        if missing:
            raise UserError(f"subset.classes names classes not found under data.root: {missing[:5]}")
        chosen = sorted(classes)
    else:
        if num_classes > len(available):
            raise UserError(f"subset.num_classes is {num_classes} but data.root holds "
                            f"{len(available)} classes: lower it or point data.root elsewhere")
        chosen = available[:num_classes]
    kept = []
    for label, class_name in enumerate(chosen):
        rng = class_rng(seed, class_name)
        rows = clips[clips["class_name"] == class_name].sort_values(["group", "clip"])
        queues = [list(g.index[rng.permutation(len(g))]) for _, g in rows.groupby("group")]
        queues = [queues[i] for i in rng.permutation(len(queues))]  # no group always first
        picked = []
        while len(picked) < videos_per_class and any(queues):
            for queue in queues:
                if queue and len(picked) < videos_per_class:
                    picked.append(queue.pop(0))
        kept.append(clips.loc[picked].assign(label=label))
    subset = pd.concat(kept).sort_values(["label", "group", "clip"])
    return subset[["video", "label", "class_name", "group", "clip"]].reset_index(drop=True)


def _assign_groups(sizes: dict[int, int], fractions: dict[str, float],
                   rng: np.random.Generator) -> dict[int, str]:
    """Greedy: largest groups first (ties in seeded order), each to the split furthest below
    its target count; every split gets a group first when there are enough groups."""
    order = list(rng.permutation(sorted(sizes)))
    order.sort(key=lambda g: -sizes[g])  # stable: seeded order among equal sizes
    total = sum(sizes.values())
    counts = {s: 0 for s in fractions}
    assignment = {}
    # smallest groups seed the small splits so that each split holds the class
    small_first = sorted(fractions, key=lambda s: fractions[s])
    for split in small_first[:-1]:
        if len(order) > 1:  # keep at least one group for the largest split
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
    """test = the official test list restricted to the subset, exactly; val = whole groups
    carved out of the official train part."""
    in_test = subset["video"].isin(set(test_list))
    result = pd.Series("test", index=subset.index)
    train_part = subset[~in_test]
    share = {"train": fractions["train"], "val": fractions["val"]}
    total = sum(share.values())
    result[train_part.index] = group_split(train_part, {k: v / total for k, v in share.items()}, seed)
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
