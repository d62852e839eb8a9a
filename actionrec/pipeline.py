"""dvc.yaml, the one place that names each stage's files: stages get them from its `cmd`, other code from here;
and how the project reads its files: its CSVs, their hashes."""
import ast
import hashlib
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


def code_hashes(stage: str) -> dict[str, str]:
    """{each Python file the stage depends on (dvc.yaml's deps ending in .py): its md5, as dvc.lock records it}."""
    repo, stages = _stages()
    files = [dep for dep in stages[stage]["deps"] if isinstance(dep, str) and dep.endswith(".py")]
    if missing := [dep for dep in files if not (repo / dep).is_file()]:
        raise UserError(f"dvc.yaml's {stage} stage depends on {', '.join(missing)}, which does not exist: "
                        "fix its deps")
    return {dep: _digest(repo / dep, "md5") for dep in files}


def feature_store(out: str | Path) -> Path:
    """The per-video feature store beside the features stage's output OUT: OUT-store/<fingerprint>/ (its entries)."""
    return Path(f"{out}-store")


def store_key(features: dict) -> dict:
    """What dvc.lock records of a store entry's inputs: the features params and the stage's code (md5s). Each
    entry keeps it in key.json: `make gc` (actionrec/store.py) removes those no dvc.lock of a branch has."""
    return {"features": features, "code": code_hashes("features")}


def _digest(path: Path, algorithm: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def sha256_of(path: Path) -> str:
    return _digest(path, "sha256")


def read_csv(source, **kwargs):
    """A CSV that the project wrote, every cell as written: no NA parsing (a class named NA, None or nan stays
    a name, an empty cell an empty string). Every read of one goes through here (tests/test_code.py)."""
    import pandas as pd

    return pd.read_csv(source, keep_default_na=False, **kwargs)


def paths(stage: str) -> dict[str, str]:
    """The paths dvc.yaml's cmd gives the stage, by its main()'s parameter names: paths("train")["model_file"]."""
    repo, stages = _stages()
    script, *args = shlex.split(stages[stage]["cmd"])[1:]
    main = next(node for node in ast.parse((repo / script).read_text()).body
                if isinstance(node, ast.FunctionDef) and node.name == "main")
    return dict(zip((arg.arg for arg in main.args.args), args, strict=True))
