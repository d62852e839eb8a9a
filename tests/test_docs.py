"""The README a newcomer reads: short, every link resolves, commands that work as shown."""
from __future__ import annotations

import re
import subprocess

from tests.conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)|<img src=\"([^\"]+)\"")


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#+ (.+)$", markdown, re.M)}


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move details to docs/"


def test_every_relative_link_resolves():
    broken = []
    for doc in DOCS:
        text = doc.read_text()
        for match in LINK.finditer(text):
            target = match.group(1) or match.group(2)
            if re.match(r"[a-z]+:", target):  # https:, mailto:: not checked offline
                continue
            path, _, anchor = target.partition("#")
            resolved = (doc.parent / path).resolve() if path else doc
            if not resolved.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text()):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert len(DOCS) > 8 and not broken, broken


def test_the_readme_activates_the_venv_before_its_first_bare_dvc_command():
    text = (ROOT / "README.md").read_text()
    first_dvc = re.search(r"^(\$ )?dvc ", text, re.M)
    activate = text.find("source .venv/bin/activate")
    assert first_dvc and 0 <= activate < first_dvc.start()


def test_make_help_lists_every_target_with_one_line():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, re.M))
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    listed = {line.split()[1]: line.split(None, 2)[2] for line in out.splitlines() if line.strip()}
    assert set(listed) == targets, (set(listed) ^ targets)
    assert all(len(description) > 10 for description in listed.values()), listed
    # the phony list names them all too (a target without it can be shadowed by a file)
    phony = set(re.search(r"^\.PHONY: (.+)$", makefile, re.M).group(1).split())
    assert phony == targets
