"""The full lock: requirements.txt declares every import, requirements.lock pins every package
(transitive ones too) with hashes for Linux x86_64/aarch64 and macOS arm64, `make venv` installs
exactly it. No network: the lock, the installed metadata and `make -n`."""
from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from actionrec.lock import (LockError, applies, check, lock_environments, lock_problems, read_lock,
                            read_requirements, select)

ROOT = Path(__file__).resolve().parents[1]
CODE = [ROOT / "actionrec", ROOT / "stages", ROOT / "predict.py", ROOT / "bench", ROOT / "tests"]


def _environment(sys_platform: str, platform_system: str, machine: str) -> dict[str, str]:
    return {"implementation_name": "cpython", "implementation_version": "3.11.9", "os_name": "posix",
            "platform_machine": machine, "platform_python_implementation": "CPython",
            "platform_release": "", "platform_system": platform_system, "platform_version": "",
            "python_full_version": "3.11.9", "python_version": "3.11", "sys_platform": sys_platform}


# the platforms the issue asks the lock to serve, CPython 3.11 on each
TARGETS = {
    "Linux x86_64": _environment("linux", "Linux", "x86_64"),
    "Linux aarch64": _environment("linux", "Linux", "aarch64"),
    "macOS arm64": _environment("darwin", "Darwin", "arm64"),
}


def _python_files() -> list[Path]:
    return sorted(f for place in CODE for f in ([place] if place.is_file() else place.rglob("*.py")))


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level module) of every absolute import, __import__("x") and import_module("x")."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "id", getattr(node.func, "attr", None)) in ("__import__", "import_module")):
            found.append((node.lineno, node.args[0].value.split(".")[0]))
    return found


def test_every_third_party_import_is_a_direct_requirement():
    requirements = read_requirements()
    direct = {canonicalize_name(r.name) for r in requirements}
    not_here = {canonicalize_name(r.name) for r in requirements if not applies(r.marker)}
    providers = importlib.metadata.packages_distributions()
    files = _python_files()
    # this repository's own: its packages and scripts, and the modules that tests/, stages/ and
    # bench/ import from beside them (test_pipeline, conftest)
    local = {p.stem for p in CODE} | {f.stem for f in files if f.parent in CODE}
    undeclared = []
    for path in files:
        for line, module in _imports(path):
            if module in sys.stdlib_module_names or module in local or module == "__future__":
                continue
            distributions = {canonicalize_name(d) for d in providers.get(module, [])}
            if not distributions and canonicalize_name(module) in not_here:
                continue  # declared with a marker that excludes this platform (decord on macOS)
            if not distributions & direct:
                where = f"{path.relative_to(ROOT)}:{line}"
                undeclared.append(f"{where} imports {module} ({', '.join(sorted(distributions)) or 'not installed'})")
    assert not undeclared, "add these to requirements.txt, then `make lock`:\n" + "\n".join(undeclared)


def test_requirements_txt_is_a_short_list_of_exact_pins():
    for requirement in read_requirements():
        assert [s.operator for s in requirement.specifier] == ["=="], f"pin {requirement} with =="


def test_lock_pins_every_requirement_once_for_every_platform():
    requirements, entries = read_requirements(), read_lock()
    for platform_name, environment in TARGETS.items():
        assert lock_problems(requirements, entries, environment) == [], platform_name
        names = [e.name for e in entries if applies(e.marker, environment)]
        assert len(names) == len(set(names)), f"{platform_name}: a package locked twice"


def test_lock_has_sha256_hashes_for_every_package():
    entries = read_lock()
    assert len(entries) > len(read_requirements())  # transitive packages are there too
    for entry in entries:
        assert entry.hashes, f"{entry.name} has no hash"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in entry.hashes), entry.name


def test_lock_is_resolved_for_the_three_platforms_and_no_other():
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["required-environments"] \
        == lock_environments()
    environments = [Marker(e) for e in lock_environments()]
    for platform_name, environment in TARGETS.items():
        assert any(m.evaluate(environment) for m in environments), f"{platform_name} not resolved"
    entries = read_lock()
    for elsewhere in (_environment("win32", "Windows", "AMD64"), _environment("darwin", "Darwin", "x86_64"),
                      dict(TARGETS["Linux x86_64"], python_version="3.12", python_full_version="3.12.4")):
        # pip would install nothing there; `make venv` stops first (test_check_* below)
        assert not [e.name for e in entries if applies(e.marker, elsewhere)]

    def here(name: str, platform_name: str) -> bool:
        return any(applies(e.marker, TARGETS[platform_name]) for e in entries if e.name == name)

    # what differs between the three, as PyPI's wheels have it: decord only on Linux x86_64,
    # torch's CUDA libraries on Linux only, torchcodec everywhere
    assert [p for p in TARGETS if here("decord", p)] == ["Linux x86_64"]
    assert [p for p in TARGETS if here("triton", p)] == ["Linux x86_64", "Linux aarch64"]
    assert [p for p in TARGETS if here("torchcodec", p)] == list(TARGETS)


def test_lock_holds_every_dependency_of_what_it_installs_on_each_platform():
    """pip check, without pip: the requirements of each locked package (its installed metadata,
    markers evaluated for each platform) are locked for that platform at a matching version."""
    entries = read_lock()
    for platform_name, environment in TARGETS.items():
        locked = {e.name: e.version for e in entries if applies(e.marker, environment)}
        missing = []
        for name in locked:
            try:
                requires = importlib.metadata.requires(name) or []
            except importlib.metadata.PackageNotFoundError:
                continue  # not installed on this platform: its metadata is not here to read
            for text in requires:
                requirement = Requirement(text)
                if requirement.marker and not requirement.marker.evaluate(dict(environment, extra="")):
                    continue
                dependency = canonicalize_name(requirement.name)
                if dependency not in locked or not requirement.specifier.contains(locked[dependency], prereleases=True):
                    missing.append(f"{name} needs {requirement}, locked: {locked.get(dependency)}")
        assert not missing, f"{platform_name}: " + "; ".join(missing)


def test_venv_holds_exactly_the_locked_versions():
    """`make venv` installed the lock (on this platform), not whatever pip resolved."""
    wrong = []
    for entry in read_lock():
        if applies(entry.marker):
            try:
                installed = importlib.metadata.version(entry.name)
            except importlib.metadata.PackageNotFoundError:
                installed = "missing"
            if installed == "missing" or Version(installed) != Version(entry.version):
                wrong.append(f"{entry.name} {installed} (locked {entry.version})")
    assert not wrong, "run `make venv`: " + ", ".join(wrong)


def test_select_gives_the_locked_installer_with_its_hashes():
    text = select(["uv", "setuptools"])  # what `make venv` installs first, with the venv's pip
    assert [line.split(" ")[0] for line in text.splitlines()] == ["setuptools==80.9.0", "uv==0.13.8"]
    assert text.count("--hash=sha256:") >= 2
    with pytest.raises(LockError, match="no nosuchpackage"):
        select(["nosuchpackage"])


def _tiny_repo(tmp_path: Path, lock: str, requirements: str) -> Path:
    """actionrec/lock.py beside a made-up lock, requirements.txt and pyproject.toml."""
    (tmp_path / "actionrec").mkdir()
    for name in ("__init__.py", "lock.py"):
        shutil.copy(ROOT / "actionrec" / name, tmp_path / "actionrec" / name)
    (tmp_path / "requirements.lock").write_text(lock)
    (tmp_path / "requirements.txt").write_text(requirements)
    (tmp_path / "pyproject.toml").write_text("[tool.uv]\nenvironments = [\"sys_platform == 'plan9'\"]\n")
    return tmp_path


def _check(repo: Path, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "actionrec.lock", *(command or ["check"])], cwd=repo,
                          capture_output=True, text=True, timeout=60)


HASH = " --hash=sha256:" + "0" * 64


def test_check_refuses_a_platform_the_lock_does_not_cover(tmp_path):
    repo = _tiny_repo(tmp_path, f"six==1.17.0 ; sys_platform == 'plan9' \\\n   {HASH}\n", "six==1.17.0\n")
    for command in (["check"], ["select", "uv", "setuptools"]):  # `make venv`'s first two steps
        result = _check(repo, *command)
        assert result.returncode == 2 and result.stdout == ""
        assert re.fullmatch(r"error: requirements.lock has nothing for Python 3\.\S+ on \S+ \S+; "
                            r"it covers: sys_platform == 'plan9'\. .*run `make lock`\n", result.stderr)


def test_check_asks_for_make_lock_when_requirements_txt_moved_on(tmp_path):
    repo = _tiny_repo(tmp_path, f"six==1.16.0{HASH}\n", "six==1.17.0\ntqdm==4.70.1\n")
    result = _check(repo)
    assert result.returncode == 2
    assert result.stderr == ("error: requirements.lock is out of date with requirements.txt (six is "
                             "1.16.0 there, requirements.txt asks for ==1.17.0; tqdm is not in it): "
                             "run `make lock`\n")
    (repo / "requirements.txt").write_text("six==1.16.0\n")
    assert _check(repo).stdout == "requirements.lock: 1 packages for this Python and platform\n"


def test_check_names_a_broken_or_missing_file_in_one_line(tmp_path):
    repo = _tiny_repo(tmp_path, f"six==1.17.0{HASH}\n", "six=>1.17.0\n")
    result = _check(repo)
    assert result.returncode == 2
    assert re.fullmatch(r"error: requirements.txt: 'six=>1.17.0' is not a requirement \(.+\)\n", result.stderr)
    (repo / "requirements.lock").unlink()
    assert _check(repo).stderr == ("error: requirements.lock is missing: check it out again from git, "
                                   "or run `make lock`\n")


def test_check_passes_on_this_repository():
    assert check().startswith("requirements.lock: ")


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_venv_installs_the_lock_and_rebuilds_when_it_changes(tmp_path):
    for name in ("Makefile", "requirements.txt", "requirements.lock", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
        os.utime(tmp_path / name, (1e9, 1e9))  # older than the venv made below
    (tmp_path / ".venv/bin").mkdir(parents=True)
    (tmp_path / ".venv/bin/python").symlink_to(sys.executable)
    (tmp_path / ".venv/.installed").touch()
    (tmp_path / ".venv/bin/uv").touch()  # installed by the venv's pip first, from the lock (below)

    def make(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["make", *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)

    assert make("-q", "venv").returncode == 0  # up to date
    for changed in ("requirements.lock", "requirements.txt"):
        assert make("-q", "-W", changed, "venv").returncode == 1, f"{changed} changed: no rebuild"
    commands = make("-n", "-W", "requirements.lock", "venv").stdout
    assert "-m actionrec.lock check" in commands
    assert "uv pip install --python .venv/bin/python --require-hashes --no-deps --no-build-isolation " \
           "--compile-bytecode" in commands and "-r requirements.lock" in commands
    (tmp_path / ".venv/bin/uv").unlink()
    bootstrap = make("-n", "venv").stdout
    assert "-m actionrec.lock select uv setuptools" in bootstrap
    assert "python -m pip install --quiet --require-hashes --no-deps -r .venv/bootstrap.lock" in bootstrap
    assert "pip install --upgrade" not in commands and "-r requirements.txt" not in commands
    lock = make("-n", "lock").stdout
    assert re.search(r"uv pip compile requirements.txt --output-file requirements.lock --universal", lock)
    assert "--generate-hashes" in lock
