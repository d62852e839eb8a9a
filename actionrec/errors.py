"""Errors a user can fix, and how a command ends on one: a single line, exit code 2 (no heavy imports)."""
import inspect
import sys
from pathlib import Path


class UserError(Exception):
    """Something the user can fix (bad params, missing data); the message says how."""


class ParamsError(UserError, ValueError):
    """A bad value in params.yaml; the message names the key and what is allowed."""


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def run_stage(main) -> None:
    """Run main(), passing the command line's arguments if it takes any (dvc.yaml's cmd gives a stage its paths)."""
    wanted = [name for name, p in inspect.signature(main).parameters.items() if p.default is inspect.Parameter.empty]
    args = sys.argv[1:] if wanted else []
    if len(args) != len(wanted):
        fail(f"usage: {sys.argv[0]} {' '.join(w.upper() for w in wanted)} (dvc.yaml's cmd gives them)")
    for arg in args:  # the stage writes some of them: their folders exist
        Path(arg).parent.mkdir(parents=True, exist_ok=True)
    try:
        main(*args)
    except UserError as error:
        fail(str(error))
