"""The code's own shape: every fact in one place."""
import ast
import shlex
from pathlib import Path

import yaml

from tests.conftest import ROOT

CODE = [*ROOT.glob("actionrec/*.py"), *ROOT.glob("stages/*.py"), *ROOT.glob("bench/*.py"), ROOT / "predict.py"]


def project_imports(path: Path) -> set[str]:
    """The actionrec modules a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
            [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        found |= {name.split(".")[1] for name in names if name.startswith("actionrec.")}
    return found


def test_no_import_cycle_in_the_package():
    graph = {path.stem: project_imports(path) for path in ROOT.glob("actionrec/*.py")}

    def cycle_from(module: str, path: tuple[str, ...]) -> tuple[str, ...] | None:
        for dep in sorted(graph.get(module, ())):
            if dep in path:
                return path[path.index(dep):] + (dep,)
            found = cycle_from(dep, path + (dep,))
            if found:
                return found
        return None

    cycles = {cycle_from(module, (module,)) for module in graph} - {None}
    assert not cycles, cycles


def test_the_paths_dvc_yaml_passes_to_stages_are_written_nowhere_else():
    """dvc.yaml's cmd gives each stage its paths; code that needs one reads it from there
    (actionrec.pipeline.paths), so a renamed output cannot leave a stale copy behind."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    passed = {arg for stage in stages.values() for arg in shlex.split(stage["cmd"])[2:]}
    assert {"data/features", "models/model.pt", "data/video_list.csv", "data/synthetic/UCF-101"} <= passed
    copies = {(str(path.relative_to(ROOT)), literal) for path in CODE
              for node in ast.walk(ast.parse(path.read_text()))
              if isinstance(node, ast.Constant) and isinstance(node.value, str)
              for literal in passed if node.value == literal or node.value.startswith(literal + "/")}
    assert not copies, copies
