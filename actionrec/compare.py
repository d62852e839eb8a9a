"""Backbones x heads x seeds through DVC's experiment queue -> a markdown table of mean ± std.

It cannot hang: a dvc-task/kombu race can kill the queue worker (`Unrecoverable error: JSONDecodeError`):
queued experiments get a worker again, a run "Running" with none is given up as lost, --timeout bounds the wait."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from dvc.exceptions import DvcException

from actionrec.errors import UserError, run_stage
from actionrec.params import HEADS
from actionrec.report import HEADLINE, command, markdown, one_video_note, stale


def queue_experiments(backbone: str, head: str, seeds: list[int], extra: list[str]) -> list[str]:
    """One experiment per seed, named here (so nothing is read from dvc's output); backbone "" keeps params.yaml's."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    names = [f"{backbone}{'-' * bool(backbone)}{head}-seed{seed}-{stamp}" for seed in seeds]
    for name, seed in zip(names, seeds):
        chosen = [f"features.backbone={backbone}"] * bool(backbone)
        command("dvc", "exp", "run", "--queue", "-n", name, "-S", f"train.head={head}", "-S", f"train.seed={seed}",
                *(arg for s in [*chosen, *extra] for arg in ("-S", s)), timeout=600)
    return names


# In a child process, which a timeout can stop: as a queued run ends, exp_show can wait forever on pygit2's
# blob reader, whose writer thread died on the commit the run just removed (NotFoundError; seen in make compare)
EXP_SHOW = "import json, dvc.api; print(json.dumps(dvc.api.exp_show(), default=str))"


def experiments() -> dict[str, dict]:
    """Name -> row of dvc.api.exp_show(); a saved experiment whose queue entry is gone has no state: it succeeded."""
    return {row["Experiment"]: dict(row, State=row.get("State") or "Success")
            for row in json.loads(command(sys.executable, "-c", EXP_SHOW, timeout=120)) if row.get("Experiment")}


def workers() -> int:
    """The queue workers alive: no public DVC call says it (an internal, pinned by tests/test_review.py)."""
    from dvc.repo import Repo

    with Repo() as repo:
        return len(repo.experiments.celery_queue.worker_status())


def wait_for_queue(names: list[str], jobs: int, timeout: float, poll: float = 10.0,
                   log=print) -> dict[str, str]:
    """{name: Success | Failed | Lost} once all have finished; a worker is started again where none is left."""
    deadline = time.monotonic() + timeout
    restarts, workerless, lost, gone, last = 0, 0, set(), set(), None
    while time.monotonic() < deadline:
        try:
            rows, alive = experiments(), workers()
        except (DvcException, UserError):  # read as a run's files came or went (a DVC race): next poll
            time.sleep(poll)
            continue
        mine = {name: "Lost" if name in lost else rows.get(name, {}).get("State", "Missing") for name in names}
        report = ", ".join(f"{sum(v == s for v in mine.values())} {s.lower()}" for s in sorted(set(mine.values())))
        if report != last:
            log(f"queue: {report} ({alive} worker{'s' * (alive != 1)})")
            last = report
        if all(state in ("Success", "Failed", "Lost") for state in mine.values()):
            return mine
        if gone & (gone := {name for name, state in mine.items() if state == "Missing"}):  # twice in a row
            raise UserError(f"experiment(s) {', '.join(sorted(gone))} left the queue unfinished (removed "
                            "with 'dvc queue remove'?); see 'dvc queue status'")
        running = [name for name, state in mine.items() if state == "Running"]
        workerless = workerless + 1 if alive == 0 else 0
        # a few polls in a row: a worker that is just starting or just exiting is not lost
        if workerless >= 3 and running:
            log(f"queue: {', '.join(running)} still 'Running' with no worker: given up as lost "
                "(see 'dvc queue logs NAME')")
            lost.update(running)
        elif workerless >= 2 and not running:
            restarts += 1
            if restarts > 5:
                raise UserError("the queue worker died 5 times; see 'dvc queue logs NAME' and "
                                "the celery logs under .dvc/tmp/exps/celery/")
            log("queue: experiments are queued but no worker is running (lost worker, e.g. "
                "'Unrecoverable error: JSONDecodeError'): starting one again")
            command("dvc", "queue", "start", "-j", str(jobs), timeout=120)
            workerless = 0
        time.sleep(poll)
    raise UserError(f"the queue did not finish within {timeout:.0f} s ({last}); it goes on in the "
                    "background: watch 'dvc queue status', then run this again with --collect")


def mean_std(values: list[float]) -> str:
    spread = f"{statistics.stdev(values):.3f}" if len(values) > 1 else "n/a"
    return f"{statistics.mean(values):.3f} ± {spread}" if values else "n/a"


def markdown_table(rows: list[dict], heads: list[str]) -> str:
    """A row per head, per backbone and head where the runs used more than one backbone."""
    body, backbones = [], sorted({r.get("features.backbone") for r in rows} - {None})
    for backbone in backbones or [None]:
        for head in heads:
            runs = sorted((r for r in rows if r.get("train.head") == head and r.get(next(iter(HEADLINE))) is not None
                           and r.get("features.backbone") == backbone), key=lambda r: r.get("train.seed") or 0)
            body.append([backbone, head, f"{len(runs)} ({','.join(str(int(r['train.seed'])) for r in runs)})",
                         *(mean_std([float(r[key]) for r in runs if r.get(key) is not None]) for key in HEADLINE)])
    names = ["backbone", "head", "runs (seeds)", *HEADLINE.values()]
    if len(backbones) < 2:  # one backbone: as before
        names, body = names[1:], [row[1:] for row in body]
    table = markdown(names, body) + "\n"
    videos = {r.get("test_videos") for r in rows} - {None}
    if len(videos) == 1:
        table += f"\nmean ± sample std over seeds; {one_video_note({'test_videos': int(videos.pop())})}\n"
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", default=",".join(HEADS))
    parser.add_argument("--backbones", default="", help="comma-separated features.backbone values (default: "
                        "params.yaml's); backbones side by side, each extracting its features once")
    parser.add_argument("--seeds", default="0,1,2", type=lambda text: [int(s) for s in text.split(",")],
                        help="comma-separated integers")
    parser.add_argument("--jobs", type=int, default=1, help="queue workers (dvc queue start -j)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the queue")
    parser.add_argument("--out", default="metrics/compare.md")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra override for every experiment, as dvc exp run -S")
    parser.add_argument("--collect", nargs="*", metavar="NAME",
                        help="only build the table from these finished experiments (default: all)")
    args = parser.parse_args()
    heads = args.heads.split(",")
    if not set(heads) <= set(HEADS):
        raise UserError(f"--heads must be a comma-separated list of {', '.join(HEADS)}")
    start = time.monotonic()
    names = args.collect or None
    if args.collect is None:
        # every experiment re-runs what is out of date: only train and evaluate may be
        redone = {"train", "evaluate"} | ({"features"} if args.backbones else set())  # each backbone extracts once
        before = sorted({name.split(":")[-1] for name in stale()} - redone)
        if before:
            raise UserError(f"stage(s) {', '.join(before)} not up to date: run 'make repro' (or 'dvc repro') "
                            "first, or every experiment of the sweep redoes them")
        names = [name for backbone in args.backbones.split(",") for head in heads
                 for name in queue_experiments(backbone, head, args.seeds, args.set)]
        print(f"queued {len(names)} experiments: {', '.join(names)}")
        command("dvc", "queue", "start", "-j", str(args.jobs), timeout=120)
        final = wait_for_queue(names, args.jobs, args.timeout)
        names = [name for name, state in final.items() if state == "Success"]
        if len(names) < len(final):
            print(f"warning: {len(final) - len(names)} experiment(s) did not succeed: "
                  f"{', '.join(n for n in final if n not in names)} (see 'dvc queue logs NAME'); "
                  "the table leaves them out", file=sys.stderr)
    rows = [row for name, row in experiments().items() if names is None or name in names]
    table = markdown_table(rows, heads)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table)
    print(table, end="")
    print(f"wrote {args.out} ({len(rows)} runs, {time.monotonic() - start:.0f} s)")


if __name__ == "__main__":
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    run_stage(main)
