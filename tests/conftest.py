"""Shared fixtures: tiny generated videos, the real sample clips in tests/data/, and ONE run
of the pipeline on tiny params per pytest session (`pipeline`, `repo`), which every test of a
DVC pipeline shares. Those tests carry the marker `pipeline`: `make test-fast` leaves them out."""
from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import pickle
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import pytest
import yaml

from actionrec.synthetic import write_avi

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_VIDEOS = ROOT / "tests" / "data"  # real clips recorded outside this project (README there)
REAL_CLIPS = ("v_ApplyEyeMakeup_g01_c01.avi", "kinetics_arm_wrestling.mp4", "short_32_frames.mp4")
# What `dvc exp run` applies to the workspace: tests read these as committed, so that `make
# test` passes whatever experiment the workspace holds.
EXPERIMENT_RESULTS = ("params.yaml", "dvc.lock", "metrics/", "plots/")
MAKE = ["make", "-o", ".venv/.installed"]  # a copy uses this venv (first on PATH), never builds one


# The demo pipeline on tiny params: every stage in seconds
TINY = {
    "synthesize": {"num_classes": 3, "groups_per_class": 3, "clips_per_group": 2, "min_seconds": 0.6,
                   "max_seconds": 1.0, "fps": 10, "width": 64, "height": 48},
    "subset": {"num_classes": 3},
    "features": {"num_frames": 4, "resize": 64, "crop": 56},
    "runtime": {"batch_frames": 16, "compile": False},
    "train": {"hidden_size": 8, "max_epochs": 4, "patience": 2},
}


def stage_argv(stage: str) -> list[str]:
    """The stage's command as dvc.yaml gives it (its paths relative to the working directory),
    run by this Python on this checkout's script."""
    script, *args = shlex.split(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]["cmd"])[1:]
    return [sys.executable, str(ROOT / script), *args]


def committed(rel: str, repo: Path = ROOT) -> bytes | None:
    """The file rel as committed at HEAD of repo; None where HEAD has no such file."""
    result = subprocess.run(["git", "show", f"HEAD:{rel}"], cwd=repo, capture_output=True)
    return result.stdout if result.returncode == 0 else None


def committed_params(repo: Path = ROOT) -> dict:
    """params.yaml as committed, whatever experiment is applied to the workspace."""
    return yaml.safe_load(committed("params.yaml", repo))


def update_params(params: dict, **keys) -> dict:
    """Set each key in the section that holds it, features before runtime before data (a key
    such as seed or threads also lives elsewhere: set those directly)."""
    from actionrec.params import MODELS

    for key, value in keys.items():
        section = next(name for name in ("features", "runtime", "data") if key in MODELS[name].model_fields)
        params[section][key] = value
    return params


def read_features(folder: Path) -> np.ndarray:
    """Every feature row of a features stage's output folder, shard by shard."""
    from actionrec.dataset import open_features

    return np.asarray(open_features(folder)[0])


def tiny_video(path: Path, frames: int, width: int = 64, height: int = 48, fps: int = 25) -> Path:
    """An MPEG-4 AVI whose frame i is filled with grey level 10 * i (so frames are tellable)."""
    data = np.zeros((frames, height, width, 3), np.uint8)
    for i in range(frames):
        data[i] = min(10 * i, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_avi(path, data, fps)
    return path


@pytest.fixture
def real_clips(tmp_path: Path) -> dict[str, Path]:
    """The three real clips, copied into the test's own folder so that tests may alter them."""
    out = {}
    for name in REAL_CLIPS:
        out[name] = tmp_path / name
        shutil.copy(SAMPLE_VIDEOS / name, out[name])
    return out


@pytest.fixture
def cli(monkeypatch, capsys):
    """cli(*args) runs predict.py's main() here (a subprocess adds nothing) and gives (exit code, stdout, stderr)."""
    spec = importlib.util.spec_from_file_location("predict_cli", ROOT / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def run(*args) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["predict.py", *map(str, args)])
        try:
            module.main()
            code = 0
        except SystemExit as exit:
            code = exit.code
        out, err = capsys.readouterr()
        return code, out, err

    run.module = module
    return run


def encode_video(path: Path, frames, fps: int = 25, codec: str = "mpeg4", pix_fmt: str = "yuv420p",
                 gop: int | None = None, b_frames: int | None = None, pts=None, time_base=None,
                 colorspace: int | None = None, color_range: int | None = None) -> Path:
    """Encode uint8 RGB frames [H, W, 3] with PyAV; pts (with time_base) gives a variable
    frame rate; colorspace/color_range tag the stream and convert the pixels accordingly."""
    import av
    from fractions import Fraction

    frames = list(frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = pix_fmt
        if time_base:
            stream.codec_context.time_base = Fraction(time_base)
        if gop:
            stream.codec_context.gop_size = gop
        if b_frames is not None:
            stream.codec_context.max_b_frames = b_frames
        if colorspace is not None:
            stream.codec_context.colorspace = colorspace
        if color_range is not None:
            stream.codec_context.color_range = color_range
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame = frame.reformat(format=pix_fmt, dst_colorspace=colorspace, dst_color_range=color_range)
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(time_base)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def numbered_frames(count: int, width: int = 64, height: int = 48, seed: int = 0):
    """Textured frames that differ from each other (a noise image shifted by i pixels)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height, width + count, 3), np.uint8)
    base = ((base.astype(np.uint16) + np.roll(base, 1, 1) + np.roll(base, 1, 0)) // 3).astype(np.uint8)
    return [np.ascontiguousarray(base[:, i:i + width]) for i in range(count)]


def set_display_matrix(path: Path, matrix: tuple[int, ...]) -> Path:
    """Overwrite the 3x3 display matrix (9 big-endian int32 at offset 48 of the tkhd box) of
    an MP4, as a phone does for a video shot upright."""
    import struct

    data = bytearray(path.read_bytes())
    box = data.find(b"tkhd") - 4
    data[box + 48:box + 84] = struct.pack(">9i", *matrix)
    path.write_bytes(bytes(data))
    return path


# display matrices whose rotation FFmpeg undoes by turning the frame clockwise this much
ROTATION_MATRICES = {90: (0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30),
                     180: (-65536, 0, 0, 0, -65536, 0, 0, 0, 1 << 30),
                     270: (0, -65536, 0, 65536, 0, 0, 0, 0, 1 << 30)}


def rotated_video(path: Path, degrees: int, frames: int = 10) -> Path:
    """A 64x48 MP4 whose display matrix says: turn `degrees` clockwise to show upright.
    Each frame has a white 16x16 square in its top-left corner as stored."""
    image = np.zeros((48, 64, 3), np.uint8)
    image[:16, :16] = 255
    return set_display_matrix(encode_video(path, [image] * frames), ROTATION_MATRICES[degrees])


def white_corner(frame: np.ndarray) -> str:
    """Which corner of a frame holds the white square: TL, TR, BL or BR."""
    corners = {"TL": frame[:8, :8], "TR": frame[:8, -8:], "BL": frame[-8:, :8], "BR": frame[-8:, -8:]}
    return max(corners, key=lambda name: corners[name].mean())


def vfr_video(path: Path, frames: int = 24) -> Path:
    """An MP4 whose frame gaps alternate 70 and 20 ms (14 and 50 frames/s); frame i grey 10 * i."""
    pts, time = [], 0
    for i in range(frames):
        pts.append(time)
        time += 20 if i % 2 else 70
    return encode_video(path, [np.full((48, 64, 3), 10 * i, np.uint8) for i in range(frames)],
                        fps=30, pts=pts, time_base="1/1000")


# ---------------------------------------------------------------- repositories under real DVC


def tool_env() -> dict:
    """The venv's dvc and python first; a git identity, which `dvc exp` commits need."""
    identity = {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
                for what, value in (("NAME", "test"), ("EMAIL", "test@localhost"))}
    return dict(os.environ, **identity,
                PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def run(args: list[str], cwd: Path) -> str:
    result = subprocess.run(args, cwd=cwd, env=tool_env(), capture_output=True, text=True, timeout=600,
                            start_new_session=True)  # what DVC, Ray or a stage signal stays in their group
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def git(repo: Path, *args: str) -> str:
    return run(["git", "-c", "user.name=test", "-c", "user.email=test@localhost", *args], repo)


def copy_repo(dest: Path, params: dict | None = None, source: Path = ROOT) -> Path:
    """A git repository at dest with source's files (no data/ or models/, which are outputs;
    params, dvc.lock, metrics and plots as committed, not an experiment applied to the
    workspace) and the params sections updated by `params`, committed on main."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=source,
                           capture_output=True, text=True, check=True).stdout.split("\n")
    for rel in filter(None, files):
        if not (source / rel).is_file() or rel.startswith(("data/", "models/")):
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.startswith(EXPERIMENT_RESULTS):
            content = committed(rel, source)
            if content is not None:
                (dest / rel).write_bytes(content)
        else:
            shutil.copy2(source / rel, dest / rel)
    if params:
        current = yaml.safe_load((dest / "params.yaml").read_text())
        for section, values in params.items():
            current[section].update(values)
        (dest / "params.yaml").write_text(yaml.safe_dump(current, sort_keys=False))
    run(["git", "init", "-q", "-b", "main"], dest)
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "copy")
    return dest


def stages_run(out: str) -> set[str]:
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")}


def saved_runs(repo: Path) -> dict[str, int]:
    """Run-cache entries per stage key (.dvc/cache/runs/<xx>/<stage key>/<run>)."""
    runs = repo / ".dvc/cache/runs"
    return {key.name: len(list(key.iterdir())) for key in runs.glob("*/*")} if runs.exists() else {}


def back_to_head(repo: Path) -> None:
    """The committed params, lock file and outputs again (after `dvc exp run` applied one)."""
    git(repo, "checkout", "--", ".")
    run(["dvc", "checkout"], repo)


def read_metrics(repo: Path) -> dict:
    return {name: json.loads((repo / "metrics" / name).read_text())
            for name in ("split.json", "features.json", "train.json", "evaluate.json")}


class Pipeline(NamedTuple):
    path: Path  # the repository
    commit: str  # the commit of the reproduced results, on main
    cache: Path  # its DVC cache (and run-cache), shared by every pytest-xdist worker's copy
    repro_output: str  # what its first `dvc repro` printed
    saved_runs: dict[str, int]  # the run-cache right after it
    first_metrics: dict  # read_metrics after it
    first_features: np.ndarray  # data/features after it, as one array


def build_pipeline(path: Path) -> Pipeline:
    """A git + DVC copy of this repository with TINY params, `dvc repro`ed from nothing, then
    `dvc repro -f` (every stage again, the features from the store, as a second run on any
    machine), and the results committed."""
    copy_repo(path, TINY)
    out = run(["dvc", "repro"], path)
    runs, metrics = saved_runs(path), read_metrics(path)
    features = read_features(path / "data/features")
    run(["dvc", "repro", "-f"], path)
    git(path, "add", "-A")
    git(path, "commit", "-qm", "dvc repro")
    return Pipeline(path, git(path, "rev-parse", "HEAD").strip(), path / ".dvc/cache", out, runs, metrics, features)


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory) -> Pipeline:
    """ONE reproduced repository a session (build_pipeline), which every test of a DVC pipeline
    shares (through `repo`, or a clone: `clone_of`). Under pytest-xdist the first worker builds
    it and every worker, that one too, works in a clone of its own on the same DVC cache, with a
    copy of its feature store and validate run once on it, as a new clone does."""
    session = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        session = session.parent  # the folder all the workers' folders are in
    with open(session / "pipeline.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the others wait for the build
        if not (session / "pipeline.pickle").exists():
            built = build_pipeline(session / "pipeline")
            (session / "pipeline.pickle").write_bytes(pickle.dumps(built))
    built = pickle.loads((session / "pipeline.pickle").read_bytes())
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return built
    path = clone_of(built, tmp_path_factory.mktemp("pipeline") / "repo")
    git(path, "remote", "remove", "origin")  # a repository of its own, as the built one
    shutil.copytree(built.path / "data/features-store", path / "data/features-store")
    run(["dvc", "repro"], path)  # validate, whose marker no cache holds
    return built._replace(path=path)


def reset(pipeline: Pipeline) -> None:
    """The shared repository as the fixture left it: on main at its commit, no other branch, no
    file changed or added, outputs checked out. What a test added to the DVC cache, run-cache,
    feature store or experiment refs stays: it only saves later tests work."""
    repo = pipeline.path
    status = git(repo, "status", "--porcelain", "--branch").splitlines()
    branches = git(repo, "branch", "--format=%(refname:short)").split()
    if status == ["## main"] and branches == ["main"] and git(repo, "rev-parse", "HEAD").strip() == pipeline.commit:
        return  # a test that changes outputs git does not see puts them back itself
    git(repo, "checkout", "-qf", "main")
    git(repo, "reset", "-q", "--hard", pipeline.commit)
    git(repo, "clean", "-qfd")
    for branch in set(branches) - {"main"}:
        git(repo, "branch", "-qD", branch)
    run(["dvc", "checkout"], repo)


@pytest.fixture
def repo(pipeline) -> Iterator[Path]:
    """The shared pipeline repository at its commit with its outputs. A test may run
    experiments, change files, commit, branch: the repository is put back afterwards."""
    yield pipeline.path
    reset(pipeline)


def clone_of(pipeline: Pipeline, dest: Path, checkout: bool = True) -> Path:
    """A git clone of the shared repository on its DVC cache (no copy of the data), with the
    outputs checked out (checkout=False: none, every stage out of date): a repository of its
    own for a test, in a second, instead of another `dvc repro`."""
    run(["git", "clone", "-q", str(pipeline.path), str(dest)], dest.parent)
    run(["dvc", "cache", "dir", "--local", str(pipeline.cache)], dest)
    if checkout:
        run(["dvc", "checkout"], dest)
    return dest


def pytest_collection_modifyitems(items) -> None:
    """Every test that uses the shared pipeline is a `pipeline` test (make test-fast skips them).
    `make test` runs each module's tests in one pytest-xdist worker, in order (--dist loadfile)."""
    for item in items:
        if "pipeline" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.pipeline)
