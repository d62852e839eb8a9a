"""`make verify`: after `make repro`, how close this machine came to what the commit says.

    python -m actionrec.verify [--rev HEAD]       # one line per artifact; exit 1 only beyond tolerance
    python -m actionrec.verify --write-reference  # the machine that commits dvc.lock: reference/features.npz

Every output that dvc.lock names is compared with the commit's, and each one that differs is
named with how far (the metrics that moved, a curve's largest difference, or its hashes). What
may differ, as the README's "Reproducibility" section states it:
- data stages (synthesize, subset, split): nothing, identical bytes on any machine;
- features: floating point differs by CPU instruction set, thread count, GPU and precision,
  so a few reference clips are extracted again here and compared with the features the
  committing machine stored in reference/features.npz: max relative L2 distance within
  TOLERANCE. The outputs that follow from the features (the model, the training curves) may
  then differ too: reported, judged by the next check;
- headline metrics and test predictions: equal, or within what one test video changes.
"""
from __future__ import annotations

import argparse
import io
import json
import platform
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from actionrec.errors import UserError, run_stage
from actionrec.params import load_params
from actionrec.pipeline import paths
from actionrec.report import HEADLINE, changed, command, flatten, git_show, one_video, results

DATA_STAGES = ("synthesize", "subset", "split")
REFERENCE = Path("reference/features.npz")
REFERENCE_CLIPS = 4
# Max relative L2 distance of a re-extracted reference frame feature from the committed one,
# per precision used here; measured with bench/tolerance.py on the demo's reference clips
# (docs/reproducibility.md quotes the measurements and points here for the tolerances).
# Each is 4x the largest measured difference and well below the smallest distance between
# frames of two different demo clips (0.054), so a wrong clip, decoder colour or preprocessing
# fails; two sampled frames of one clip can be as close as 0.001, so frame indices are checked
# by the decoder tests, not here.
TOLERANCE = {"fp32": 0.002, "bf16": 0.02, "fp16": 0.02}


def verdict(distance: float, tolerance: float) -> str:
    return "identical" if distance == 0 else "within tolerance" if distance <= tolerance else "differs"


def lock_outputs(lock: dict) -> dict[str, tuple[str, str | None]]:
    """{output path: (stage, hash)} of every stage in a parsed dvc.lock."""
    return {out["path"]: (stage, out.get("md5") or out.get("hash"))
            for stage, entry in (lock or {}).get("stages", {}).items() for out in entry.get("outs", [])}


def how_far(path: str, old: bytes, new: bytes) -> str:
    """What differs between two versions of an output kept in git: the JSON values that
    moved, or a table's differing rows and largest numeric difference."""
    try:
        if path.endswith(".json"):
            a, b = flatten(json.loads(old)), flatten(json.loads(new))
            return ", ".join(f"{key} {a.get(key)} -> {b.get(key)}" for key in changed(a, b))
        if path.endswith((".csv", ".tsv")):
            sep = "\t" if path.endswith(".tsv") else ","
            a, b = (pd.read_csv(io.BytesIO(data), sep=sep) for data in (old, new))
            if a.shape != b.shape or list(a.columns) != list(b.columns):
                return f"{len(a)} rows -> {len(b)} rows"
            numeric = a.select_dtypes("number").columns.intersection(b.select_dtypes("number").columns)
            largest = float((a[numeric] - b[numeric]).abs().max().max()) if len(numeric) else 0.0
            return (f"{int((a != b).any(axis=1).sum())} of {len(a)} rows differ"
                    + (f", max abs difference {largest:.2g}" if largest else ""))
    except (ValueError, pd.errors.ParserError):
        pass
    return ""


def check_outputs(rev: str) -> list[tuple[str, str]]:
    """One line per output in dvc.lock: identical to the commit's, or how far from it. An
    output kept in git is compared byte for byte, the others by their hash in dvc.lock. A data
    stage's output must be identical; the others follow from the features (checked against
    the reference) and are judged by the headline metrics: a difference is reported, not failed."""
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


def reference_videos(video_list: pd.Series, count: int = REFERENCE_CLIPS) -> list[str]:
    """count videos spread evenly over the sorted list (so over the classes)."""
    step = max(1, len(video_list) // count)
    return list(video_list.iloc[::step][:count])


def extract_clips(videos: list[str], features_cfg: dict, runtime_cfg: dict, compiled: bool = False,
                  ) -> tuple[np.ndarray, str]:
    """float32 [K, T, D] features of the clips through the features stage's own code path
    (decoding, preprocessing, backbone), one clip a batch, eager unless compiled; and the
    precision used."""
    from actionrec.backbone import inference_backbone
    from actionrec.device import resolve_runtime
    from actionrec.extract import iter_features

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
    """Per frame: |a - b| / |b| over the feature dimension."""
    return np.linalg.norm(a - b, axis=-1) / np.maximum(np.linalg.norm(b, axis=-1), 1e-12)


def reference_params(features: dict) -> dict:
    """What, with the videos, fixes the reference's values: the features section, in fp32."""
    return dict(features, precision="fp32")


def write_reference(params: dict) -> Path:
    """Extract the reference clips on this machine, in fp32, and save them with what made them."""
    from actionrec.download import sha256_of

    features = reference_params(params["features"])
    root = Path(params["data"]["root"])
    videos = reference_videos(pd.read_csv(paths("features")["video_list"], keep_default_na=False)["video"])
    feats, _ = extract_clips([str(root / v) for v in videos], features, params["runtime"])
    meta = {"videos": videos, "sha256": [sha256_of(root / v) for v in videos], "params": features,
            "precision": "fp32", "machine": f"{platform.system()} {platform.machine()} {cpu_name()}"}
    REFERENCE.parent.mkdir(exist_ok=True)
    buffer = io.BytesIO()  # np.savez_compressed writes zip timestamps: save, then write the bytes
    np.savez(buffer, features=feats, meta=json.dumps(meta, sort_keys=True))
    REFERENCE.write_bytes(buffer.getvalue())
    return REFERENCE


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in (cpuinfo.read_text().splitlines() if cpuinfo.is_file() else [])
             if line.startswith("model name")]
    return (names or [platform.processor() or "unknown CPU"])[0]


def check_features(params: dict, reference: bytes | None) -> tuple[str, str]:
    """Re-extract the reference clips here; compare with the committed reference (npz bytes)."""
    from actionrec.download import sha256_of

    if reference is None:
        return "differs", f"{REFERENCE} is not committed: write it with --write-reference and commit it"
    saved = np.load(io.BytesIO(reference))
    meta = json.loads(str(saved["meta"]))
    if meta["params"] != reference_params(params["features"]):
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
    """Headline metrics: equal, or within what one test video changes."""
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
    """How many test videos get the committed prediction (evaluate's confusion plot, in order)."""
    theirs = pd.read_csv(io.BytesIO(committed_csv))
    ours = pd.read_csv(paths("evaluate")["confusion"])
    if len(ours) != len(theirs) or list(ours["actual"]) != list(theirs["actual"]):
        return "differs", f"{paths('evaluate')['confusion']}: another test set than the commit's"
    changes = int((ours["predicted"] != theirs["predicted"]).sum())
    return verdict(changes, 1), f"test predictions: {len(ours) - changes} of {len(ours)} as committed"


def verify(rev: str = "HEAD") -> int:
    """Print one line per artifact; the number of artifacts beyond tolerance."""
    params = load_params("data", "features", "runtime")
    if not Path("dvc.lock").is_file() or git_show(rev, "dvc.lock") is None:
        raise UserError(f"nothing to compare: run 'make repro' first, and commit dvc.lock at {rev}")
    stale = sorted(json.loads(command("dvc", "status", "--json") or "{}"))
    if stale:
        raise UserError(f"the workspace is not what dvc.lock says (stale: {', '.join(stale)}): run 'make repro' first")
    (old_params, committed), (new_params, workspace) = results(rev), results(None)
    keys = changed(old_params, new_params)
    lines = [("differs", f"params.yaml: {', '.join(f'{k} {old_params.get(k)} -> {new_params.get(k)}' for k in keys)}"
                         f" (not {rev}'s: an experiment is applied? the rest compares other params' results)")
             if keys else ("identical", "params.yaml")]
    lines += check_outputs(rev)
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
