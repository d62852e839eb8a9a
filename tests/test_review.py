"""The review tools (verify, report, compare, review, share) without a pipeline run: quick."""
from __future__ import annotations

import inspect
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import yaml
from dvc.repo import Repo

from actionrec import compare, report, share, verify
from actionrec.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TOOLS = (compare, report, share, verify)


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@localhost", *args], cwd=cwd, check=True,
                   capture_output=True)


def lock(model: str, metadata: str) -> str:
    outs = {"subset": [("data/metadata.csv", metadata), ("metrics/subset.json", "1" * 32)],
            "train": [("models/model.pt", model), ("metrics/train.json", "2" * 32),
                      ("plots/train/loss.tsv", "3" * 32)]}
    return yaml.safe_dump({"schema": "2.0", "stages": {stage: {"cmd": "x", "outs": [
        {"path": path, "hash": "md5", "md5": digest} for path, digest in entries]} for stage, entries in outs.items()}})


def test_verify_names_every_output_that_differs_from_the_commit_with_how_far_or_not_measured(tmp_path, monkeypatch):
    """What `make verify` said "13 of 13 identical" to: the model's hash, best_val_loss 0.051974 -> 0.051976
    and a loss curve, all changed. Each is named with how far, within tolerance since they follow from the
    features; the model, whose committed version is not in the DVC cache, as not measured (it once counted
    as within tolerance), and dvc.lock with them. A data stage's output differs: beyond."""
    monkeypatch.chdir(tmp_path)
    files = {"metrics/subset.json": '{"classes": 3}\n', "metrics/train.json": '{"best_val_loss": 0.051974, "epochs": 9}\n',
             "plots/train/loss.tsv": "step\tloss\n0\t2.5\n1\t1.25\n", "dvc.lock": lock("a" * 32, "b" * 32)}
    for path, text in files.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    git(tmp_path, "init", "-q")
    Repo.init(str(tmp_path))
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "committed")
    assert {state for state, _ in verify.check_outputs("HEAD")} == {"identical"}

    Path("dvc.lock").write_text(lock("c" * 32, "b" * 32))
    Path("metrics/train.json").write_text('{"best_val_loss": 0.051976, "epochs": 9}\n')
    Path("plots/train/loss.tsv").write_text("step\tloss\n0\t2.5\n1\t1.2503\n")
    lines = dict((text.split(" (")[0].split(":")[0], (state, text)) for state, text in verify.check_outputs("HEAD"))
    assert lines["models/model.pt"] == ("not measured", "models/model.pt (train): differs, not measured: hash "
                                        "cccccccc vs committed aaaaaaaa (the committed version is not in this DVC "
                                        "cache: dvc pull fetches it)")
    assert lines["metrics/train.json"] == ("within tolerance", "metrics/train.json (train): best_val_loss 0.051974 -> 0.051976")
    state, text = lines["plots/train/loss.tsv"]
    assert state == "within tolerance" and "1 of 2 rows differ, max abs difference 0.0003" in text, text
    assert lines["dvc.lock"] == ("not measured", "dvc.lock: the hashes of models/model.pt (each above)")
    assert lines["data/metadata.csv"][0] == lines["metrics/subset.json"][0] == "identical"

    Path("dvc.lock").write_text(lock("c" * 32, "d" * 32))
    lines = dict((text.split(" (")[0].split(":")[0], (state, text)) for state, text in verify.check_outputs("HEAD"))
    assert lines["data/metadata.csv"][0] == lines["dvc.lock"][0] == "differs"


def test_the_reference_is_keyed_by_the_whole_features_section(tmp_path):
    """A features key that no hand-kept list names (here a new one) still invalidates the
    reference features: they were made with other params."""
    features = {"num_frames": 4, "backbone": "resnet18", "weights": "none", "precision": "fp32", "seed": 0}
    meta = {"videos": ["clip.avi"], "sha256": ["0" * 64], "params": features, "machine": "x"}
    saved = tmp_path / "ref.npz"
    np.savez(saved, features=np.zeros((0, 4, 8), np.float32), meta=json.dumps(meta))
    params = {"data": {"root": str(tmp_path)}, "features": dict(features, calibration="entropy")}
    state, text = verify.check_features(params, saved.read_bytes())
    assert state == "differs" and "other features params" in text, text
    state, text = verify.check_features({**params, "features": dict(features, precision="bf16")}, saved.read_bytes())
    assert "other features params" not in text, text  # the reference is fp32 whatever precision runs here


def test_one_place_for_the_headline_metrics_the_tolerances_git_show_and_exit_2():
    """Headline metric names are written in report.HEADLINE alone; the tolerances in verify.py
    alone (the docs point there); `git show` is run by one function; every tool ends on a user
    error through run_stage."""
    sources = {module.__name__: inspect.getsource(module) for module in TOOLS}
    for name, source in sources.items():
        if name != "actionrec.report":
            assert not re.search(r"""["']test_(accuracy|macro_f1)["']""", source), f"{name} names a headline metric"
        assert "SystemExit(2)" not in source and "run_stage(main)" in source, name
    code = [p.read_text() for folder in ("actionrec", "stages", "bench") for p in (ROOT / folder).glob("*.py")]
    assert sum(len(re.findall(r"""["']git["'],\s*["']show["']""", text)) for text in code) == 1
    for doc in ("docs/results.md", "docs/reproducibility.md"):  # prose: an output sample, fenced, may quote
        for line in re.sub(r"```.*?```", "", (ROOT / doc).read_text(), flags=re.S).splitlines():
            if "toleran" in line.lower():
                assert not any(re.search(rf"(?<![\d.]){re.escape(f'{value:g}')}(?![\d])", line)
                               for value in verify.TOLERANCE.values()), f"{doc} copies a tolerance: {line}"


def test_the_dvc_internals_the_tools_use_are_still_there():
    """DVC's public API has no call for these (share: the outputs of every saved run; compare:
    the queue's workers): pin what is used, so that a DVC upgrade that moves them fails here."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        assert isinstance(repo.cache.legacy.path, str)
        assert share.run_cache_entries(repo) is not None
        assert list(inspect.signature(repo.stage_cache.get_used_objs).parameters)[:1] == ["used_run_cache"]
        assert {"objs", "remote"} <= set(inspect.signature(repo.cloud.push).parameters)
        assert callable(repo.experiments.celery_queue.worker_status)


def test_the_queue_wait_reads_again_when_a_run_ends_as_dvc_shows_it(monkeypatch):
    """As a queued run ends, dvc.api.exp_show() can fail (FileNotFoundError for its info file) or
    wait forever (pygit2's reader of a commit the run removed): it runs in a child process with a
    timeout, and the wait reads again at the next poll."""
    assert "dvc.api.exp_show()" in compare.EXP_SHOW
    reads = iter([UserError("`python -c ...` did not answer in 120 s"), {"mean-seed1": {"State": "Success"}}])

    def experiments():
        read = next(reads)
        if isinstance(read, Exception):
            raise read
        return read

    monkeypatch.setattr(compare, "experiments", experiments)
    monkeypatch.setattr(compare, "workers", lambda: 1)
    assert compare.wait_for_queue(["mean-seed1"], jobs=1, timeout=30, poll=0, log=lambda _: None) == {
        "mean-seed1": "Success"}


def test_verify_writes_and_checks_a_video_backbones_reference_clips(tmp_path, monkeypatch):
    """--write-reference, then make verify's features check, with a video backbone (r3d_18, clips of 4 frames at
    32 px): the reference holds [clips, S, D], re-extracts identically; other clip_frames: other params."""
    from tests.conftest import SAMPLE_VIDEOS, committed_params

    monkeypatch.chdir(tmp_path)
    (tmp_path / "videos").mkdir()
    for name in ("v_ApplyEyeMakeup_g01_c01.avi", "short_32_frames.mp4"):
        (tmp_path / "videos" / name).write_bytes((SAMPLE_VIDEOS / name).read_bytes())
    (tmp_path / "data").mkdir()
    (tmp_path / "data/video_list.csv").write_text("video\nv_ApplyEyeMakeup_g01_c01.avi\nshort_32_frames.mp4\n")
    features = {"num_frames": 2, "backbone": "r3d_18", "weights": "none", "precision": "fp32", "resize": 40,
                "crop": 32, "interpolation": "auto", "clip_frames": 4, "seed": 0}
    params = {"data": {"root": "videos"}, "features": features,
              "runtime": dict(committed_params()["runtime"], compile=False, threads=0)}
    saved = np.load(verify.write_reference(params))
    assert saved["features"].shape == (2, 2, 512) and saved["features"].any(axis=-1).all()
    assert json.loads(str(saved["meta"]))["params"]["clip_frames"] == 4
    state, text = verify.check_features(params, (tmp_path / verify.REFERENCE).read_bytes())
    assert state == "identical" and "features of 2 reference clips (fp32 here" in text, text
    state, text = verify.check_features({**params, "features": dict(features, clip_frames=8)},
                                        (tmp_path / verify.REFERENCE).read_bytes())
    assert state == "differs" and "other features params" in text, text
