"""UCF-101 names and lists: class from the folder, group and clip from `_gNN_cMM`."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

LISTS_DIR = Path(__file__).parent / "ucf101_lists"


def parse_clip_name(filename: str) -> tuple[str, int, int]:
    """'v_ApplyEyeMakeup_g08_c01.avi' -> ('ApplyEyeMakeup', 8, 1); ValueError otherwise."""
    match = re.fullmatch(r"v_(?P<cls>[A-Za-z0-9]+)_g(?P<group>\d+)_c(?P<clip>\d+)\.avi", filename)
    if not match:
        raise ValueError(f"not a UCF-101 clip name (v_<Class>_gNN_cMM.avi): {filename}")
    return match["cls"], int(match["group"]), int(match["clip"])


def scan_dataset(root: str | Path) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Rows (video, class_name, group, clip) sorted, and the files not used with why; the file's class matches
    its folder's ignoring case (real copies spell HandstandPushups folders' files v_HandStandPushups_...)."""
    root = Path(root)
    rows, rejected = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel, class_name = path.relative_to(root).as_posix(), path.parent.name
        try:
            if rel.count("/") != 1:
                raise ValueError("not in a <Class>/ folder directly under data.root")
            name_class, group, clip = parse_clip_name(path.name)
            if name_class.lower() != class_name.lower():
                raise ValueError(f"file names class {name_class} but lies in folder {class_name}")
        except ValueError as error:
            rejected.append((rel, str(error)))
            continue
        rows.append({"video": rel, "class_name": class_name, "group": group, "clip": clip})
    return pd.DataFrame(rows, columns=["video", "class_name", "group", "clip"]), rejected


def read_class_index(path: Path = LISTS_DIR / "classInd.txt") -> list[str]:
    """Class names in the official order (classInd.txt: '1 ApplyEyeMakeup', CRLF)."""
    return [line.split()[1] for line in path.read_text().splitlines() if line.strip()]


def read_split_list(kind: str, fold: int) -> list[str]:
    """Clip paths of trainlist0{fold}/testlist0{fold} (without the train lines' labels)."""
    path = LISTS_DIR / f"{kind}list0{fold}.txt"
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
