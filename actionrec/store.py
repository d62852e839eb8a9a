"""`make gc`: the feature store's entries (stages/features.py) that nothing here can use, removed.

    python -m actionrec.store         # keep the entries of the current params and code, and of each branch's
                                      # and tag's dvc.lock; remove the rest (make gc)
    python -m actionrec.store --all   # remove every entry (make clean)

An entry serves a features run whose params and code are those of its key.json (actionrec.pipeline.store_key),
on the same device type and package versions (its fingerprint). A dvc.lock records the same of its features
stage, so each branch's and tag's latest commit says which entries it can use, wherever it was made."""
from __future__ import annotations

import argparse
import json
import shutil

import yaml

from actionrec.errors import run_stage
from actionrec.params import load_params
from actionrec.pipeline import feature_store, paths, store_key
from actionrec.report import command, git_show


def lock_key(lock: dict) -> dict | None:
    """store_key as a dvc.lock records it; None where it has no features stage."""
    entry = (lock or {}).get("stages", {}).get("features")
    return entry and {"features": entry.get("params", {}).get("params.yaml", {}).get("features"),
                      "code": {dep["path"]: dep.get("md5") for dep in entry["deps"] if dep["path"].endswith(".py")}}


def keys_in_use() -> list[dict]:
    """The current params' and code's key, and that of the dvc.lock of HEAD and of every branch and tag."""
    refs = command("git", "for-each-ref", "--format=%(refname)", "refs/heads", "refs/tags", "refs/remotes").split()
    locks = [git_show(ref, "dvc.lock") for ref in ["HEAD", *refs]]
    return [store_key(load_params("features")["features"]),
            *filter(None, (lock_key(yaml.safe_load(lock)) for lock in locks if lock))]


def collect(everything: bool = False) -> None:
    store = feature_store(paths("features")["out"])
    keep = [] if everything else keys_in_use()
    entries = sorted(path for path in store.iterdir() if path.is_dir()) if store.is_dir() else []
    removed, freed = [], 0
    for entry in entries:
        key = entry / "key.json"
        if key.is_file() and json.loads(key.read_text()) in keep:
            continue
        freed += sum(path.stat().st_size for path in entry.rglob("*") if path.is_file())
        shutil.rmtree(entry)
        removed.append(entry.name)
    print(f"{store}: removed {len(removed)} entries ({freed / 2**20:.1f} MiB), kept {len(entries) - len(removed)}"
          + ("" if everything else " (the current params' and those of each branch's and tag's dvc.lock)"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="remove every entry (make clean)")
    collect(parser.parse_args().all)


if __name__ == "__main__":
    run_stage(main)
