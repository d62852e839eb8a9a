"""PR review without a network: DVC's params and metrics diffs and the plots of dvc.yaml.

    python -m actionrec.report report --base main   # report/report.md + one PNG a plot
    python -m actionrec.report plots [--base REV]   # report/plots.html, self-contained

The plots are DVC's own Vega-Lite specs (`dvc plots diff --json`, from the plots that dvc.yaml's
stages declare), rendered by vl-convert, which bundles Vega: no second plotting code
and no fetch from a CDN, unlike the page `dvc plots show` writes.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

import vl_convert

from actionrec.params import UserError, run_stage


def dvc(*args: str) -> str:
    """Stdout of a dvc command; its error, if any, as one line."""
    result = subprocess.run(["dvc", *args], capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()] or ["no output"]
        raise UserError(f"`dvc {' '.join(args)}` failed: {lines[-1]}")
    return result.stdout


def plot_specs(base: str | None) -> dict[str, dict]:
    """Plot name -> Vega-Lite spec of the workspace's plots, with BASE's data overlaid if given.
    Plots that only BASE defines (e.g. under an older dvc.yaml) are left out."""
    out = dvc("plots", "diff", "--json", base) if base else dvc("plots", "show", "--json")
    return {name: entry["content"] for name, entries in json.loads(out).get("data", {}).items()
            for entry in entries if entry["type"] == "vega" and "workspace" in entry["revisions"]}


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def table_or_none(markdown: str, none: str) -> str:
    # dvc prints nothing, or a header alone, when there is no row
    return markdown.strip() if markdown.strip().count("\n") >= 2 else none


def write_report(base: str, out: Path, label: str | None = None) -> Path:
    """report.md (params diff, metrics diff, plots) and its PNGs in OUT, workspace vs BASE
    (named `label` in the title, if given)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    params = table_or_none(dvc("params", "diff", "--md", base), "No param changed.")
    metrics = table_or_none(dvc("metrics", "diff", "--md", "--all", base), "No metrics found.")
    specs = plot_specs(base)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Experiment report: `{label or base}` vs workspace (HEAD {head or '?'})", "",
             "## Params changed", "", params, "", "## Metrics", "", metrics, "", "## Plots", ""]
    for name, spec in specs.items():
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
    # "</" inside an inline <script> would end it early
    data = json.dumps(list(specs.values())).replace("</", "<\\/")
    divs = "\n".join(f'<h2>{name}</h2><div id="plot{i}"></div>' for i, name in enumerate(specs))
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Plots</title>
<script>{vl_convert.javascript_bundle()}</script></head>
<body>
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
