"""Stage subset: pick the classes and up to videos_per_class clips each -> data/metadata.csv."""
import json
import sys
from pathlib import Path

from actionrec.params import UserError, load_params, run_stage
from actionrec.splits import choose_subset
from actionrec.ucf101 import scan_dataset


def main() -> None:
    params = load_params("data", "subset")
    data, cfg = params["data"], params["subset"]
    root = Path(data["root"])
    if not root.is_dir():
        raise UserError(f"data.root {root} does not exist: run 'dvc repro' for the demo data, or "
                        "get UCF-101 with 'make ucf101' (README: Train on real UCF-101)")
    clips, rejected = scan_dataset(root)
    for path, reason in rejected[:10]:
        print(f"warning: not used: {path}: {reason}", file=sys.stderr)
    if len(rejected) > 10:
        print(f"warning: {len(rejected) - 10} more files not used", file=sys.stderr)
    if clips.empty:
        raise UserError(f"no clips named <Class>/v_<Class>_gNN_cMM.avi under {root}")
    subset = choose_subset(clips, cfg["classes"], cfg["num_classes"], cfg["videos_per_class"],
                           cfg["seed"])
    Path("data").mkdir(exist_ok=True)
    subset.to_csv("data/metadata.csv", index=False)
    summary = {"classes": int(subset["label"].nunique()), "videos": len(subset),
               "videos_found": len(clips), "files_not_used": len(rejected)}
    Path("metrics").mkdir(exist_ok=True)
    Path("metrics/subset.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"subset: {summary['videos']} videos of {summary['classes']} classes "
          f"({len(rejected)} files not used)")


if __name__ == "__main__":
    run_stage(main)
