"""The features stage on a dataset with broken and odd videos, run as users run it."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from actionrec.backbone import DEFAULT_PREPROCESSING
from actionrec.dataset import read_index
from actionrec.download import sha256_of
from actionrec.errors import UserError
from actionrec.extract import iter_features
from actionrec.synthetic import write_avi
from tests.conftest import ROOT, SAMPLE_VIDEOS, committed_params, read_features, rotated_video, stage_argv, tiny_video, update_params

TINY_FEATURES = {"num_frames": 4, "resize": 64, "crop": 56, "batch_frames": 8, "num_workers": 1,
                 "compile": False}


def write_video_list(tmp_path: Path, videos: list[str]) -> None:
    """data/video_list.csv as the subset stage writes it: the features stage's list of videos."""
    (tmp_path / "data").mkdir(exist_ok=True)
    pd.DataFrame({"video": sorted(videos)}).to_csv(tmp_path / "data/video_list.csv", index=False)


def stored_features(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "data/features-store").rglob("*.npz"))


def distinct_videos(root: Path, count: int, step: int) -> list[str]:
    """count 4-frame 32x32 clips of class A under root, each of its own grey levels (the store
    is keyed by the file's bytes, so each must differ); their paths relative to root."""
    videos = [f"A/v_A_g{i:03d}_c01.avi" for i in range(count)]
    (root / "A").mkdir(parents=True)
    for i, video in enumerate(videos):
        write_avi(root / video, np.stack([np.full((32, 32, 3), (step * i + 40 * j) % 256, np.uint8)
                                          for j in range(4)]), 25)
    return videos


def make_dataset(tmp_path: Path) -> Path:
    """data.root with good clips and every kind of bad file, and a video list naming them all."""
    root = tmp_path / "videos"
    good = [tiny_video(root / f"Good/v_Good_g0{g}_c01.avi", frames=12) for g in range(1, 7)]
    odd = {
        "Odd/v_Odd_g01_c01.avi": lambda p: tiny_video(p, frames=2),                   # 2 frames
        "Odd/v_Odd_g02_c01.avi": lambda p: tiny_video(p, frames=3, width=1920, height=1080),
        "Odd/v_Odd_g03_c01.avi": lambda p: p.write_bytes(                            # truncated
            (SAMPLE_VIDEOS / "v_ApplyEyeMakeup_g01_c01.avi").read_bytes()[:150_000]),
        "Odd/v_Odd_g04_c01.mp4": lambda p: rotated_video(p, 90),                      # phone, upright
        "Bad/v_Bad_g01_c01.avi": lambda p: p.write_bytes(b""),                        # zero bytes
        "Bad/v_Bad_g02_c01.avi": lambda p: p.write_text("not a video\n" * 500),      # text
    }
    for rel, make in odd.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        make(root / rel)
    write_video_list(tmp_path, [str(p.relative_to(root)) for p in good] + list(odd))
    return root


def write_params(tmp_path: Path, root: Path, **features) -> None:
    params = committed_params()
    params["data"]["root"] = str(root.relative_to(tmp_path))  # an absolute path inside the repo is refused
    update_params(params, **{**TINY_FEATURES, "allow_random_weights": True, **features})  # videos not the demo's
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))


def run_stage(tmp_path: Path, env: dict | None = None, python: str = sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run([python, *stage_argv("features")[1:]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=env or dict(os.environ))


@pytest.mark.pipeline
def test_broken_videos_are_listed_and_decodable_ones_get_features(tmp_path):
    root = make_dataset(tmp_path)
    write_params(tmp_path, root, max_failed_fraction=0.0)
    refused = run_stage(tmp_path)
    assert refused.returncode == 2
    error = refused.stderr.strip().splitlines()[-1]
    assert error.startswith("error: 2 of 12 videos could not be decoded") and "failed_videos.csv" in error
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "data/features").exists()  # nothing DVC could take as complete
    decodable = [p for p in root.rglob("*") if p.is_file() and p.parent.name != "Bad"]
    # finished work kept: one entry per distinct decodable file (the six good clips are identical)
    assert len(stored_features(tmp_path)) == len({sha256_of(p) for p in decodable}) == 5

    write_params(tmp_path, root, max_failed_fraction=0.5)
    result = run_stage(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "reused 10 videos" in result.stdout and "extracted 0 videos" in result.stdout
    failed = pd.read_csv(tmp_path / "metrics/failed_videos.csv")
    assert list(failed.columns) == ["video", "error"]
    assert sorted(failed["video"]) == ["Bad/v_Bad_g01_c01.avi", "Bad/v_Bad_g02_c01.avi"]
    assert "not a video" in failed.set_index("video").loc["Bad/v_Bad_g02_c01.avi", "error"]
    for video in failed["video"]:  # each named on the console too, although under the limit
        assert f"warning: {video} could not be decoded, left out: " in result.stderr
    kept = read_index(tmp_path / "data/features")
    assert len(kept) == 10 and not kept["video"].str.startswith("Bad/").any()
    # the rotation turned to make frames upright, per video, kept across the resumed run
    assert kept.set_index("video")["rotation"].to_dict() == {v: 90 if v.endswith(".mp4") else 0
                                                             for v in kept["video"]}
    assert "warning: Odd/v_Odd_g03_c01.avi: decoded 78 of 164 frames: damaged file?" in result.stdout
    assert json.loads((tmp_path / "metrics/features.json").read_text())["warned_videos"] == 1
    feats = read_features(tmp_path / "data/features")
    assert feats.shape == (10, 4, 2048) and feats.dtype == np.float16
    assert np.isfinite(feats.astype(np.float32)).all() and (np.abs(feats.astype(np.float32)).sum(axis=(1, 2)) > 0).all()
    summary = json.loads((tmp_path / "metrics/features.json").read_text())
    assert (summary["extracted_videos"], summary["reused_videos"], summary["failed_videos"]) == (0, 10, 2)
    # no path of this machine in what git keeps
    assert str(tmp_path) not in (tmp_path / "metrics/failed_videos.csv").read_text()


@pytest.mark.pipeline
def test_the_stage_completes_with_the_compiler_hidden(tmp_path):
    """compile: auto on a machine with only Python: one warning line, eager, same outputs (the fast path:
    fp32 runs eager anyway)."""
    root = tmp_path / "videos"
    write_video_list(tmp_path, [str(tiny_video(root / f"A/v_A_g0{g}_c01.avi", frames=6).relative_to(root))
                              for g in range(1, 4)])
    write_params(tmp_path, root, compile="auto", precision="auto")  # fp32 runs eager: the fast path compiles
    empty_bin = tmp_path / "bin"  # a PATH with no g++/c++/gcc/cc
    empty_bin.mkdir()
    env = dict(os.environ, CXX=str(tmp_path / "no-c++"), CC=str(tmp_path / "no-cc"), PATH=str(empty_bin),
               TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"))  # no kernels compiled earlier
    result = run_stage(tmp_path, env)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: torch.compile")]
    assert len(warnings) == 1 and "running eager" in warnings[0]
    assert read_features(tmp_path / "data/features").shape == (3, 4, 2048)


@pytest.mark.pipeline
def test_features_float16_cannot_hold_stop_the_stage_in_one_line(tmp_path):
    """Weights whose features are of order 1e-12 (float16 would store zeros): one line that says
    what to do, before any is stored, and no output DVC could take as complete."""
    import torchvision

    root = tmp_path / "videos"
    write_video_list(tmp_path, [str(tiny_video(root / f"A/v_A_g0{g}_c01.avi", frames=6).relative_to(root))
                              for g in (1, 2)])
    state = torchvision.models.resnet18().state_dict()
    state["conv1.weight"] *= 1e-12  # batch norms of running mean 0, bias 0: every later layer scales alike
    (tmp_path / "weights").mkdir()
    torch.save(state, tmp_path / "weights/tiny.pth")
    write_params(tmp_path, root, backbone="resnet18", weights="weights/tiny.pth", num_frames=2)
    result = run_stage(tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: the features of ") and "float16 (as stored) makes 100% of them zeros" in error
    assert "(resnet18, weights weights/tiny.pth, fp32): use trained weights (features.weights: DEFAULT)" in error
    assert not stored_features(tmp_path) and not (tmp_path / "data/features").exists()


class PixelLevel(torch.nn.Module):
    """A stub backbone whose feature is the mean grey level of the frame: it shows which
    frame of which video each row came from."""
    feature_dim, inference_device = 1, torch.device("cpu")
    preprocessing = {**DEFAULT_PREPROCESSING, "resize": 48, "crop": 32}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, 0] * 0.229 * 255 + 0.485 * 255).mean(dim=(1, 2))[:, None]


def test_row_i_holds_video_i_when_videos_span_batches_and_some_fail(tmp_path):
    """batch_frames 6 with 4 frames a video: videos straddle batches; a broken video in the
    middle must not shift the rows after it."""
    paths = []
    for i in range(7):
        path = tmp_path / f"v{i}.avi"
        if i == 3:
            path.write_text("broken\n" * 100)
        else:  # frame j of video i is grey 30 * i + 8 * j
            write_avi(path, np.stack([np.full((48, 64, 3), 30 * i + 8 * j, np.uint8) for j in range(4)]), 25)
        paths.append(str(path))
    cfg = {"num_frames": 4, "resize": 48, "crop": 32, "num_workers": 1, "batch_frames": 6,
           "precision": "fp32", "decoder": "auto"}
    stage = load_stage()
    store = tmp_path / "store"
    store.mkdir()
    errors, _, stored, extracted = stage.extract_all(lambda todo: iter_features(PixelLevel(), todo, cfg),
                                                     paths, cfg, store)
    assert [bool(e) for e in errors] == [False, False, False, True, False, False, False] and extracted == 6
    for i in (0, 1, 2, 4, 5, 6):  # each decodable video's own frames in its store entry
        feats = stage.entry_features(stored[i])
        assert np.allclose(feats[:, 0].astype(np.float32), [30 * i + 8 * j for j in range(4)], atol=3), i
    streamed = {index: f[:, 0] for index, f, _, _ in iter_features(PixelLevel(), paths, cfg) if f is not None}
    assert sorted(streamed) == [0, 1, 2, 4, 5, 6]


@pytest.mark.pipeline
def test_sigkill_then_resume_extracts_only_the_videos_not_yet_stored(tmp_path):
    """Kill the stage once some videos' features are stored: the next run reuses exactly
    those and extracts only the rest, and the result equals an extraction in one go."""
    root = tmp_path / "videos"
    videos = distinct_videos(root, 60, step=4)
    write_video_list(tmp_path, videos)
    write_params(tmp_path, root, num_frames=2, resize=32, crop=32, batch_frames=16, num_workers=0)
    proc = subprocess.Popen(stage_argv("features"), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not stored_features(tmp_path) and time.time() < deadline:
        assert proc.poll() is None, "the stage ended before any video was stored"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(stored_features(tmp_path))
    assert 0 < done < len(videos), f"killed too late: {done} of {len(videos)} videos were done"
    result = run_stage(tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"reused {done} videos" in result.stdout and f"extracted {len(videos) - done} videos" in result.stdout
    resumed = read_features(tmp_path / "data/features")
    assert resumed.shape == (len(videos), 2, 2048)

    shutil.rmtree(tmp_path / "data/features-store")  # the same videos in one go, from nothing
    assert run_stage(tmp_path).returncode == 0
    assert np.array_equal(read_features(tmp_path / "data/features"), resumed)


def load_stage():
    spec = importlib.util.spec_from_file_location("features_stage", ROOT / "stages/features.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    return stage


def test_the_store_fingerprint_hashes_the_code_dvc_yaml_lists(tmp_path, monkeypatch):
    """A module added to the features stage's deps in dvc.yaml changes the fingerprint (so
    the store serves no feature made without it); a dep that does not exist is an error."""
    stage = load_stage()
    monkeypatch.chdir(tmp_path)
    dvc_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    deps = dvc_yaml["stages"]["features"]["deps"]
    for dep in deps:
        if dep.endswith(".py"):
            (tmp_path / dep).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / dep, tmp_path / dep)
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml))
    info = {"num_frames": 16}
    before = stage.fingerprint(info)
    (tmp_path / "actionrec/new_module.py").write_text("SCALE = 2\n")
    deps.append("actionrec/new_module.py")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml))
    with_module = stage.fingerprint(info)
    assert with_module != before
    (tmp_path / "actionrec/new_module.py").write_text("SCALE = 3\n")
    assert stage.fingerprint(info) not in (before, with_module)
    (tmp_path / "actionrec/new_module.py").unlink()
    with pytest.raises(UserError, match="depends on actionrec/new_module.py, which does not exist"):
        stage.fingerprint(info)


def test_named_weights_fetched_during_the_first_run_are_in_its_fingerprint(tmp_path, monkeypatch):
    """The first run with named weights that are not on disk yet fetches them before it
    fingerprints the store, so the second run reuses every video instead of extracting all
    again. The "download" places a checkpoint under the name torchvision expects."""
    import torchvision

    stage = load_stage()
    root = tmp_path / "videos"
    write_video_list(tmp_path, [str(tiny_video(root / f"A/v_A_g0{g}_c01.avi", frames=6).relative_to(root))
                              for g in (1, 2)])
    write_params(tmp_path, root, backbone="resnet18", weights="IMAGENET1K_V1", num_frames=2)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr("actionrec.portable.use_portable_kernels", lambda: None)  # this process ran kernels first
    fetched = []

    def download(url, dst, *args, **kwargs):  # what torch.hub does online
        fetched.append(url)
        torch.save(torchvision.models.resnet18().state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    args = ("data/video_list.csv", "data/features", "metrics/features.json", "metrics/failed_videos.csv")
    Path("metrics").mkdir()
    stage.main(*args)
    first = json.loads(Path("metrics/features.json").read_text())
    stage.main(*args)
    second = json.loads(Path("metrics/features.json").read_text())
    assert len(fetched) == 1 and first["extracted_videos"] == 2
    assert (second["extracted_videos"], second["reused_videos"]) == (0, 2)
    assert json.loads(Path("data/features/info.json").read_text())["weights_sha256"]


@pytest.mark.parametrize("error", [TypeError, ValueError, RuntimeError])
def test_a_bug_while_decoding_crashes_instead_of_counting_as_a_broken_video(tmp_path, monkeypatch, error):
    """Only what decoders raise on unreadable files makes a failed video; a bug inside the decode
    path (here: converting a decoded frame) ends the run, so that no data is dropped silently,
    whatever builtin error it raises (ValueError and RuntimeError were once taken as broken videos)."""
    import actionrec.video as video

    path = tiny_video(tmp_path / "v.avi", frames=8)

    def buggy(frame, found):
        raise error("cannot reshape array of size 9216 into shape (48,64,4)")

    monkeypatch.setattr(video, "_upright", buggy)
    with pytest.raises(error):
        video.sample_clip(path, 4, "pyav")
    cfg = {"num_frames": 4, "resize": 48, "crop": 32, "num_workers": 0, "batch_frames": 8,
           "precision": "fp32", "decoder": "auto"}
    with pytest.raises(error, match="cannot reshape"):
        list(iter_features(PixelLevel(), [str(path)], cfg))


@pytest.mark.pipeline
def test_a_new_class_adds_a_shard_leaves_the_others_byte_identical_and_grows_dvcs_cache_by_it(tmp_path):
    """Features are versioned per class folder: adding a class writes that class's shard, the
    other shards keep their bytes, and DVC's cache grows by little more than the new shard."""
    root = tmp_path / "videos"
    videos = [f"C{c}/v_C{c}_g{g:02d}_c01.avi" for c in range(4) for g in range(4)]
    for i, video in enumerate(videos):  # distinct content, so no two share a store entry
        (root / video).parent.mkdir(parents=True, exist_ok=True)
        write_avi(root / video, np.stack([np.full((32, 32, 3), (9 * i + 40 * j) % 256, np.uint8)
                                          for j in range(4)]), 25)
    write_params(tmp_path, root, num_frames=4, resize=32, crop=32, batch_frames=16, num_workers=0)

    def dvc(*args):
        result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=tmp_path, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr

    def cache_bytes() -> int:
        return sum(p.stat().st_size for p in (tmp_path / ".dvc/cache").rglob("*") if p.is_file())

    dvc("init", "--no-scm")
    shards = tmp_path / "data/features/shards"
    write_video_list(tmp_path, videos[:12])  # three classes
    assert run_stage(tmp_path).returncode == 0
    dvc("add", "data/features")
    before, cache_before = {p.name: p.read_bytes() for p in shards.iterdir()}, cache_bytes()
    write_video_list(tmp_path, videos)  # and a fourth
    assert run_stage(tmp_path).returncode == 0
    dvc("add", "data/features")
    after = {p.name: p.read_bytes() for p in shards.iterdir()}
    assert sorted(after) == [f"C{c}{ext}" for c in range(4) for ext in (".csv", ".npy")]
    assert all(after[name] == content for name, content in before.items())
    assert cache_bytes() - cache_before <= 1.2 * len(after["C3.npy"])
    table = read_index(tmp_path / "data/features")
    assert list(table.columns) == ["video", "rotation", "warning", "shard", "row"] and list(table["video"]) == videos
    assert np.array_equal(read_features(tmp_path / "data/features")[12:], np.load(shards / "C3.npy"))
