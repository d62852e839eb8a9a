"""Errors a user can fix, and how a command ends on one: a single line, exit code 2.
Imported by every module that raises them (no torch, no other project module)."""
import inspect
import sys
from pathlib import Path


class UserError(Exception):
    """Something the user can fix (bad params, missing data); the message says how."""


class ParamsError(UserError, ValueError):
    """A bad value in params.yaml; the message names the key and what is allowed."""


def fail(message: str) -> None:
    """End the command with one line on stderr and exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def run_stage(main) -> None:
    """Run main(), with the command line's arguments as its positional parameters when it has
    any (dvc.yaml's `cmd` passes a stage its paths: dvc.yaml names them once); a user error
    ends it with one line on stderr and exit code 2."""
    wanted = [name for name, p in inspect.signature(main).parameters.items()  # none: main parses its
              if p.default is inspect.Parameter.empty]                        # own options
    args = sys.argv[1:] if wanted else []
    if len(args) != len(wanted):
        fail(f"usage: {sys.argv[0]} {' '.join(w.upper() for w in wanted)} (dvc.yaml's cmd gives them)")
    for arg in args:  # the stage writes some of them: their folders exist
        Path(arg).parent.mkdir(parents=True, exist_ok=True)
    try:
        main(*args)
    except UserError as error:
        fail(str(error))
