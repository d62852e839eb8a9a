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
        if isinstance(node, ast.ImportFrom) and node.module == "actionrec":  # from actionrec import x
            found |= {alias.name for alias in node.names}
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
            [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        found |= {name.split(".")[1] for name in names if name.startswith("actionrec.")}
    return found


# Modules a stage imports that are no dependency of it in dvc.yaml: each cannot change the outputs, and says why.
# A module that mixes such code with code that can is split, not listed here.
NOT_DEPS = {
    "actionrec/__init__.py": "the package's docstring, nothing else (test below)",
    "actionrec/errors.py": "messages only: a user error's one line and exit code 2 (run_stage passes dvc.yaml's "
                           "arguments as they are)",
    "actionrec/engine.py": "speed only (runtime.engine: ray), the same bytes: tests/test_pipeline.py::"
                           "test_the_ray_engine_extracts_the_same_features_and_nothing_re_runs",
}
PACKAGE_DATA = sorted(p.name for p in (ROOT / "actionrec").iterdir() if p.is_dir() and p.name != "__pycache__")


def reads(path: Path) -> set[str]:
    """The package's own modules that a file imports, at any depth (actionrec/x.py), and its data that they
    name (actionrec/ucf101_lists: the folder's name as a string in the code)."""
    files, todo = set(), [path]
    while todo:
        file = todo.pop()
        names = {node.value for node in ast.walk(ast.parse(file.read_text()))
                 if isinstance(node, ast.Constant) and isinstance(node.value, str)}
        files |= {f"actionrec/{name}" for name in PACKAGE_DATA if name in names}
        for module in [f"actionrec/{m}.py" for m in project_imports(file)] + ["actionrec/__init__.py"]:
            if module not in files and module not in NOT_DEPS:
                todo.append(ROOT / module)
            files.add(module)
    return files


def test_every_stage_depends_on_the_code_and_package_data_it_reads():
    """What a stage imports (its script's imports of this package, at any depth, in functions too) and the
    package data they name is among its deps in dvc.yaml, or in NOT_DEPS; and every code or package-data dep
    is read: DVC re-runs a stage exactly when something that makes its outputs changed. The feature store's
    fingerprint is the features stage's .py deps (actionrec.pipeline.code_hashes)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    missing, unread = [], []
    for name, stage in stages.items():
        script = shlex.split(stage["cmd"])[1]
        read = reads(ROOT / script) | {script}
        deps = {dep for dep in stage["deps"] if isinstance(dep, str)}
        missing += [f"{name}: {file}" for file in sorted(read - deps - set(NOT_DEPS))]
        unread += [f"{name}: {dep}" for dep in sorted(deps - read)
                   if dep.endswith(".py") or dep.startswith("actionrec/")]
    assert not missing, f"imported or read, but no dependency in dvc.yaml (add it, or to NOT_DEPS with why): {missing}"
    assert not unread, f"dependencies in dvc.yaml that the stage never imports or reads: {unread}"
    assert ast.get_docstring(tree := ast.parse((ROOT / "actionrec/__init__.py").read_text())) and len(tree.body) == 1
    for reason in NOT_DEPS.values():  # a "same bytes" reason names a test that exists
        if "::" in reason:
            test_file, test = reason.split()[-1].split("::")
            assert f"def {test}(" in (ROOT / test_file).read_text(), reason


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


def test_every_csv_is_read_through_one_reader_without_na_parsing():
    """actionrec.pipeline.read_csv alone reads CSVs: pandas' default reads a class named NA, None or nan as a
    missing value (tests/test_csv.py runs such classes through train and evaluate)."""
    calls = [f"{path.relative_to(ROOT)}:{node.lineno}" for path in CODE
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Attribute) and node.attr in ("read_csv", "read_table", "reader", "DictReader")
             and not (path.name == "pipeline.py" and node.attr == "read_csv")]
    assert not calls, calls
