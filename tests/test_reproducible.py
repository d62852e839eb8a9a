"""The data stages give the same bytes on any machine: whatever the core count, and without
NumPy's AVX-512 code paths (what a CPU without AVX-512 runs)."""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import yaml

from tests.conftest import ROOT, committed_params, stage_argv

TINY = {"synthesize": {"num_classes": 3, "groups_per_class": 3, "clips_per_group": 2, "min_seconds": 0.6,
                       "max_seconds": 1.0, "fps": 10, "width": 64, "height": 48},
        "subset": {"num_classes": 3}}
# The files the three stages write for TINY, as this repository's machine wrote them: another
# machine that writes other bytes fails here, as it would change dvc.lock.
EXPECTED_DIGEST = "a414189502cd899072fbbde561b3d283"


def avx512_features() -> str:
    """NumPy's AVX-512 dispatch targets that this CPU has (NPY_DISABLE_CPU_FEATURES takes them)."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    return " ".join(f for f in __cpu_dispatch__ if f.startswith("AVX512") and __cpu_features__.get(f))


def run_data_stages(workdir: Path, cores: set[int] | None = None, env: dict | None = None) -> dict[str, str]:
    """synthesize, subset and split in workdir with TINY params; md5 of every file they wrote."""
    params = committed_params()
    for section, values in TINY.items():
        params[section].update(values)
    workdir.mkdir()
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in ("synthesize", "subset", "split"):
        subprocess.run(stage_argv(stage), cwd=workdir, check=True,
                       capture_output=True, env={**os.environ, **(env or {})},
                       preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None)
    return {str(p.relative_to(workdir)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted((workdir / "data").rglob("*")) if p.is_file()} | \
        {f"metrics/{name}": hashlib.md5((workdir / "metrics" / name).read_bytes()).hexdigest()
         for name in ("subset.json", "split.json")}


def test_data_stages_give_the_same_bytes_on_one_core_all_cores_and_without_avx512(tmp_path):
    all_cores = run_data_stages(tmp_path / "all")
    assert len([f for f in all_cores if f.endswith(".avi")]) == 14
    one_core = run_data_stages(tmp_path / "one", cores={min(os.sched_getaffinity(0))})
    assert one_core == all_cores
    no_avx512 = run_data_stages(tmp_path / "no-avx512", env={"NPY_DISABLE_CPU_FEATURES": avx512_features()})
    assert no_avx512 == all_cores
    digest = hashlib.md5(repr(sorted(all_cores.items())).encode()).hexdigest()
    assert digest == EXPECTED_DIGEST, digest


def test_code_that_dvc_lock_hashes_checks_out_with_lf_endings_on_every_os():
    """dvc.lock records the md5 of each stage's code: a CRLF checkout (git on Windows with
    core.autocrlf) would change every one and re-run every stage."""
    deps = [dep for stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values()
            for dep in stage["deps"] if dep.endswith(".py")]
    out = subprocess.run(["git", "check-attr", "eol", "--", *deps], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert len(deps) > 10 and out.count(": eol: lf") == len(deps), out
