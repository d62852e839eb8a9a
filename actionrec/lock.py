"""requirements.lock, the full lock that `make venv` installs: `check` it, `select` entries.
`make venv` runs this in a bare venv, so it needs only the standard library and pip."""
from __future__ import annotations

import platform
import re
import sys
from pathlib import Path
from typing import NamedTuple

try:
    from packaging.markers import Marker
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # a bare venv, before `make venv` installed anything: pip's own copy
    from pip._vendor.packaging.markers import Marker
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement
    from pip._vendor.packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
REQUIREMENTS = ROOT / "requirements.txt"
PYPROJECT = ROOT / "pyproject.toml"

_HASH = re.compile(r"\s--hash=(\S+)")


class LockError(Exception):
    """The message says how to fix it."""


class LockEntry(NamedTuple):
    name: str             # canonical (PEP 503) name
    version: str
    marker: Marker | None
    hashes: list[str]     # "sha256:<hex>", one per file the index has for this version
    text: str             # the entry as written in the lock, for `select`


def read_lock(path: Path = LOCK) -> list[LockEntry]:
    entries = []
    for text in _logical_lines(path):
        requirement = _requirement(_HASH.sub("", text).strip(), path)
        pins = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        if len(pins) != 1 or len(requirement.specifier) != 1:
            raise LockError(f"{path.name}: {requirement.name} is not pinned with ==: run `make lock`")
        entries.append(LockEntry(canonicalize_name(requirement.name), pins[0], requirement.marker,
                                 _HASH.findall(text), text))
    return entries


def read_requirements(path: Path = REQUIREMENTS) -> list[Requirement]:
    return [_requirement(line, path) for line in _logical_lines(path)]


def _requirement(text: str, path: Path) -> Requirement:
    try:
        return Requirement(text)
    except InvalidRequirement as error:
        reason = str(error).splitlines()[0]  # packaging adds lines that point at the column
        raise LockError(f"{path.name}: {text!r} is not a requirement ({reason})") from None


def _logical_lines(path: Path) -> list[str]:
    """Lines, backslash continuations joined; comments and blank lines dropped."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise LockError(f"{path.name} is missing: check it out again from git, or run `make lock`") from None
    lines = (re.sub(r"(^|\s)#.*", "", line).strip() for line in re.sub(r"\\\n", " ", text).splitlines())
    return [line for line in lines if line]


def applies(marker: Marker | None, environment: dict[str, str] | None = None) -> bool:
    return marker is None or marker.evaluate(environment)


def lock_problems(requirements: list[Requirement], entries: list[LockEntry],
                  environment: dict[str, str] | None = None) -> list[str]:
    """What the lock gets wrong for the direct requirements in one environment, one phrase each."""
    problems = []
    for requirement in (r for r in requirements if applies(r.marker, environment)):
        name = canonicalize_name(requirement.name)
        versions = [entry.version for entry in entries
                    if entry.name == name and applies(entry.marker, environment)]
        if not versions:
            problems.append(f"{requirement.name} is not in it")
        elif len(versions) > 1:
            problems.append(f"{requirement.name} is in it {len(versions)} times")
        elif not requirement.specifier.contains(versions[0], prereleases=True):
            problems.append(f"{requirement.name} is {versions[0]} there, "
                            f"requirements.txt asks for {requirement.specifier}")
    return problems


def lock_environments(path: Path = PYPROJECT) -> list[str]:
    """The environments `make lock` resolves for: pyproject.toml's [tool.uv] environments."""
    import tomllib  # Python 3.11+: only `check`'s message and the tests need it

    return tomllib.loads(path.read_text())["tool"]["uv"]["environments"]


def entries_here(entries: list[LockEntry]) -> list[LockEntry]:
    """The entries for this Python and platform; LockError, saying what the lock covers, where there are none."""
    here = [entry for entry in entries if applies(entry.marker)]
    if not here:
        try:
            covered = "; ".join(lock_environments())
        except (ImportError, OSError, KeyError, ValueError):  # no tomllib before Python 3.11
            covered = "see [tool.uv] environments in pyproject.toml"
        raise LockError(
            f"{LOCK.name} has nothing for Python {platform.python_version()} on "
            f"{sys.platform} {platform.machine()}; it covers: {covered}. Use one of those "
            f"(e.g. `make venv PYTHON=python3.11`), or add this platform there and run `make lock`")
    return here


def check() -> str:
    """Raise LockError unless the lock serves this platform and agrees with requirements.txt; a summary."""
    entries = read_lock()
    if not entries:
        raise LockError(f"{LOCK.name} is empty: run `make lock`")
    here = entries_here(entries)
    if problems := lock_problems(read_requirements(), entries):
        raise LockError(f"{LOCK.name} is out of date with {REQUIREMENTS.name} ({'; '.join(problems)}): run `make lock`")
    return f"{LOCK.name}: {len(here)} packages for this Python and platform"


def select(names: list[str]) -> str:
    """The lock's entries for these packages (that apply here), as a lock of their own."""
    wanted = {canonicalize_name(name) for name in names}
    chosen = [entry for entry in entries_here(read_lock()) if entry.name in wanted]
    if missing := wanted - {entry.name for entry in chosen}:
        raise LockError(f"requirements.lock has no {', '.join(sorted(missing))} for this "
                        f"platform: add it to requirements.txt and run `make lock`")
    return "".join(entry.text + "\n" for entry in chosen)


def main(argv: list[str]) -> None:
    try:
        if argv == ["check"]:
            print(check())
        elif argv[:1] == ["select"] and len(argv) > 1:
            sys.stdout.write(select(argv[1:]))
        else:
            raise LockError("usage: python -m actionrec.lock check | select NAME...")
    except LockError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main(sys.argv[1:])
