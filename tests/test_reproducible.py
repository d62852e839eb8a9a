"""The data stages give the same bytes on any machine: whatever the core count, and without
NumPy's AVX-512 code paths (what a CPU without AVX-512 runs); the whole pipeline, the golden run's bits."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from actionrec.verify import cpu_name
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


# The golden run: every output of the shared TINY pipeline (tests/conftest.py), as dvc.lock hashes it, written
# by `GOLDEN=write pytest tests/test_reproducible.py -k golden` on the machine that last changed results. With
# the portable kernels (actionrec/portable.py) every x86-64 CPU with AVX2 must compute these bits, whoever's it
# is: each CI machine checks it. Small outputs are kept whole beside the hashes, to say how far one moved.
GOLDEN = ROOT / "tests/data/golden"
NOT_KEPT = ("data/synthetic/", "models/")  # videos (checked above, byte by byte) and the 1 MB model


def lock_outs(repo: Path) -> dict[str, str]:
    """{output: md5} of dvc.lock, stage by stage in dvc.yaml's order (upstream first)."""
    order = list(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])
    stages = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {out["path"]: out["md5"] for stage in order for out in stages[stage]["outs"]}


def how_far(golden: Path, ours: Path) -> str:
    """Of a kept output (a file or a folder of them): per differing file, a measured distance."""
    from actionrec.verify import how_far as text_distance, relative_l2

    files = sorted(p.relative_to(golden) for p in golden.rglob("*") if p.is_file()) if golden.is_dir() else [Path()]
    found = []
    for rel in files:
        old, new = golden / rel, ours / rel
        if not new.is_file() or old.read_bytes() != new.read_bytes():
            if new.suffix == ".npy" and new.is_file():
                a, b = (np.load(path).astype(np.float32) for path in (new, old))
                detail = f"max relative L2 of a frame {relative_l2(a, b).max():.2g}" if a.shape == b.shape else \
                    f"shape {a.shape} vs {b.shape}"
            else:
                detail = text_distance(str(new), old.read_bytes(), new.read_bytes()) if new.is_file() else "missing"
            found.append(f"{(ours / rel).name}: {detail or 'content differs'}")
    return "; ".join(found) or "no kept file differs"


def test_the_golden_run_gives_the_same_bits_on_this_cpu(pipeline):
    ours = lock_outs(pipeline.path)
    if os.environ.get("GOLDEN") == "write":
        shutil.rmtree(GOLDEN, ignore_errors=True)
        for path in (p for p in ours if not p.startswith(NOT_KEPT)):
            copy = shutil.copytree if (pipeline.path / path).is_dir() else shutil.copy
            (GOLDEN / path).parent.mkdir(parents=True, exist_ok=True)
            copy(pipeline.path / path, GOLDEN / path)
        (GOLDEN / "outs.yaml").write_text(yaml.safe_dump(ours, sort_keys=False))
    golden = yaml.safe_load((GOLDEN / "outs.yaml").read_text())
    assert list(ours) == list(golden), "other outputs than the golden run's: write it again (GOLDEN=write)"
    differ = [path for path in ours if ours[path] != golden[path]]
    if differ:
        first = differ[0]
        distance = how_far(GOLDEN / first, pipeline.path / first) if (GOLDEN / first).exists() else "not measured"
        pytest.fail(f"{len(differ)} of {len(ours)} outputs differ from the golden run on this CPU "
                    f"({cpu_name()}); the first, {first}: {distance}. All: {', '.join(differ)}. If the "
                    "code changed results on purpose: GOLDEN=write pytest tests/test_reproducible.py -k golden")


def python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True)


def test_the_portable_kernels_reach_mkl_onednn_and_torch_whatever_the_shell_says():
    """A stage's first call sets them; MKL then runs its cross-vendor path, oneDNN and torch their AVX2 kernels
    (each library's own log says so), fp32 features run eager, and the fast precisions keep the runtime params."""
    result = python("from actionrec.portable import features_runtime as f\n"
                    "print(f({'precision': 'fp32'}, {'compile': 'auto'}), f({'precision': 'bf16'}, {'compile': 'auto'}))\n"
                    "import torch\n"
                    "torch.nn.LSTM(4, 4)(torch.nn.Linear(8, 4)(torch.randn(2, 3, 8)))[0].sum().backward()\n"
                    "print(torch.backends.cpu.get_cpu_capability())",
                    MKL_VERBOSE="1", ONEDNN_VERBOSE="1", MKL_CBWR="AUTO", ATEN_CPU_CAPABILITY="avx512",
                    ONEDNN_MAX_CPU_ISA="ALL")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "{'compile': False} {'compile': 'auto'}" in lines and lines[-1] == "AVX2"
    calls = [line for line in lines if line.startswith("MKL_VERBOSE") and "CNR:" in line]
    assert calls and all("CNR:COMPATIBLE " in line for line in calls), calls
    assert "onednn_verbose,v1,info,cpu,isa:Intel AVX2" in lines and any(",rnn," in line for line in lines)


def test_the_portable_kernels_are_refused_once_torch_has_chosen_its_own():
    result = python("import torch\ntorch.ones(2) + 1\n"  # torch's generic kernels chosen, whatever the CPU
                    "from actionrec.portable import use_portable_kernels\nuse_portable_kernels()",
                    ATEN_CPU_CAPABILITY="default")
    assert result.returncode != 0 and "torch ran a kernel before use_portable_kernels(): call it first" in result.stderr
