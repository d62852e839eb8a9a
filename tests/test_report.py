"""`make report`, `make plots` and the PR workflow: real DVC, git, make, chromium and actionlint."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image, ImageStat

from actionrec.report import HEADLINE, plot_specs
from tests.conftest import MAKE, ROOT, copy_repo, run, tool_env

GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]
# every plot that dvc.yaml's stages declare, but the list of failed videos: header only (no
# data to draw) when every video decodes, as in these repos
PLOT_NAMES = [next(iter(entry)) for stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values()
              for entry in stage.get("plots", []) if next(iter(entry)) != "metrics/failed_videos.csv"]


def table_row(markdown: str, key: str) -> list[str]:
    """The cells of the first markdown table row whose first cell is KEY: [key, base, workspace, change]."""
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) > 3 and cells[0] == key:
            return cells
    raise AssertionError(f"no row {key!r} in:\n{markdown}")


def test_report_shows_both_revisions_params_metrics_and_plots(repo, monkeypatch):
    run(["dvc", "repro"], repo)
    run(GIT + ["commit", "-qam", "repro", "--allow-empty"], repo)
    base_accuracy = json.loads((repo / "metrics/evaluate.json").read_text())["test_accuracy"]
    run(["git", "checkout", "-qb", "pr"], repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["lr"] = 0.003
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(["dvc", "repro"], repo)
    assert "Running stage 'train'" in out and "Running stage 'features'" not in out
    run(GIT + ["commit", "-qam", "lr 0.003"], repo)
    pr_accuracy = json.loads((repo / "metrics/evaluate.json").read_text())["test_accuracy"]

    run(MAKE + ["report", "BASE=main"], repo)
    report = (repo / "report/report.md").read_text()
    # the first table: the headline metrics, base, head and change
    first = report.split("\n\n")[1].splitlines()
    assert first[0].split("|")[2:5] == [" `main` ", " workspace ", " change "], first[0]
    headline = {cells[1].strip(): [c.strip() for c in cells[2:5]] for cells in (row.split("|") for row in first[2:])}
    assert list(headline) == list(HEADLINE.values())
    assert [float(v) for v in headline["test accuracy"][:2]] == pytest.approx([base_accuracy, pr_accuracy], abs=1e-4)
    assert float(headline["test accuracy"][2] or 0) == pytest.approx(pr_accuracy - base_accuracy, abs=1e-4)
    # then only what changed; everything, folded
    changed, folded = report.split("<details>")
    assert "shared_groups" not in changed and "shared_groups" in folded and "</details>" in folded
    param = table_row(report, "train.lr")
    assert param[1:4] == ["0.001", "0.003", "+0.002"], param
    header = table_row(report, "Metric")
    assert header[1:3] == ["`main`", "workspace"], header
    accuracy = table_row(report, "test_accuracy")
    assert float(accuracy[1]) == pytest.approx(base_accuracy, abs=1e-5)
    assert float(accuracy[2]) == pytest.approx(pr_accuracy, abs=1e-5)

    images = re.findall(r"!\[(.*?)\]\((.*?)\)", report)
    # one image per plot dvc.yaml declares, but the per-class chart: with 1-2 test videos a
    # class here, its bars could only be 0, 0.5 or 1, and the report says so instead
    assert pd.read_csv(repo / "plots/confusion_test.csv")["actual"].value_counts().max() <= 2
    assert [name for name, _ in images] == [n for n in PLOT_NAMES if n != "plots/per_class_test.csv"]
    assert "Per-class test accuracy is not drawn: every class has 1-2 test video(s)" in report
    for name, path in images:
        with Image.open(repo / "report" / path) as image:
            assert image.format == "PNG" and image.width > 200 and image.height > 200, name
            grey = image.convert("L")
            assert ImageStat.Stat(grey).var[0] > 100, f"{name}: blank image"
            # not one flat colour with a speck: a real share of the pixels differs from the background
            histogram = grey.histogram()
            assert 1 - max(histogram) / sum(histogram) > 0.02, f"{name}: nearly blank"

    # both revisions are drawn: DVC's specs carry the data of each, under its revision's name
    monkeypatch.chdir(repo)
    monkeypatch.setenv("PATH", tool_env()["PATH"])
    specs, notes = plot_specs("main")
    assert set(notes) == {"plots/per_class_test.csv"} and set(PLOT_NAMES) <= set(specs) | set(notes)
    for name in set(PLOT_NAMES) - set(notes):
        assert {row["rev"] for row in specs[name]["data"]["values"]} == {"main", "workspace"}, name


@pytest.fixture(scope="module")
def plots_repo(tmp_path_factory) -> Path:
    """A git copy of this repository with its committed metrics and plots (no pipeline run)."""
    return copy_repo(tmp_path_factory.mktemp("plots_repo"))


def chromium_dom(page: Path) -> str:
    """The DOM of PAGE after headless Chromium ran its scripts, with every network fetch refused."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        reason = "chromium not installed (`make test` installs it as root on Debian: apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; under CI this test must run")
        pytest.skip(reason)
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",  # no network
         "--virtual-time-budget=15000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_make_plots_draws_offline_in_chromium(plots_repo):
    run(MAKE + ["plots"], plots_repo)
    page = plots_repo / "report/plots.html"
    assert not re.search(r"""(src|href)=["']https?:""", page.read_text()), "the page loads something"
    dom = chromium_dom(page)
    assert "data-error" not in dom
    # the committed run has 1-2 test videos a class: the per-class chart is a note instead
    drawn = [n for n in PLOT_NAMES if n != "plots/per_class_test.csv"]
    assert "Per-class test accuracy is not drawn" in dom
    assert re.search(r"<table>.*<td>test accuracy</td><td>[0-9.]+</td>.*</table>", dom, re.S), "no headline table"
    assert f'data-rendered="{len(drawn)}"' in dom, "vega-embed did not finish drawing"
    for i in range(len(drawn)):
        chart = re.search(rf'<div id="plot{i}".*?</svg>', dom, re.S)
        assert chart and len(re.findall(r'class="mark-', chart.group(0))) >= 5, f"plot {i} drew no marks"

    # the control: DVC's own page, in the same browser, draws nothing (its Vega comes from a CDN)
    run(["dvc", "plots", "show", "--out", "dvc_plots"], plots_repo)
    assert "<svg" not in chromium_dom(plots_repo / "dvc_plots/index.html")


def test_report_bad_base_is_one_line_error(plots_repo):
    result = subprocess.run([sys.executable, "-m", "actionrec.report", "report", "--base", "no-such-rev"],
                            cwd=plots_repo, env=tool_env(), capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("error: no params or metrics at no-such-rev: unknown Git revision")
    assert result.stderr.count("\n") == 1


def test_pr_workflow_lints_and_does_what_the_review_needs():
    workflow = ROOT / ".github/workflows/pr-report.yml"
    actionlint = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which("actionlint")
    assert actionlint, "actionlint missing: `make venv` installs it from requirements.txt"
    result = subprocess.run([actionlint, "-no-color", str(workflow)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

    spec = yaml.safe_load(workflow.read_text())
    assert "pull_request" in spec[True]  # YAML 1.1 reads the key `on` as True
    steps = spec["jobs"]["report"]["steps"]
    uses = {step["uses"].split("@")[0]: step.get("with", {}) for step in steps if "uses" in step}
    assert uses["actions/checkout"]["fetch-depth"] == 0
    assert uses["actions/setup-python"]["python-version"] == "3.11" and uses["actions/setup-python"]["cache"] == "pip"
    cached = [step["with"]["path"] for step in steps if step.get("uses", "").startswith("actions/cache@")]
    assert cached == [".venv", ".dvc/cache"]  # the DVC cache carries the run-cache between runs
    assert uses["actions/upload-artifact"]["path"] == "report/"
    commands = [step["run"] for step in steps if "run" in step]
    # head and base reproduced on this runner, then compared
    assert commands.index("make repro") < commands.index("make review BASE=origin/${{ github.base_ref }}")
    assert any(command.startswith("cml comment update") and "report/report.md" in command for command in commands)
    # with a DVC remote: the team's runs pulled first (run-cache included), this run's pushed after,
    # with make push (plain `dvc push --run-cache` leaves the metrics and plots of runs behind)
    remote = {step["name"]: step for step in steps if "DVC_REMOTE_URL" in str(step.get("if", ""))}
    pull, push = (next(step for name, step in remote.items() if word in name.lower()) for word in ("pull", "push"))
    repro = next(step for step in steps if step.get("run") == "make repro")
    assert "dvc pull --run-cache" in pull["run"] and steps.index(pull) < steps.index(repro)
    assert push["run"] == "make push" and steps.index(push) > steps.index(pull)


def test_an_unchanged_pull_request_shows_no_metric_change_when_base_metrics_came_from_another_machine(
        pipeline, repo, tmp_path):
    """main's results were committed on "another machine": features and a model this machine
    never made, and other metrics, all named in its dvc.lock. The workflow's make steps, run in
    a fresh clone on an unchanged pull request, reproduce head and base here: the report shows
    no metric change. Against main's committed metrics, it would."""
    run(GIT + ["checkout", "-q", "main"], repo)
    run(["dvc", "repro"], repo)
    run(GIT + ["commit", "-qam", "repro", "--allow-empty"], repo)
    lock = (repo / "dvc.lock").read_text()
    for stage, path in (("features", "data/features"), ("train", "models/model.pt")):
        digest = next(o for o in yaml.safe_load(lock)["stages"][stage]["outs"] if o["path"] == path)["md5"]
        lock = lock.replace(digest, ("e" * 32) + (".dir" if digest.endswith(".dir") else ""))
    for name, key, delta in (("evaluate.json", "test_accuracy", -0.1), ("train.json", "best_val_loss", 0.01)):
        path = repo / "metrics" / name
        old = hashlib.md5(path.read_bytes()).hexdigest()
        values = json.loads(path.read_text())
        values[key] = round(values[key] + delta, 6)
        path.write_text(json.dumps(values, indent=2) + "\n")
        lock = lock.replace(old, hashlib.md5(path.read_bytes()).hexdigest())
    (repo / "dvc.lock").write_text(lock)
    run(GIT + ["commit", "-qam", "metrics from another machine"], repo)

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    run(["dvc", "cache", "dir", "--local", str(pipeline.cache)], clone)  # the runner's cached DVC cache
    run(GIT + ["checkout", "-qb", "pr"], clone)
    with open(clone / "README.md", "a") as readme:
        readme.write("\nA pull request that changes no result.\n")
    run(GIT + ["commit", "-qam", "docs only"], clone)
    steps = yaml.safe_load((ROOT / ".github/workflows/pr-report.yml").read_text())["jobs"]["report"]["steps"]
    for step in steps:  # the workflow's own make steps (installing and pushing aside)
        command = step.get("run", "")
        if command.startswith("make ") and command not in ("make venv", "make push"):
            run(MAKE + command.replace("${{ github.base_ref }}", "main").split()[1:], clone)
    report = (clone / "report/report.md").read_text()
    for key in ("test_accuracy", "best_val_loss", "baseline_test_accuracy"):
        row = table_row(report, key)
        assert row[1] == row[2], row

    run(MAKE + ["report", "BASE=origin/main", "OUT=committed-base"], clone)  # without reproducing main
    row = table_row((clone / "committed-base/report.md").read_text(), "test_accuracy")
    assert row[1] != row[2], row
