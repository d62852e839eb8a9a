"""PR review without a network: params, metrics and plots of the workspace against a revision.

The plots are DVC's own Vega-Lite specs, rendered by vl-convert, which bundles Vega: no plotting
code here, and no fetch from a CDN (which the page `dvc plots show` writes needs)."""
from __future__ import annotations

import argparse
import html
import json
import re
import subprocess
import tempfile
from pathlib import Path

import dvc.api
import pandas as pd
import vl_convert
import yaml
from dvc.exceptions import DvcException

from actionrec.errors import UserError, run_stage
from actionrec.pipeline import paths, read_csv

# The numbers a reviewer looks for first, in this order; make verify holds each to one_video.
HEADLINE = {"test_accuracy": "test accuracy", "test_macro_f1": "test macro-F1",
            "baseline_test_accuracy": "order-blind baseline accuracy",
            "baseline_test_macro_f1": "order-blind baseline macro-F1",
            "temporal_gain_test_accuracy": "temporal gain (accuracy over the baseline)"}


def one_video(key: str, videos: int, classes: int) -> float:
    """How far one test video can move a headline metric: 1/N of an accuracy, 2/C of a macro-F1
    (two classes' F1, each by at most 1), twice 1/N of a gain (two accuracies)."""
    return (2 / classes if "f1" in key else 1 / videos) * (2 if "gain" in key else 1)


def command(*args: str, cwd: Path | None = None, timeout: float | None = None) -> str:
    """Stdout; a UserError with its last error line on failure. Temp files, not pipes: `dvc queue
    start` leaves a daemon holding them, which a pipe would wait for."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            code = subprocess.run(args, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                  text=True, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            raise UserError(f"`{' '.join(args)}` did not answer in {timeout:.0f} s") from None
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if code != 0:
        lines = [line for line in (stderr or stdout).splitlines() if line.strip()] or ["no output"]
        raise UserError(f"`{' '.join(args)}` failed: {lines[-1]}")
    return stdout


def stale() -> list[str]:
    return sorted(json.loads(command("dvc", "status", "--json", timeout=300) or "{}"))


def git_show(rev: str, path: str) -> bytes | None:
    """path as committed at rev; None where git has no such file there."""
    result = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True)
    return result.stdout if result.returncode == 0 else None


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"train": {"head": "gru"}} -> {"train.head": "gru"}"""
    out = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
    return out


def changed(old: dict, new: dict) -> list[str]:
    return [key for key in {**old, **new} if old.get(key) != new.get(key)]


def moves(old: dict, new: dict) -> str:
    return ", ".join(f"{key} {old.get(key)} -> {new.get(key)}" for key in changed(old, new))


def results(rev: str | None) -> tuple[dict, dict]:
    """Flat (params, metrics) at rev (None: the workspace). A metrics file that the revision or the
    workspace lacks is left out: DVC 3.67 fails on it, even at a revision that has it."""
    try:
        params = flatten(dvc.api.params_show(rev=rev))
        try:
            return params, flatten(dvc.api.metrics_show(rev=rev))
        except FileNotFoundError:
            stages = yaml.safe_load(git_show(rev, "dvc.yaml") if rev else Path("dvc.yaml").read_text())["stages"]
            files = [next(iter(entry)) if isinstance(entry, dict) else entry
                     for stage in stages.values() for entry in stage.get("metrics", [])]
            there = [f for f in files if Path(f).is_file() and (rev is None or git_show(rev, f) is not None)]
            return params, flatten(dvc.api.metrics_show(*there, rev=rev)) if there else {}
    except (DvcException, OSError) as error:
        raise UserError(f"no params or metrics at {rev or 'the workspace'}: {error}") from None


def fmt(value) -> str:
    return "-" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def rows(old: dict | None, new: dict, keys, names: dict | None = None) -> list[list[str]]:
    out = []
    for key in keys:
        name, then, now = (names or {}).get(key, key), (old or {}).get(key), new.get(key)
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (then, now))
        change = "" if then == now else f"{now - then:+.4g}" if numbers else "changed"
        out.append([name, fmt(now)] if old is None else [name, fmt(then), fmt(now), change])
    return out


def markdown(header: list[str], body: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|---" * len(header) + "|",
                      *("| " + " | ".join(row) + " |" for row in body)])


def one_video_note(metrics: dict) -> str:
    videos = metrics.get("test_videos")
    return f"{videos} test videos: one video is {100 / videos:.1f} points of accuracy." if videos else ""


def plot_specs(base: str | None) -> tuple[dict[str, dict], dict[str, str]]:
    """({plot: Vega-Lite spec, base's data overlaid}, {plot: why not drawn}); plots only base has are left out."""
    out = command("dvc", "plots", "diff", "--json", base) if base else command("dvc", "plots", "show", "--json")
    specs = {name: entry["content"] for name, entries in json.loads(out).get("data", {}).items()
             for entry in entries if entry["type"] == "vega" and "workspace" in entry["revisions"]}
    confusion, per_class = Path(paths("evaluate")["confusion"]), paths("evaluate")["per_class_csv"]
    counts = read_csv(confusion)["actual"].value_counts() if confusion.is_file() else pd.Series()
    if per_class not in specs or counts.empty or counts.max() > 2:
        return specs, {}
    del specs[per_class]
    return specs, {per_class: (
        f"Per-class test accuracy is not drawn: every class has {counts.min()}-{counts.max()} test "
        "video(s), so each bar could only be 0, 0.5 or 1. The confusion matrix shows which videos "
        "went wrong; a larger test split (more videos a class) makes the chart meaningful.")}


def write_report(base: str, out: Path, label: str | None = None) -> Path:
    """report.md and its PNGs: headline metrics, then what changed, all of it folded, then the plots."""
    name = label or base
    (old_params, old_metrics), (params, metrics) = results(base), results(None)
    head = command("git", "rev-parse", "--short", "HEAD").strip()
    columns = [f"`{name}`", "workspace", "change"]
    lines = [f"# Experiment report: `{name}` vs workspace (HEAD {head})", "",
             markdown(["", *columns], rows(old_metrics, metrics, HEADLINE, HEADLINE)), "",
             one_video_note(metrics), ""]
    tables = [("Param", old_params, params), ("Metric", old_metrics, metrics)]
    for kind, old, new in tables:
        keys = changed(old, new)
        lines += [f"## {kind}s changed", "",
                  markdown([kind, *columns], rows(old, new, keys)) if keys else f"No {kind.lower()} changed.", ""]
    lines += ["<details><summary>All params and metrics</summary>", ""]
    lines += [markdown([kind, *columns], rows(old, new, {**old, **new})) + "\n" for kind, old, new in tables]
    lines += ["</details>", "", "## Plots", ""]
    specs, notes = plot_specs(base)
    out.mkdir(parents=True, exist_ok=True)
    for plot, spec in specs.items():
        image = re.sub(r"[^a-z0-9]+", "-", plot.lower()).strip("-") + ".png"
        (out / image).write_bytes(vl_convert.vegalite_to_png(spec, scale=1))
        lines += [f"### {plot}", "", f"![{plot}]({image})", ""]
    lines += [line for plot, note in notes.items() for line in (f"### {plot}", "", note, "")]
    (out / "report.md").write_text("\n".join(lines))
    return out / "report.md"


def write_html(base: str | None, path: Path) -> Path:
    """Every plot on one page that draws offline; <body data-rendered="N"> once all N have drawn."""
    specs, notes = plot_specs(base)
    metrics = results(None)[1]
    header = ["", base, "workspace", "change"] if base else ["", "workspace"]
    table = [header, *rows(results(base)[1] if base else None, metrics, HEADLINE, HEADLINE)]
    cells = lambda row, tag: "".join(f"<{tag}>{html.escape(cell)}</{tag}>" for cell in row)  # noqa: E731
    headline = ("<table>" + "".join(f"<tr>{cells(row, 'th' if i == 0 else 'td')}</tr>" for i, row in enumerate(table))
                + f"</table><p>{html.escape(one_video_note(metrics))}</p>")
    divs = "\n".join([f'<h2>{name}</h2><div id="plot{i}"></div>' for i, name in enumerate(specs)] +
                     [f"<h2>{name}</h2><p>{html.escape(note)}</p>" for name, note in notes.items()])
    data = json.dumps(list(specs.values())).replace("</", "<\\/")  # "</" would end the <script>
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Plots</title>
<script>{vl_convert.javascript_bundle()}</script></head>
<body>
{headline}
{divs}
<script>
const specs = {data};
Promise.all(specs.map((spec, i) => vegaEmbed("#plot" + i, spec, {{renderer: "svg", actions: false}})))
  .then(() => {{ document.body.dataset.rendered = String(specs.length); }})
  .catch((error) => {{ document.body.dataset.error = String(error); console.error(error); }});
</script>
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path


def reproduce(base: str) -> str:
    """`make review`: metrics differ slightly from machine to machine, so base is reproduced here
    too (a temporary worktree on this DVC cache, so what both share runs once); returns the commit
    of its results, kept on refs/review/base."""
    commit = command("git", "rev-parse", "--verify", f"{base}^{{commit}}").strip()
    cache = Path(command("dvc", "cache", "dir").strip()).resolve()
    with tempfile.TemporaryDirectory(prefix="review-base-") as tmp:
        tree = Path(tmp) / "base"
        command("git", "worktree", "add", "--detach", "--quiet", str(tree), commit)
        try:
            command("dvc", "cache", "dir", "--local", str(cache), cwd=tree)
            # data versioned with `dvc add` (real UCF-101) comes from the shared cache
            subprocess.run(["dvc", "checkout", "--quiet"], cwd=tree, capture_output=True)
            print(f"reproducing {base} ({commit[:8]}) here, on this repository's DVC cache")
            command("dvc", "repro", cwd=tree)
            command("git", "add", "-A", "dvc.lock", "metrics", "plots", cwd=tree)
            command("git", "-c", "user.name=review", "-c", "user.email=review@localhost", "commit", "--quiet",
                    "--allow-empty", "-m", f"{base} reproduced on this machine (make review)", cwd=tree)
            reproduced = command("git", "rev-parse", "HEAD", cwd=tree).strip()
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], capture_output=True)
    command("git", "update-ref", "refs/review/base", reproduced)
    return reproduced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["report", "review", "plots"])
    parser.add_argument("--base", help="git revision to compare the workspace with "
                        "(report, review: default main; plots: none, the workspace alone)")
    parser.add_argument("--out", type=Path, default=Path("report"), help="output folder (default: report)")
    args = parser.parse_args()
    base = args.base or "main"
    if args.what == "plots":
        print(write_html(args.base, args.out / "plots.html"))
    elif args.what == "report":
        print(write_report(base, args.out))
    elif stale():
        raise UserError("the workspace is not reproduced (dvc status is not clean): run 'make repro' first")
    else:
        print(write_report(reproduce(base), args.out, label=f"{base} (reproduced here)"))


if __name__ == "__main__":
    run_stage(main)
