"""dvc.yaml, the one place that names each stage's files: stages get them from its `cmd`, other code from here."""
import ast
import shlex
from pathlib import Path

import yaml

from actionrec.errors import UserError

CHECKOUT = Path(__file__).resolve().parents[1]  # where this package's own dvc.yaml lies


def _stages() -> tuple[Path, dict]:
    """(repository, its dvc.yaml stages): the current directory's (stages run in the root), else this checkout's."""
    repo = Path.cwd() if Path("dvc.yaml").is_file() else CHECKOUT
    if not (repo / "dvc.yaml").is_file():
        raise UserError("dvc.yaml not found: run this from the repository root")
    return repo, yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]


def code_deps(stage: str) -> list[Path]:
    """The Python files a stage depends on (dvc.yaml's deps ending in .py); each must exist."""
    repo, stages = _stages()
    files = [repo / dep for dep in stages[stage]["deps"] if isinstance(dep, str) and dep.endswith(".py")]
    if missing := [str(f.relative_to(repo)) for f in files if not f.is_file()]:
        raise UserError(f"dvc.yaml's {stage} stage depends on {', '.join(missing)}, which does not exist: "
                        "fix its deps")
    return files


def paths(stage: str) -> dict[str, str]:
    """The paths dvc.yaml's cmd gives the stage, by its main()'s parameter names: paths("train")["model_file"]."""
    repo, stages = _stages()
    script, *args = shlex.split(stages[stage]["cmd"])[1:]
    main = next(node for node in ast.parse((repo / script).read_text()).body
                if isinstance(node, ast.FunctionDef) and node.name == "main")
    return dict(zip((arg.arg for arg in main.args.args), args, strict=True))
