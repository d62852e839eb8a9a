"""`make push`: `dvc push --run-cache`, then the outputs of every saved run.

DVC 3.67's push leaves out the git-kept outputs (metrics, plots) of runs not in the workspace, so a
teammate's `dvc exp run --pull` finds the run but trains again. No public API pushes them: the
internals used are pinned by tests/test_review.py. Teammates need only `dvc pull --run-cache`."""
from __future__ import annotations

import argparse
from pathlib import Path

from dvc.exceptions import DvcException
from dvc.repo import Repo

from actionrec.errors import UserError, run_stage


def run_cache_entries(repo: Repo) -> list[tuple[str, str]]:
    """(stage key, run value) of every run saved in .dvc/cache/runs/<xx>/<key>/<value>."""
    runs = Path(repo.cache.legacy.path) / "runs"
    return sorted((entry.parent.name, entry.name) for entry in runs.glob("*/*/*") if entry.is_file())


def push(remote: str | None = None) -> None:
    try:
        with Repo() as repo:
            pushed = repo.push(remote=remote, run_cache=True)
            for objs in repo.stage_cache.get_used_objs(run_cache_entries(repo), force=True).values():
                pushed += len(repo.cloud.push(objs, remote=remote).transferred)
            print(f"pushed {pushed} files; {len(run_cache_entries(repo))} saved runs are on the remote")
    except DvcException as error:  # no remote set, remote unreachable, ...
        raise UserError(" ".join(str(error).split()) or type(error).__name__) from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--remote", help="the DVC remote (default: the project's default remote)")
    push(parser.parse_args().remote)


if __name__ == "__main__":
    run_stage(main)
