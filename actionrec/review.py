"""`make review BASE=rev`: the PR report with the base reproduced on this machine.

    python -m actionrec.review --base origin/main [--out report]

A base branch's committed metrics come from whatever machine committed them; features, and so
the metrics, differ slightly from machine to machine (README: Reproducibility). Comparing them
with a head reproduced here would show changes that come from the machine, not from the pull
request. So this reproduces BASE here too, in a temporary git worktree that shares this
repository's DVC cache and run-cache (stages that base and head share run once, or are restored
from a teammate's pushed runs), commits the base's reproduced dvc.lock, metrics and plots on a
private ref (refs/review/base), and writes the report of the workspace against that commit.
The workspace itself must already be reproduced (`make repro`)."""
from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

from actionrec.errors import UserError, run_stage
from actionrec.report import command as sh, write_report

REF = "refs/review/base"
IDENTITY = ["-c", "user.name=review", "-c", "user.email=review@localhost"]


def reproduce_base(base: str) -> str:
    """Reproduce base in a temporary worktree on this repository's DVC cache; the commit (on
    REF) that holds its dvc.lock, metrics and plots as this machine made them."""
    commit = sh("git", "rev-parse", "--verify", f"{base}^{{commit}}").strip()
    cache = Path(sh("dvc", "cache", "dir").strip()).resolve()
    with tempfile.TemporaryDirectory(prefix="review-base-") as tmp:
        tree = Path(tmp) / "base"
        sh("git", "worktree", "add", "--detach", "--quiet", str(tree), commit)
        try:
            sh("dvc", "cache", "dir", "--local", str(cache), cwd=tree)
            # data versioned with `dvc add` (real UCF-101) comes from the shared cache
            subprocess.run(["dvc", "checkout", "--quiet"], cwd=tree, capture_output=True)
            print(f"reproducing {base} ({commit[:8]}) here, on this repository's DVC cache")
            sh("dvc", "repro", cwd=tree)
            sh("git", "add", "-A", "dvc.lock", "metrics", "plots", cwd=tree)
            sh("git", *IDENTITY, "commit", "--quiet", "--allow-empty", "-m",
               f"{base} reproduced on this machine (make review)", cwd=tree)
            reproduced = sh("git", "rev-parse", "HEAD", cwd=tree).strip()
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], capture_output=True)
    sh("git", "update-ref", REF, reproduced)
    return reproduced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the git revision to compare with (e.g. origin/main)")
    parser.add_argument("--out", type=Path, default=Path("report"), help="output folder (default: report)")
    args = parser.parse_args()
    status = sh("dvc", "status", "--json").strip()
    if status not in ("", "{}"):
        raise UserError("the workspace is not reproduced (dvc status is not clean): run 'make repro' first")
    reproduced = reproduce_base(args.base)
    print(write_report(reproduced, args.out, label=f"{args.base} (reproduced here)"))


if __name__ == "__main__":
    run_stage(main)
