"""`make verify`: after `make repro`, how close this machine came to what the commit says.

    python -m actionrec.verify [--rev HEAD]       # one line per artifact; exit 1 only beyond tolerance
    python -m actionrec.verify --write-reference  # the machine that commits dvc.lock: reference/features.npz

Three levels, as the README's "Reproducibility" section states them:
- data stages (synthesize, subset, split): identical bytes on any machine: their outputs'
  hashes in the workspace's dvc.lock equal the committed dvc.lock's;
- features: floating point differs by CPU instruction set, thread count, GPU and precision,
  so a few reference clips are extracted again here and compared with the features the
  committing machine stored in reference/features.npz: max relative L2 distance within the
  tolerance measured for the precision (bench/tolerance.py measures them);
- headline metrics: equal to the committed ones, or within what one test video changes.
"""
from __future__ import annotations

import argparse
import io
import json
import platform
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from actionrec.errors import UserError, run_stage
from actionrec.params import load_params
from actionrec.pipeline import paths

DATA_STAGES = ("synthesize", "subset", "split")
REFERENCE = Path("reference/features.npz")
REFERENCE_CLIPS = 4
# The features params that, with the videos, fix the reference's values (+ the resolved precision).
REFERENCE_KEYS = ("num_frames", "backbone", "weights", "resize", "crop", "interpolation", "seed")
# Max relative L2 distance of a re-extracted reference frame feature from the committed one,
# per precision used here; measured with bench/tolerance.py on the demo's reference clips
# (README: Reproducibility). fp32: 0 with 1 or 2 threads, 1.3e-7 compiled, 2e-7 with AVX2
# instead of AVX-512 kernels, 5e-4 with SSE4.1 kernels (a different convolution algorithm: the
# stand-in for other CPU families and GPUs, which are not measured). bf16: 0.0048-0.0049, native
# or emulated; fp16: 0.0006. Each tolerance is 4x the largest measured difference and well
# below the smallest distance between frames of two different demo clips (0.054), so a wrong
# clip, decoder colour or preprocessing fails; two sampled frames of one clip can be as close
# as 0.001, so frame indices are checked by the decoder tests, not here.
TOLERANCE = {"fp32": 0.002, "bf16": 0.02, "fp16": 0.02, "int8": 0.05}  # int8 vs the fp32 reference: 0.024 measured, 2x
HEADLINE = ("test_accuracy", "test_macro_f1", "baseline_test_accuracy", "baseline_test_macro_f1")


def git_show(rev: str, path: str) -> bytes:
    """A file as committed at rev; UserError if git has no such file there."""
    result = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True)
    if result.returncode != 0:
        raise UserError(f"git has no {path} at {rev}: commit it first (or pass --rev)")
    return result.stdout


def stage_outputs(lock: dict, stage: str) -> dict[str, str]:
    """{output path: hash} of a stage in a parsed dvc.lock."""
    entry = lock.get("stages", {}).get(stage, {})
    return {out["path"]: out.get("md5") or out.get("hash") for out in entry.get("outs", [])}


def check_data_stages(committed: dict, workspace: dict) -> list[tuple[str, str]]:
    """(verdict, text) per output of the data stages: hashes equal, or not."""
    lines = []
    for stage in DATA_STAGES:
        if committed["stages"][stage].get("params") != workspace["stages"].get(stage, {}).get("params"):
            lines.append(("differs", f"{stage}: run with other params than the commit's "
                                     "(git checkout -- params.yaml && dvc repro)"))
            continue
        ours = stage_outputs(workspace, stage)
        for path, md5 in stage_outputs(committed, stage).items():
            verdict = "identical" if ours.get(path) == md5 else "differs"
            lines.append((verdict, f"{path} ({stage}): {ours.get(path)}"
                          + ("" if verdict == "identical" else f" vs committed {md5}")))
    return lines


def reference_videos(video_list: pd.Series, count: int = REFERENCE_CLIPS) -> list[str]:
    """count videos spread evenly over the sorted list (so over the classes)."""
    step = max(1, len(video_list) // count)
    return list(video_list.iloc[::step][:count])


def extract_clips(paths: list[str], features_cfg: dict, runtime_cfg: dict, compiled: bool = False,
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
    out = [None] * len(paths)
    for index, feats, error, *_ in iter_features(model, paths, cfg):
        if feats is None:
            raise UserError(f"cannot decode reference clip {paths[index]} ({error}): run 'make repro' first")
        out[index] = feats.astype(np.float32)
    return np.stack(out), cfg["precision"]


def relative_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per frame: |a - b| / |b| over the feature dimension."""
    return np.linalg.norm(a - b, axis=-1) / np.maximum(np.linalg.norm(b, axis=-1), 1e-12)


def write_reference(params: dict) -> Path:
    """Extract the reference clips on this machine, in fp32, and save them with what made them."""
    from actionrec.download import sha256_of

    features = dict(params["features"], precision="fp32")
    root = Path(params["data"]["root"])
    videos = reference_videos(pd.read_csv(paths("features")["video_list"], keep_default_na=False)["video"])
    feats, _ = extract_clips([str(root / v) for v in videos], features, params["runtime"])
    meta = {"videos": videos, "sha256": [sha256_of(root / v) for v in videos],
            "params": {k: features[k] for k in REFERENCE_KEYS}, "precision": "fp32",
            "machine": f"{platform.system()} {platform.machine()} {cpu_name()}"}
    REFERENCE.parent.mkdir(exist_ok=True)
    buffer = io.BytesIO()  # np.savez_compressed writes zip timestamps: save, then write the bytes
    np.savez(buffer, features=feats, meta=json.dumps(meta, sort_keys=True))
    REFERENCE.write_bytes(buffer.getvalue())
    return REFERENCE


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def check_features(params: dict, reference: bytes) -> tuple[str, str]:
    """Re-extract the reference clips here; compare with the committed reference (npz bytes)."""
    from actionrec.download import sha256_of

    saved = np.load(io.BytesIO(reference))
    meta = json.loads(str(saved["meta"]))
    features = params["features"]
    if meta["params"] != {k: features[k] for k in REFERENCE_KEYS}:
        return "differs", (f"{REFERENCE} was made with other features params ({meta['params']}): "
                           "write it again with --write-reference")
    root = Path(params["data"]["root"])
    paths = [root / v for v in meta["videos"]]
    if [sha256_of(p) if p.is_file() else None for p in paths] != meta["sha256"]:
        return "differs", f"the reference clips under {root} are not the committed videos: run 'make repro'"
    feats, precision = extract_clips([str(p) for p in paths], features, params["runtime"])
    distance = float(relative_l2(feats, saved["features"]).max())
    tolerance = TOLERANCE[precision]
    verdict = "identical" if distance == 0 else "within tolerance" if distance <= tolerance else "differs"
    return verdict, (f"features of {len(paths)} reference clips ({precision} here, fp32 on "
                     f"{meta['machine']}): max relative L2 {distance:.2g} (tolerance {tolerance:g})")


def check_metrics(committed: dict, workspace: dict, test_videos: int, classes: int) -> list[tuple[str, str]]:
    """Headline metrics: equal, or within what one test video changes: 1/N of accuracy, and
    2/C of macro-F1 (one video changes the F1 of at most two classes, each by at most 1)."""
    lines = []
    for key in HEADLINE:
        if key not in committed:
            continue
        ours, theirs = workspace.get(key), committed[key]
        tolerance = (1 / test_videos if "accuracy" in key else 2 / classes) + 1e-6
        if ours is None:
            lines.append(("differs", f"{key}: missing from metrics/evaluate.json (run 'make repro')"))
            continue
        delta = abs(ours - theirs)
        verdict = "identical" if delta == 0 else "within tolerance" if delta <= tolerance else "differs"
        lines.append((verdict, f"{key}: {ours:.4f} vs committed {theirs:.4f} (difference {delta:.4f}, "
                               f"tolerance one test video = {tolerance:.4f})"))
    return lines


def check_predictions(committed_csv: bytes) -> tuple[str, str]:
    """How many test videos get the committed prediction (plots/confusion_test.csv, in order)."""
    theirs = pd.read_csv(io.BytesIO(committed_csv))
    ours = pd.read_csv("plots/confusion_test.csv")
    if len(ours) != len(theirs) or list(ours["actual"]) != list(theirs["actual"]):
        return "differs", "plots/confusion_test.csv: another test set than the commit's"
    changed = int((ours["predicted"] != theirs["predicted"]).sum())
    verdict = "identical" if changed == 0 else "within tolerance" if changed <= 1 else "differs"
    return verdict, f"test predictions: {len(ours) - changed} of {len(ours)} as committed"


def verify(rev: str = "HEAD") -> int:
    """Print one line per artifact; the number of artifacts beyond tolerance."""
    params = load_params("data", "features", "runtime")
    if not Path("dvc.lock").is_file() or not Path("metrics/evaluate.json").is_file():
        raise UserError("nothing reproduced yet: run 'make repro' first")
    status = subprocess.run(["dvc", "status", "--json"], capture_output=True, text=True)
    stale = sorted(json.loads(status.stdout or "{}")) if status.returncode == 0 else ["?"]
    if stale:
        raise UserError(f"the workspace is not what dvc.lock says (stale: {', '.join(stale)}): run 'make repro' first")
    same_params = yaml.safe_load(git_show(rev, "params.yaml")) == yaml.safe_load(Path("params.yaml").read_text())
    lines = [("identical", "params.yaml") if same_params else
             ("differs", f"params.yaml is not {rev}'s (an experiment is applied?): the rest compares "
                         "other params' results")]
    lines += check_data_stages(yaml.safe_load(git_show(rev, "dvc.lock")), yaml.safe_load(Path("dvc.lock").read_text()))
    lines.append(check_features(params, git_show(rev, str(REFERENCE))))
    committed = json.loads(git_show(rev, "metrics/evaluate.json"))
    workspace = json.loads(Path("metrics/evaluate.json").read_text())
    classes = pd.read_csv(paths("split")["metadata"])["label"].nunique()
    lines += check_metrics(committed, workspace, committed["test_videos"], classes)
    lines.append(check_predictions(git_show(rev, "plots/confusion_test.csv")))
    for verdict, text in lines:
        print(f"{verdict:<17} {text}")
    beyond = sum(verdict == "differs" for verdict, _ in lines)
    print(f"{'verify:':<17} {len(lines) - beyond} of {len(lines)} identical or within tolerance of {rev}")
    return beyond


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD", help="the commit to compare with (default HEAD)")
    parser.add_argument("--write-reference", action="store_true",
                        help=f"extract the reference clips here (fp32) into {REFERENCE}")
    args = parser.parse_args()
    if args.write_reference:
        print(write_reference(load_params("data", "features", "runtime")))
        return
    if verify(args.rev):
        raise SystemExit(1)


if __name__ == "__main__":
    run_stage(main)
