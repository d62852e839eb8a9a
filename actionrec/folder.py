"""Your own videos: `<data.root>/<Class>/<any/sub/folders>/<file>.<video extension>`.

The class is the top folder's name. The group (the recording a clip was cut from, which must not
straddle splits) is the named group `group` of the regex `data.group_pattern`, searched in the path
below the class folder; without one, each video is its own group.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from actionrec.errors import UserError, run_stage

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")
# why an entry under data.root is skipped: the key is counted in metrics/subset.json
SKIP_REASONS = {"hidden": "hidden (name starts with '.')",
                "not_video": f"not a video ({', '.join(VIDEO_EXTENSIONS)}, any case)",
                "outside_class_folder": "not in a <Class>/ folder"}


def is_hidden(name: str) -> bool:  # .DS_Store, macOS '._*' resource forks, .thumbnails/: no videos, no classes
    return name.startswith(".")


def is_video(name: str) -> bool:
    return Path(name).suffix.lower() in VIDEO_EXTENSIONS


def videos_under(folder: str | Path, root: str | Path | None = None) -> tuple[list[str], dict[str, list[str]]]:
    """Sorted posix video paths at any depth below folder, links followed, and the hidden and other entries skipped
    (by reason; paths relative to root, by default folder)."""
    folder = Path(folder)
    root = Path(root or folder)
    videos, seen, skipped = [], set(), {"hidden": [], "not_video": []}
    for directory, dirs, files in os.walk(folder, followlinks=True):
        if os.path.realpath(directory) in seen:  # a link back up the tree: do not loop
            dirs.clear()
            continue
        seen.add(os.path.realpath(directory))
        here = Path(directory)
        for name in [d for d in dirs if is_hidden(d)]:
            skipped["hidden"].append((here / name).relative_to(root).as_posix() + "/")
            dirs.remove(name)
        for name in files:
            path = here / name
            if is_video(name) and not is_hidden(name):
                videos.append(path.relative_to(folder).as_posix())
            else:
                skipped["hidden" if is_hidden(name) else "not_video"].append(path.relative_to(root).as_posix())
    # sorted by code point, so the order is the same on every file system and OS
    return sorted(videos), {reason: sorted(paths) for reason, paths in skipped.items()}


def _group_of(rel: str, class_name: str, pattern: re.Pattern | None) -> str:
    if pattern is None:
        return rel
    match = pattern.search(rel)
    if not match or not match["group"]:
        raise UserError(f"data.group_pattern '{pattern.pattern}' finds no group in {class_name}/{rel}: "
                        "fix the pattern (it is searched in the path below the class folder) "
                        "or rename the file")
    return match["group"]


def scan_folder(root: str | Path, group_pattern: str = "") -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Rows (video, class_name, group, clip numbering a group's videos) sorted by path, and the entries skipped."""
    root = Path(root)
    pattern = re.compile(group_pattern) if group_pattern else None
    skipped: dict[str, list[str]] = {reason: [] for reason in SKIP_REASONS}
    rows, empty = [], []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if is_hidden(entry.name):
            skipped["hidden"].append(entry.name + ("/" if entry.is_dir() else ""))
        elif not entry.is_dir():
            skipped["outside_class_folder"].append(entry.name)
        else:
            videos, inside = videos_under(entry, root)
            for reason, paths in inside.items():
                skipped[reason] += paths
            if not videos:
                empty.append(entry.name)
            rows += [{"video": f"{entry.name}/{rel}", "class_name": entry.name,
                      "group": _group_of(rel, entry.name, pattern)} for rel in videos]
    if empty:
        raise UserError(f"class folder {', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''} under "
                        f"{root} holds no videos ({', '.join(e[1:] for e in VIDEO_EXTENSIONS)}): "
                        "add videos or remove the folder")
    if not rows:
        raise UserError(f"no class folders under {root}: data.source folder reads "
                        "<data.root>/<Class>/<video file>, one folder per class")
    clips = pd.DataFrame(rows, columns=["video", "class_name", "group"])
    clips["clip"] = clips.groupby(["class_name", "group"]).cumcount() + 1
    return clips, {reason: sorted(paths) for reason, paths in skipped.items()}


def main() -> None:
    """`make repro` runs this first: DVC does not see an empty folder (it hashes files), so a class folder
    emptied after a run changes nothing it tracks and no stage would report it. The subset stage's own check."""
    from actionrec.params import load_params

    data = load_params("data")["data"]
    if data["source"] == "folder" and Path(data["root"]).is_dir():  # else the subset stage says what is missing
        scan_folder(data["root"], data["group_pattern"])


if __name__ == "__main__":
    run_stage(main)
