"""`make verify`: after `make repro`, how close this machine came to what the commit says (docs/reproducibility.md).

    python -m actionrec.verify [--rev HEAD]       # one line per artifact; exit 1 only beyond tolerance
    (an output that differs and that nothing here measures, e.g. one whose committed version this DVC cache
    lacks, is "not measured": never counted as within tolerance)
    python -m actionrec.verify --write-reference  # the machine that commits dvc.lock: reference/features.npz"""
from __future__ import annotations

import argparse
import functools
import io
import json
import platform
from pathlib import Path

import numpy as np
import yaml

from actionrec.errors import UserError, run_stage
from actionrec.params import load_params
from actionrec.pipeline import paths, read_csv, sha256_of
from actionrec.portable import features_runtime
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
STATES = ("identical", "within tolerance", "not measured", "differs")  # each line's verdict, best first


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


@functools.cache
def _dvc_cache(repo: Path):
    from dvc.repo import Repo

    with Repo(str(repo)) as opened:
        return opened.cache.local


def cached(oid: str | None) -> Path | None:
    """This DVC cache's copy of an object (a file, or a folder's .dir listing); None where it lacks it."""
    path = Path(_dvc_cache(Path.cwd()).oid_to_path(oid)) if oid else None
    return path if path and path.is_file() else None


def model_distance(old: Path, new: Path) -> tuple[str, str]:
    import torch

    a, b = (torch.load(path, map_location="cpu", weights_only=True)["state_dict"] for path in (old, new))
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        return "differs", "another architecture than the committed model"
    largest = max((float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel()), default=0.0)
    return "within tolerance", f"parameters: max abs difference {largest:.2g}"


def features_distance(listing: Path, new: Path) -> tuple[str, str] | None:
    """Frame by frame, the workspace's features folder against the committed one (its .dir listing), where
    this DVC cache holds every file of that; tolerance: TOLERANCE of the coarser precision of the two."""
    old = {entry["relpath"]: cached(entry["md5"]) for entry in json.loads(listing.read_text())}
    if None in old.values():
        return None
    ours = {path.relative_to(new).as_posix() for path in new.rglob("*") if path.is_file()}
    if moved := [rel for rel in sorted(old.keys() | ours) if rel.endswith(".csv") and (
            rel not in old or rel not in ours or old[rel].read_bytes() != (new / rel).read_bytes())]:
        return "differs", f"other videos (or decoding results) than committed in {', '.join(moved)}"
    distance = 0.0
    for rel in (rel for rel in old if rel.endswith(".npy")):  # a shard at a time
        a, b = np.load(new / rel).astype(np.float32), np.load(old[rel]).astype(np.float32)
        if a.shape != b.shape:
            return "differs", f"{rel}: shape {a.shape} vs committed {b.shape}"
        distance = max(distance, float(relative_l2(a, b).max(initial=0.0)))
    infos = [json.loads(path.read_text()) for path in (old["info.json"], new / "info.json")]
    tolerance = max(TOLERANCE[info["precision"]] for info in infos)
    info = moves(*(flatten(i) for i in infos))
    return ("differs" if distance > tolerance else "within tolerance",
            f"max relative L2 of a frame {distance:.2g} (tolerance {tolerance:g})" + (info and f"; info.json: {info}"))


def distance(path: str, committed: str | None) -> tuple[str, str] | None:
    """(verdict, how far) for a DVC-cached output of the features or the train stage; None: not measured."""
    old = cached(committed)
    if old is None or not Path(path).exists():
        return None
    if path == paths("features")["out"]:
        return features_distance(old, Path(path))
    return model_distance(old, Path(path)) if path == paths("train")["model_file"] else None


def check_outputs(rev: str) -> list[tuple[str, str]]:
    """A line per output in dvc.lock: identical (bytes if in git, else hash), or how far, or not measured; then
    dvc.lock itself. Only data stages fail outright: the others follow from the features, which
    check_features judges (and the headline metrics), so their distances are reported, and within tolerance."""
    locks = [yaml.safe_load(git_show(rev, "dvc.lock")) or {}, yaml.safe_load(Path("dvc.lock").read_text()) or {}]
    theirs, ours = (lock_outputs(lock) for lock in locks)
    lines = []
    for path in {**theirs, **ours}:
        stage = (theirs.get(path) or ours[path])[0]
        old = git_show(rev, path)
        if old is not None and Path(path).is_file():  # kept in git: the bytes
            new = Path(path).read_bytes()
            same, detail = old == new, how_far(path, old, new)
            state = "differs" if stage in DATA_STAGES else "within tolerance" if detail else "not measured"
        else:
            old, new = (lock.get(path, (stage, None))[1] for lock in (theirs, ours))
            same, detail = old == new, f"hash {str(new)[:8]} vs committed {str(old)[:8]}"
            state, detail = ("differs", detail) if stage in DATA_STAGES else distance(path, old) or (
                "not measured", detail + " (the committed version is not in this DVC cache: dvc pull fetches it)")
        detail = f"differs, not measured: {detail or 'no measure for this file'}" if state == "not measured" else \
            detail or "content differs"
        lines.append(("identical", f"{path} ({stage})") if same else (state, f"{path} ({stage}): {detail}"))
    return lines + [check_lock(rev, *locks, lines)]


def check_lock(rev: str, old: dict, new: dict, lines: list[tuple[str, str]]) -> tuple[str, str]:
    """dvc.lock: identical, or what differs in it: the hashes of outputs (judged each on its own line: the worst
    of those), or a stage's command, params or inputs other than outputs (another experiment: differs)."""
    if old == new:
        return "identical", "dvc.lock"
    outs = {**lock_outputs(old), **lock_outputs(new)}
    hashes = [path for path in outs if lock_outputs(old).get(path) != lock_outputs(new).get(path)]
    old, new = ({stage: (entry.get("cmd"), entry.get("params"), [dep for dep in entry.get("deps", [])
                                                                 if dep["path"] not in outs])  # inputs, no outputs
                 for stage, entry in lock.get("stages", {}).items()} for lock in (old, new))
    if moved := sorted(stage for stage in old.keys() | new.keys() if old.get(stage) != new.get(stage)):
        return "differs", f"dvc.lock: the command, params or inputs of {', '.join(moved)} differ from {rev}'s"
    states = [state for state, text in lines if text.split(" (")[0] in hashes]
    return max(states, key=STATES.index, default="differs"), f"dvc.lock: the hashes of {', '.join(hashes)} (each above)"


def reference_videos() -> list[str]:
    """REFERENCE_CLIPS videos spread evenly over the sorted list (so over the classes)."""
    videos = read_csv(paths("features")["video_list"])["video"]
    return list(videos.iloc[::max(1, len(videos) // REFERENCE_CLIPS)][:REFERENCE_CLIPS])


def extract_clips(videos: list[str], features_cfg: dict, runtime_cfg: dict, compiled: bool = False,
                  ) -> tuple[np.ndarray, str]:
    """(float32 [K, T, D] features through the features stage's own code path, the precision used)."""
    from actionrec.backbone import inference_backbone, preprocessing, video_frames
    from actionrec.extract import iter_features
    from actionrec.runtime import resolve_runtime

    frames = video_frames(features_cfg["num_frames"], preprocessing(features_cfg))  # a video a backbone pass
    cfg, device = resolve_runtime(features_cfg, {**runtime_cfg, "compile": compiled, "num_workers": 0,
                                                 "batch_frames": frames})
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
    counts = {state: sum(line[0] == state for line in lines) for state in STATES}
    moved = [text.split(" (")[0].split(":")[0] for state, text in lines if state != "identical"]
    print(f"{'verify:':<17} {len(lines)} compared with {rev}: {counts['identical']} identical, "
          f"{counts['within tolerance']} within tolerance, {counts['not measured']} not measured, "
          f"{counts['differs']} beyond tolerance" + (f"; not identical: {', '.join(moved)}" if moved else ""))
    return counts["differs"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD", help="the commit to compare with (default HEAD)")
    parser.add_argument("--write-reference", action="store_true",
                        help=f"extract the reference clips here (fp32) into {REFERENCE}")
    args = parser.parse_args()
    params = load_params("data", "features", "runtime")
    # the reference, and fp32 features here, through the kernels the features stage computes fp32 with
    features_runtime({"precision": "fp32"} if args.write_reference else params["features"], params["runtime"])
    if args.write_reference:
        print(write_reference(params))
    elif verify(args.rev):
        raise SystemExit(1)


if __name__ == "__main__":
    run_stage(main)
