"""PR review without a network: DVC's params and metrics diffs and the plots of dvc.yaml.

    python -m actionrec.report report --base main   # report/report.md + one PNG a plot
    python -m actionrec.report plots [--base REV]   # report/plots.html, self-contained

The plots are DVC's own Vega-Lite specs (`dvc plots diff --json`, from the plots that dvc.yaml's
stages declare), rendered by vl-convert, which bundles Vega: no second plotting code
and no fetch from a CDN, unlike the page `dvc plots show` writes.
"""
from __future__ import annotations

import argparse
import html
import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import vl_convert

from actionrec.errors import UserError, run_stage


def command(*args: str, cwd: Path | None = None) -> str:
    """Stdout of a command (dvc, git); when it fails, a UserError with its last error line."""
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()] or ["no output"]
        raise UserError(f"`{' '.join(args)}` failed: {lines[-1]}")
    return result.stdout


def dvc(*args: str) -> str:
    return command("dvc", *args)


def plot_specs(base: str | None) -> dict[str, dict]:
    """Plot name -> Vega-Lite spec of the workspace's plots, with BASE's data overlaid if given.
    Plots that only BASE defines (e.g. under an older dvc.yaml) are left out."""
    out = dvc("plots", "diff", "--json", base) if base else dvc("plots", "show", "--json")
    return {name: entry["content"] for name, entries in json.loads(out).get("data", {}).items()
            for entry in entries if entry["type"] == "vega" and "workspace" in entry["revisions"]}


# The numbers a reviewer looks for first (metrics/evaluate.json), in this order.
HEADLINE = {"test_accuracy": "test accuracy", "test_macro_f1": "test macro-F1",
            "baseline_test_accuracy": "order-blind baseline accuracy",
            "temporal_gain_test_accuracy": "temporal gain (accuracy over the baseline)"}
PER_CLASS_PLOT = "plots/per_class_test.csv"


def evaluate_metrics(rev: str | None) -> dict:
    """metrics/evaluate.json at a git revision (None: the workspace's); {} where there is none."""
    if rev is None:
        path = Path("metrics/evaluate.json")
        return json.loads(path.read_text()) if path.is_file() else {}
    shown = subprocess.run(["git", "show", f"{rev}:metrics/evaluate.json"], capture_output=True, text=True)
    return json.loads(shown.stdout) if shown.returncode == 0 else {}


def headline_rows(base: str | None) -> list[list[str]]:
    """[name, base, workspace, change] per headline metric (without base: [name, workspace])."""
    head, old = evaluate_metrics(None), evaluate_metrics(base) if base else None
    rows = []
    for key, name in HEADLINE.items():
        now = head.get(key)
        if old is None:
            rows.append([name, _number(now)])
            continue
        then = old.get(key)
        change = f"{now - then:+.4f}" if isinstance(now, (int, float)) and isinstance(then, (int, float)) else "-"
        rows.append([name, _number(then), _number(now), change])
    return rows


def _number(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-" if value is None else str(value)


def one_video_note() -> str:
    videos = evaluate_metrics(None).get("test_videos")
    return (f"{videos} test videos: one video is {100 / videos:.1f} points of accuracy."
            if videos else "")


def per_class_note() -> str | None:
    """Why the per-class chart is not drawn, when every class has only 1-2 test videos: each
    bar could only be 0, 0.5 or 1, and the chart would say nothing."""
    path = Path("plots/confusion_test.csv")
    if not path.is_file():
        return None
    counts = pd.read_csv(path)["actual"].value_counts()
    if counts.empty or counts.max() > 2:
        return None
    return (f"Per-class test accuracy is not drawn: every class has {counts.min()}-{counts.max()} test "
            "video(s), so each bar could only be 0, 0.5 or 1. The confusion matrix shows which videos "
            "went wrong; a larger test split (more videos a class) makes the chart meaningful.")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join("| " + " | ".join(row) + " |" for row in [header, ["---"] * len(header), *rows])


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def table_or_none(markdown: str, none: str) -> str:
    # dvc prints nothing, or a header alone, when there is no row
    return markdown.strip() if markdown.strip().count("\n") >= 2 else none


def write_report(base: str, out: Path, label: str | None = None) -> Path:
    """report.md and its PNGs in OUT, workspace vs BASE (named `label` in the title, if
    given): the headline metrics first, then only the params and metrics that changed, the
    full tables folded, then the plots."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    name = label or base
    headline = markdown_table(["", f"`{name}`", "workspace", "change"], headline_rows(base))
    params = table_or_none(dvc("params", "diff", "--md", base), "No param changed.")
    metrics = table_or_none(dvc("metrics", "diff", "--md", base), "No metric changed.")
    all_params = table_or_none(dvc("params", "diff", "--md", "--all", base), "No params found.")
    all_metrics = table_or_none(dvc("metrics", "diff", "--md", "--all", base), "No metrics found.")
    specs = plot_specs(base)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Experiment report: `{name}` vs workspace (HEAD {head or '?'})", "",
             headline, "", one_video_note(), "",
             "## Params changed", "", params, "", "## Metrics changed", "", metrics, "",
             "<details><summary>All params and metrics</summary>", "", all_params, "", all_metrics, "",
             "</details>", "", "## Plots", ""]
    skipped = per_class_note()
    for name, spec in specs.items():
        if name == PER_CLASS_PLOT and skipped:
            lines += [f"### {name}", "", skipped, ""]
            continue
        image = f"{slug(name)}.png"
        (out / image).write_bytes(vl_convert.vegalite_to_png(spec, scale=1))
        lines += [f"### {name}", "", f"![{name}]({image})", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report


def write_html(base: str | None, path: Path) -> Path:
    """One page with every plot; Vega, Vega-Lite and vega-embed inlined, so it draws offline.
    When all charts have drawn, <body> gets data-rendered="<count>" (the browser test reads it)."""
    specs = plot_specs(base)
    skipped = per_class_note()
    notes = {PER_CLASS_PLOT: skipped} if skipped and PER_CLASS_PLOT in specs else {}
    specs = {name: spec for name, spec in specs.items() if name not in notes}
    # "</" inside an inline <script> would end it early
    data = json.dumps(list(specs.values())).replace("</", "<\\/")
    header = ["", base, "workspace", "change"] if base else ["", "workspace"]
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                   for row in headline_rows(base))
    headline = ("<table><tr>" + "".join(f"<th>{html.escape(cell)}</th>" for cell in header) + "</tr>"
                + rows + f"</table><p>{html.escape(one_video_note())}</p>")
    divs = "\n".join([f'<h2>{name}</h2><div id="plot{i}"></div>' for i, name in enumerate(specs)] +
                     [f"<h2>{name}</h2><p>{html.escape(note)}</p>" for name, note in notes.items()])
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["report", "plots"])
    parser.add_argument("--base", help="git revision to compare the workspace with "
                        "(report: default main; plots: none, the workspace alone)")
    parser.add_argument("--out", type=Path, default=Path("report"), help="output folder (default: report)")
    args = parser.parse_args()
    if args.what == "report":
        print(write_report(args.base or "main", args.out))
    else:
        print(write_html(args.base, args.out / "plots.html"))


if __name__ == "__main__":
    run_stage(main)
