"""`make verify`: after `make repro`, how close this machine came to what the commit says (docs/reproducibility.md).

    python -m actionrec.verify [--rev HEAD]       # one line per artifact; exit 1 only beyond tolerance
    python -m actionrec.verify --write-reference  # the machine that commits dvc.lock: reference/features.npz"""
from __future__ import annotations

import argparse
import io
import json
import platform
from pathlib import Path

import numpy as np
import yaml

from actionrec.errors import UserError, run_stage
from actionrec.params import load_params
from actionrec.pipeline import paths, read_csv, sha256_of
from actionrec.report import HEADLINE, changed, flatten, git_show, moves, one_video, results, stale

DATA_STAGES = ("synthesize", "subset", "split")
REFERENCE = Path("reference/features.npz")
REFERENCE_CLIPS = 4
# Max relative L2 distance of a re-extracted reference frame feature from the committed one, per
# precision used here: 4x the largest that bench/tolerance.py measured (docs/reproducibility.md),
# well below the distance between frames of two demo clips (0.054): a wrong clip, decoder colour
# or preprocessing fails. Frames of one clip can be 0.001 apart: the decoder tests check indices.
# int8 is measured against the fp32 reference: 0.024 on every CPU tried, so 2x.
TOLERANCE = {"fp32": 0.002, "bf16": 0.02, "fp16": 0.02, "int8": 0.05}


def verdict(distance: float, tolerance: float) -> str:
    return "identical" if distance == 0 else "within tolerance" if distance <= tolerance else "differs"


def lock_outputs(lock: dict) -> dict[str, tuple[str, str | None]]:
    """{output path: (stage, hash)}"""
    return {out["path"]: (stage, out.get("md5") or out.get("hash"))
            for stage, entry in (lock or {}).get("stages", {}).items() for out in entry.get("outs", [])}


def how_far(path: str, old: bytes, new: bytes) -> str:
    """The JSON values that moved, or a table's differing rows and largest numeric difference."""
    try:
        if path.endswith(".json"):
            return moves(flatten(json.loads(old)), flatten(json.loads(new)))
        if path.endswith((".csv", ".tsv")):
            sep = "\t" if path.endswith(".tsv") else ","
            a, b = (read_csv(io.BytesIO(data), sep=sep) for data in (old, new))
            if a.shape != b.shape or list(a.columns) != list(b.columns):
                return f"{len(a)} rows -> {len(b)} rows"
            numeric = a.select_dtypes("number").columns.intersection(b.select_dtypes("number").columns)
            largest = float((a[numeric] - b[numeric]).abs().max().max()) if len(numeric) else 0.0
            return (f"{int((a != b).any(axis=1).sum())} of {len(a)} rows differ"
                    + (f", max abs difference {largest:.2g}" if largest else ""))
    except ValueError:  # JSON's and pandas' parser errors are ValueErrors
        pass
    return ""  # the caller says that the content differs


def check_outputs(rev: str) -> list[tuple[str, str]]:
    """A line per output in dvc.lock: identical (bytes if in git, else hash) or how far. Only data stages
    fail: the others follow from the features, which check_features judges."""
    theirs = lock_outputs(yaml.safe_load(git_show(rev, "dvc.lock")))
    ours = lock_outputs(yaml.safe_load(Path("dvc.lock").read_text()))
    lines = []
    for path in {**theirs, **ours}:
        stage = (theirs.get(path) or ours[path])[0]
        old = git_show(rev, path)
        if old is not None and Path(path).is_file():  # kept in git: the bytes
            new = Path(path).read_bytes()
            same, detail = old == new, how_far(path, old, new)
        else:
            old, new = (lock.get(path, (stage, None))[1] for lock in (theirs, ours))
            same, detail = old == new, f"hash {str(new)[:8]} vs committed {str(old)[:8]}"
        lines.append(("identical", f"{path} ({stage})") if same else
                     ("differs" if stage in DATA_STAGES else "within tolerance",
                      f"{path} ({stage}): {detail or 'content differs'}"))
    return lines


def reference_videos() -> list[str]:
    """REFERENCE_CLIPS videos spread evenly over the sorted list (so over the classes)."""
    videos = read_csv(paths("features")["video_list"])["video"]
    return list(videos.iloc[::max(1, len(videos) // REFERENCE_CLIPS)][:REFERENCE_CLIPS])


def extract_clips(videos: list[str], features_cfg: dict, runtime_cfg: dict, compiled: bool = False,
                  ) -> tuple[np.ndarray, str]:
    """(float32 [K, T, D] features through the features stage's own code path, the precision used)."""
    from actionrec.backbone import inference_backbone
    from actionrec.extract import iter_features
    from actionrec.runtime import resolve_runtime

    cfg, device = resolve_runtime(features_cfg, {**runtime_cfg, "compile": compiled, "num_workers": 0,
                                                 "batch_frames": features_cfg["num_frames"]})
    model = inference_backbone(cfg, device, cfg["batch_frames"])
    out = [None] * len(videos)
    for index, feats, error, *_ in iter_features(model, videos, cfg):
        if feats is None:
            raise UserError(f"cannot decode reference clip {videos[index]} ({error}): run 'make repro' first")
        out[index] = feats.astype(np.float32)
    return np.stack(out), cfg["precision"]


def relative_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per frame: |a - b| / |b|"""
    return np.linalg.norm(a - b, axis=-1) / np.maximum(np.linalg.norm(b, axis=-1), 1e-12)


def write_reference(params: dict) -> Path:
    features = dict(params["features"], precision="fp32")  # with the videos, what fixes its values
    root = Path(params["data"]["root"])
    videos = reference_videos()
    feats, _ = extract_clips([str(root / v) for v in videos], features, params["runtime"])
    meta = {"videos": videos, "sha256": [sha256_of(root / v) for v in videos], "params": features,
            "precision": "fp32", "machine": f"{platform.system()} {platform.machine()} {cpu_name()}"}
    REFERENCE.parent.mkdir(exist_ok=True)
    np.savez(REFERENCE, features=feats, meta=json.dumps(meta, sort_keys=True))
    return REFERENCE


def cpu_name() -> str:
    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []
    return next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")),
                platform.processor() or "unknown CPU")


def check_features(params: dict, reference: bytes | None) -> tuple[str, str]:
    """Re-extract the reference clips here; compare with the committed npz bytes."""
    if reference is None:
        return "differs", f"{REFERENCE} is not committed: write it with --write-reference and commit it"
    saved = np.load(io.BytesIO(reference))
    meta = json.loads(str(saved["meta"]))
    if meta["params"] != dict(params["features"], precision="fp32"):
        return "differs", (f"{REFERENCE} was made with other features params ({meta['params']}): "
                           "write it again with --write-reference")
    root = Path(params["data"]["root"])
    clips = [root / v for v in meta["videos"]]
    if [sha256_of(p) if p.is_file() else None for p in clips] != meta["sha256"]:
        return "differs", f"the reference clips under {root} are not the committed videos: run 'make repro'"
    feats, precision = extract_clips([str(p) for p in clips], params["features"], params["runtime"])
    distance = float(relative_l2(feats, saved["features"]).max())
    return verdict(distance, TOLERANCE[precision]), (
        f"features of {len(clips)} reference clips ({precision} here, fp32 on {meta['machine']}): "
        f"max relative L2 {distance:.2g} (tolerance {TOLERANCE[precision]:g})")


def check_metrics(committed: dict, workspace: dict) -> list[tuple[str, str]]:
    lines = []
    for key in (key for key in HEADLINE if key in committed):
        ours, theirs = workspace.get(key), committed[key]
        if ours is None:
            lines.append(("differs", f"{key}: missing from the workspace's metrics (run 'make repro')"))
            continue
        tolerance = one_video(key, committed["test_videos"], committed["classes"])
        delta = abs(ours - theirs)
        lines.append((verdict(delta, tolerance + 1e-6), f"{key}: {ours:.4f} vs committed {theirs:.4f} "
                      f"(difference {delta:.4f}, tolerance one test video = {tolerance:.4f})"))
    return lines


def check_predictions(committed_csv: bytes) -> tuple[str, str]:
    theirs = read_csv(io.BytesIO(committed_csv))
    ours = read_csv(paths("evaluate")["confusion"])
    if len(ours) != len(theirs) or list(ours["actual"]) != list(theirs["actual"]):
        return "differs", f"{paths('evaluate')['confusion']}: another test set than the commit's"
    changes = int((ours["predicted"] != theirs["predicted"]).sum())
    return verdict(changes, 1), f"test predictions: {len(ours) - changes} of {len(ours)} as committed"


def verify(rev: str = "HEAD") -> int:
    """Print one line per artifact; return how many are beyond tolerance."""
    params = load_params("data", "features", "runtime")
    if not Path("dvc.lock").is_file() or git_show(rev, "dvc.lock") is None:
        raise UserError(f"nothing to compare: run 'make repro' first, and commit dvc.lock at {rev}")
    if out_of_date := stale():
        raise UserError(f"the workspace is not what dvc.lock says (stale: {', '.join(out_of_date)}): "
                        "run 'make repro' first")
    (old_params, committed), (new_params, workspace) = results(rev), results(None)
    lines = [("differs", f"params.yaml: {moves(old_params, new_params)} (not {rev}'s: an experiment is applied? "
              "the rest compares other params' results)") if changed(old_params, new_params) else
             ("identical", "params.yaml"), *check_outputs(rev)]
    lines.append(check_features(params, git_show(rev, str(REFERENCE))))
    lines += check_metrics(committed, workspace)
    lines.append(check_predictions(git_show(rev, paths("evaluate")["confusion"])))
    for state, text in lines:
        print(f"{state:<17} {text}")
    beyond = sum(state == "differs" for state, _ in lines)
    moved = [text.split(" (")[0].split(":")[0] for state, text in lines if state != "identical"]
    print(f"{'verify:':<17} {len(lines) - beyond} of {len(lines)} identical or within tolerance of {rev}"
          + (f"; not identical: {', '.join(moved)}" if moved else ""))
    return beyond


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD", help="the commit to compare with (default HEAD)")
    parser.add_argument("--write-reference", action="store_true",
                        help=f"extract the reference clips here (fp32) into {REFERENCE}")
    args = parser.parse_args()
    if args.write_reference:
        print(write_reference(load_params("data", "features", "runtime")))
    elif verify(args.rev):
        raise SystemExit(1)


if __name__ == "__main__":
    run_stage(main)
