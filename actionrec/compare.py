"""Heads x seeds through DVC's experiment queue -> a markdown table of mean ± std.

    python -m actionrec.compare [--heads lstm,gru,transformer,mean] [--seeds 0,1,2]
                                [--jobs 1] [--timeout 1800] [--out metrics/compare.md]

Queues `dvc exp run --queue -S train.head=H -S train.seed=0,1,2` per head, runs them with
`dvc queue start`, polls `dvc queue status` until every one of them has finished, then reads
`dvc exp show --json`. The workspace is left as it was: queued experiments run in temp dirs.

It cannot hang: a known dvc-task/kombu race can kill the queue worker (`Unrecoverable error:
JSONDecodeError`), leaving experiments "Queued" with no worker. When the queue has queued
experiments but no worker, it starts one again; a run still "Running" with no worker is given
up as lost; the whole wait is bounded by --timeout."""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from actionrec.params import HEADS
FINISHED = ("Success", "Failed")


class CompareError(Exception):
    """A one-line reason the sweep could not finish, with what to do."""


def dvc(*args: str, timeout: float = 600, stdout_only: bool = False) -> str:
    """Run a dvc command; its stdout (+ stderr), or CompareError with its last line.
    Output goes through a temp file, not a pipe: `dvc queue start` leaves a daemon behind
    that inherits the output, and a pipe would wait for that daemon to exit."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            code = subprocess.run(["dvc", *args], stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                  timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            raise CompareError(f"'dvc {' '.join(args)}' did not answer in {timeout:.0f} s") from None
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if code != 0:
        last = (stderr.strip() or stdout.strip() or "no output").splitlines()[-1]
        raise CompareError(f"'dvc {' '.join(args)}' failed: {last}")
    return stdout if stdout_only else stdout + stderr


def check_features_ready() -> None:
    """Every queued experiment re-runs what is out of date: make sure that is only train and
    evaluate, not the slow stages before them."""
    status = json.loads(dvc("status", "--json", timeout=300, stdout_only=True) or "{}")
    stale = sorted({name.split(":")[-1] for name in status} - {"train", "evaluate"})
    if stale:
        raise CompareError(f"stage(s) {', '.join(stale)} not up to date: run 'make repro' (or 'dvc repro') "
                           "first, or every experiment of the sweep redoes them")


def queue_experiments(head: str, seeds: list[int], extra: list[str]) -> list[str]:
    """Queue one experiment per seed for head; their names, as dvc printed them."""
    out = dvc("exp", "run", "--queue", "-S", f"train.head={head}",
              "-S", f"train.seed={','.join(map(str, seeds))}", *sum((["-S", s] for s in extra), []))
    names = re.findall(r"Queued experiment '([^']+)'", out)
    if len(names) != len(seeds):
        raise CompareError(f"expected {len(seeds)} queued experiments for head {head}, dvc printed: {out.strip()}")
    return names


def parse_queue_status(text: str) -> tuple[dict[str, str], int]:
    """`dvc queue status` output -> ({experiment name: status}, number of workers)."""
    statuses = {}
    for line in text.splitlines():
        tokens = line.split()
        if len(tokens) >= 4 and re.fullmatch(r"[0-9a-f]{7}", tokens[0]) and tokens[-1] in (
                "Queued", "Running", "Success", "Failed", "Unknown"):
            statuses[tokens[1]] = tokens[-1]
    match = re.search(r"Worker status: (\d+) active, (\d+) idle", text)
    workers = int(match.group(1)) + int(match.group(2)) if match else 0
    return statuses, workers


def wait_for_queue(names: list[str], jobs: int, timeout: float, poll: float = 10.0,
                   log=print) -> dict[str, str]:
    """Poll `dvc queue status` until every named experiment has finished; restart the worker
    when queued experiments have none. Returns {name: Success | Failed | Lost}."""
    deadline = time.monotonic() + timeout
    restarts, workerless_polls, lost = 0, 0, set()
    last_report = None
    while True:
        statuses, workers = parse_queue_status(dvc("queue", "status", timeout=120))
        mine = {name: "Lost" if name in lost else statuses.get(name, "Missing") for name in names}
        counts = {s: sum(v == s for v in mine.values()) for s in sorted(set(mine.values()))}
        report = ", ".join(f"{n} {s.lower()}" for s, n in counts.items())
        if report != last_report:
            log(f"queue: {report} ({workers} worker{'s' * (workers != 1)})")
            last_report = report
        if all(s in (*FINISHED, "Lost") for s in mine.values()):
            return mine
        if "Missing" in mine.values():
            missing = [n for n, s in mine.items() if s == "Missing"]
            raise CompareError(f"experiment(s) {', '.join(missing)} left the queue unfinished "
                               "(removed with 'dvc queue remove'?); see 'dvc queue status'")
        workerless_polls = workerless_polls + 1 if workers == 0 else 0
        # two polls in a row: a worker that is just starting or just exiting is not lost
        if workerless_polls >= 3 and "Running" in mine.values():
            running = [n for n, s in mine.items() if s == "Running"]
            log(f"queue: {', '.join(running)} still 'Running' with no worker: given up as lost "
                "(see 'dvc queue logs NAME')")
            lost.update(running)
        elif workerless_polls >= 2 and "Queued" in mine.values() and "Running" not in mine.values():
            restarts += 1
            if restarts > 5:
                raise CompareError("the queue worker died 5 times; see 'dvc queue logs NAME' and "
                                   "the celery logs under .dvc/tmp/exps/celery/")
            log("queue: experiments are queued but no worker is running (lost worker, e.g. "
                "'Unrecoverable error: JSONDecodeError'): starting one again")
            dvc("queue", "start", "-j", str(jobs), timeout=120)
            workerless_polls = 0
        if time.monotonic() > deadline:
            raise CompareError(f"the queue did not finish within {timeout:.0f} s ({report}); it goes on in "
                               "the background: watch 'dvc queue status', then run this again with --collect")
        time.sleep(poll)


def _flatten(value, prefix: str = "") -> dict:
    """{"train": {"head": "gru"}} -> {"train.head": "gru"}."""
    if not isinstance(value, dict):
        return {prefix[:-1]: value}
    out = {}
    for key, item in value.items():
        out.update(_flatten(item, f"{prefix}{key}."))
    return out


def experiment_records(shown: list, names: list[str] | None = None) -> list[dict]:
    """params.yaml and metrics/evaluate.json of the experiments in `dvc exp show --json`
    output (all, or the named ones): [{name, params: {"train.head": ...}, metrics: {...}}]."""
    records = []
    # top level: the workspace and the baseline commit(s); their experiments are in "revs"
    experiments = [rev for node in shown for exp in node.get("experiments") or [] for rev in exp.get("revs") or []]
    for node in experiments:
        data = node.get("data") or {}
        if node.get("name") and (names is None or node["name"] in names):
            params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
            metrics = ((data.get("metrics") or {}).get("metrics/evaluate.json") or {}).get("data") or {}
            records.append({"name": node["name"], "params": _flatten(params), "metrics": _flatten(metrics)})
    return records


def _mean_std(values: list[float]) -> str:
    if not values:
        return "n/a"
    spread = f"{statistics.stdev(values):.3f}" if len(values) > 1 else "n/a"
    return f"{statistics.mean(values):.3f} ± {spread}"


def markdown_table(records: list[dict], heads: list[str]) -> str:
    """Per head: mean ± std (sample std over seeds) of test accuracy and macro-F1, runs, and
    the order-blind logistic-regression baseline of the same runs."""
    lines = ["| head | test accuracy | test macro-F1 | runs (seeds) | order-blind baseline accuracy |",
             "|---|---|---|---|---|"]
    videos = set()
    for head in heads:
        runs = [r for r in records if r["params"].get("train.head") == head
                and "test_accuracy" in r["metrics"]]
        runs.sort(key=lambda r: r["params"].get("train.seed", 0))
        videos.update(r["metrics"].get("test_videos") for r in runs)
        metric = lambda key: [float(r["metrics"][key]) for r in runs if key in r["metrics"]]  # noqa: E731
        seeds = ",".join(str(r["params"].get("train.seed")) for r in runs)
        lines.append(f"| {head} | {_mean_std(metric('test_accuracy'))} | {_mean_std(metric('test_macro_f1'))} "
                     f"| {len(runs)} ({seeds}) | {_mean_std(metric('baseline_test_accuracy'))} |")
    videos.discard(None)
    if len(videos) == 1:
        count = int(videos.pop())
        lines.append("")
        lines.append(f"mean ± sample std over seeds; {count} test videos, so one video = "
                     f"{100 / count:.1f} points of accuracy.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", default=",".join(HEADS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=1, help="queue workers (dvc queue start -j)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the queue")
    parser.add_argument("--out", default="metrics/compare.md")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra override for every experiment, as dvc exp run -S")
    parser.add_argument("--collect", nargs="*", metavar="NAME",
                        help="only build the table from these finished experiments (default: all)")
    args = parser.parse_args()
    heads = args.heads.split(",")
    try:
        if not set(heads) <= set(HEADS) or not heads:
            raise CompareError(f"--heads must be a comma-separated list of {', '.join(HEADS)}")
        try:
            seeds = [int(s) for s in args.seeds.split(",")]
        except ValueError:
            raise CompareError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
        start = time.monotonic()
        if args.collect is None:
            check_features_ready()
            names = []
            for head in heads:
                names += queue_experiments(head, seeds, args.set)
            print(f"queued {len(names)} experiments: {', '.join(names)}")
            dvc("queue", "start", "-j", str(args.jobs), timeout=120)
            final = wait_for_queue(names, args.jobs, args.timeout)
            bad = [n for n, s in final.items() if s != "Success"]
            if bad:
                print(f"warning: {len(bad)} experiment(s) did not succeed: {', '.join(bad)} "
                      "(see 'dvc queue logs NAME'); the table leaves them out", file=sys.stderr)
            names = [n for n, s in final.items() if s == "Success"]
        else:
            names = args.collect or None
        shown = json.loads(dvc("exp", "show", "--json", timeout=300, stdout_only=True))
        records = experiment_records(shown, names)
        table = markdown_table(records, heads)
    except CompareError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table)
    print(table, end="")
    print(f"wrote {args.out} ({len(records)} runs, {time.monotonic() - start:.0f} s)")


if __name__ == "__main__":
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    main()
