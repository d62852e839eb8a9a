"""Stage split: METADATA's videos into train/val/test by whole groups -> OUT/<split>.csv and METRICS."""
import json
import sys
from pathlib import Path

from actionrec.errors import UserError, run_stage
from actionrec.params import load_params
from actionrec.pipeline import read_csv
from actionrec.splits import SPLITS, group_split, official_split, random_split, shared_groups
from actionrec.ucf101 import read_split_list


def main(metadata: str, out: str, metrics: str) -> None:
    params = load_params("data", "split")
    cfg, data = params["split"], params["data"]
    if cfg["method"] == "official" and data["source"] != "ucf101":
        raise UserError(f"split.method official uses the published UCF-101 lists, so it needs data.source: ucf101 "
                        f"(not {data['source']}): use split.method: group")
    if data["source"] == "folder" and not data["group_pattern"]:
        print("warning: data.group_pattern is not set, so each video is its own group and clips cut from one "
              "recording will leak between splits: set it to a regex whose (?P<group>...) names the recording, "
              "e.g. -S \"data.group_pattern='(?P<group>[^_/]+)_'\" for alice_take1.mp4 or '^(?P<group>[^/]+)/' "
              "for one sub-folder per recording", file=sys.stderr)
    subset = read_csv(metadata)
    fractions = {name: cfg[name] for name in SPLITS}
    if cfg["method"] == "group":
        split = group_split(subset, fractions, cfg["seed"])
    elif cfg["method"] == "official":
        split = official_split(subset, read_split_list("test", cfg["fold"]), fractions, cfg["seed"])
        if not (split == "test").any():
            raise UserError(f"no clip of the subset is in testlist0{cfg['fold']}: split.method official needs real "
                            "UCF-101 (data.source: ucf101)")
    else:
        print("warning: split.method random puts clips of one group (one source video) in several splits: its "
              "accuracy is inflated; use it only to measure the leak", file=sys.stderr)
        split = random_split(subset, fractions, cfg["seed"])
    empty = [name for name in ("train", "val") if not (split == name).any()]
    if empty:
        raise UserError(f"split.method {cfg['method']} left the {' and '.join(empty)} split empty "
                        f"({subset['group'].nunique()} groups in {len(subset)} videos): use more videos or "
                        "groups per class (subset.videos_per_class), or split.method: group")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"method": cfg["method"], "shared_groups": shared_groups(subset, split),
               "shared_groups_counts": "(class, group) pairs with clips in more than one split"}
    for name in SPLITS:
        part = subset[split == name]
        part.to_csv(out / f"{name}.csv", index=False)
        summary[name] = {"videos": len(part), "groups": int(part.groupby(["class_name", "group"]).ngroups),
                         "classes": int(part["label"].nunique()), "fraction": round(len(part) / len(subset), 4)}
    Path(metrics).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    run_stage(main)
