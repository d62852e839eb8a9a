"""Stage split: train/val/test by whole groups -> data/splits/*.csv and metrics/split.json."""
import json
import sys
from pathlib import Path

import pandas as pd

from actionrec.params import UserError, load_params, run_stage
from actionrec.splits import SPLITS, group_split, official_split, random_split, shared_groups
from actionrec.ucf101 import read_split_list


def main() -> None:
    cfg = load_params("split")["split"]
    subset = pd.read_csv("data/metadata.csv")
    fractions = {name: cfg[name] for name in SPLITS}
    if cfg["method"] == "group":
        split = group_split(subset, fractions, cfg["seed"])
    elif cfg["method"] == "official":
        test_list = read_split_list("test", cfg["fold"])
        split = official_split(subset, test_list, fractions, cfg["seed"])
        if not (split == "test").any():
            raise UserError(f"no clip of the subset is in testlist0{cfg['fold']}: split.method "
                            "official needs real UCF-101 (data.source: ucf101)")
    else:
        print("warning: split.method random puts clips of one group (one source video) in "
              "several splits: its accuracy is inflated; use it only to measure the leak",
              file=sys.stderr)
        split = random_split(subset, fractions, cfg["seed"])
    out = Path("data/splits")
    out.mkdir(parents=True, exist_ok=True)
    summary = {"method": cfg["method"], "shared_groups": shared_groups(subset, split),
               "shared_groups_counts": "(class, group) pairs with clips in more than one split"}
    for name in SPLITS:
        part = subset[split == name]
        part.to_csv(out / f"{name}.csv", index=False)
        summary[name] = {"videos": len(part), "groups": int(part.groupby(["class_name", "group"]).ngroups),
                         "classes": int(part["label"].nunique()),
                         "fraction": round(len(part) / len(subset), 4)}
    Path("metrics").mkdir(exist_ok=True)
    Path("metrics/split.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    run_stage(main)
