"""dvc.yaml, read: the one place that names each stage's files. Stages get their paths from
its `cmd`; the tools that are not stages (verify, predict, bench) and the feature store's
fingerprint read them here, from the stage that writes or uses them."""
import ast
import shlex
from pathlib import Path

import yaml

from actionrec.errors import UserError

CHECKOUT = Path(__file__).resolve().parents[1]  # where this package's own dvc.yaml lies


def _repo() -> Path:
    """The current directory when it holds a dvc.yaml (stages run in the repository root),
    else this checkout."""
    return Path.cwd() if Path("dvc.yaml").is_file() else CHECKOUT


def _stages(repo: Path) -> dict:
    if not (repo / "dvc.yaml").is_file():
        raise UserError("dvc.yaml not found: run this from the repository root")
    return yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]


def code_deps(stage: str) -> list[Path]:
    """The Python files a stage depends on (dvc.yaml's deps ending in .py); each must exist."""
    repo = _repo()
    files = [repo / dep for dep in _stages(repo)[stage]["deps"] if isinstance(dep, str) and dep.endswith(".py")]
    missing = [str(f.relative_to(repo)) for f in files if not f.is_file()]
    if missing:
        raise UserError(f"dvc.yaml's {stage} stage depends on {', '.join(missing)}, which does not exist: "
                        "fix its deps")
    return files


def paths(stage: str) -> dict[str, str]:
    """The paths dvc.yaml's cmd gives the stage, by the names of its script's main() parameters:
    paths("train")["model_file"] is the model file."""
    repo = _repo()
    script, *args = shlex.split(_stages(repo)[stage]["cmd"])[1:]
    main = next(node for node in ast.parse((repo / script).read_text()).body
                if isinstance(node, ast.FunctionDef) and node.name == "main")
    return dict(zip((arg.arg for arg in main.args.args), args, strict=True))
