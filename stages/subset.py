"""Stage subset: the classes and up to videos_per_class clips each -> METADATA, VIDEO_LIST (the videos alone,
all the features stage depends on: relabelling never re-runs it) and METRICS."""
import json
import sys
from pathlib import Path

from actionrec.folder import SKIP_REASONS, scan_folder
from actionrec.errors import UserError, run_stage
from actionrec.params import load_params
from actionrec.splits import choose_subset
from actionrec.ucf101 import scan_dataset


def scan(data: dict, root: Path) -> tuple:
    """The clip table, the files to warn about as (path, reason), and the counts of files not used by reason."""
    if data["source"] == "folder":
        clips, skipped = scan_folder(root, data["group_pattern"])
        # hidden files (.DS_Store, ._*) are only counted: they are noise, not mistakes
        warn = [(path, SKIP_REASONS[reason]) for reason, paths in skipped.items()
                if reason != "hidden" for path in paths]
        return clips, warn, {f"skipped_{reason}": len(paths) for reason, paths in skipped.items()}
    clips, rejected = scan_dataset(root)
    if clips.empty:
        raise UserError(f"no clips named <Class>/v_<Class>_gNN_cMM.avi under {root} (for other "
                        "names set data.source: folder, README: Train on your own videos)")
    return clips, rejected, {}


def main(metadata: str, video_list: str, metrics: str) -> None:
    params = load_params("data", "subset")
    data, cfg = params["data"], params["subset"]
    root = Path(data["root"])
    if not root.is_dir():
        raise UserError(f"data.root {root} does not exist: run 'dvc repro' for the demo data, get "
                        "UCF-101 with 'make ucf101', or point it at your <Class>/<video> folder")
    clips, warn, skipped = scan(data, root)
    for path, reason in warn[:10]:
        print(f"warning: not used: {path}: {reason}", file=sys.stderr)
    if len(warn) > 10:
        print(f"warning: {len(warn) - 10} more files not used", file=sys.stderr)
    subset = choose_subset(clips, cfg["classes"], cfg["num_classes"], cfg["videos_per_class"], cfg["seed"])
    subset.to_csv(metadata, index=False)
    subset[["video"]].sort_values("video").to_csv(video_list, index=False)
    not_used = sum(skipped.values()) if skipped else len(warn)
    summary = {"classes": int(subset["label"].nunique()), "videos": len(subset),
               "videos_found": len(clips), "files_not_used": not_used, **skipped}
    Path(metrics).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"subset: {summary['videos']} videos of {summary['classes']} classes ({not_used} files not used)")


if __name__ == "__main__":
    run_stage(main)
