"""Stage features: 16 frames a video through the frozen backbone -> data/features/<split>.npy
(float16 [N, T, D]) with <split>.csv in the same row order.

Finished videos are saved in chunks under data/features-partial/ (not a DVC output, so DVC
does not delete it): an interrupted run resumes there. The outputs appear only at the end,
by renaming a finished folder, so DVC never sees a partial result."""
import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from actionrec.backbone import feature_dim, inference_backbone
from actionrec.extract import Throughput, atomic_save_npy, iter_features
from actionrec.params import UserError, load_params, run_stage
from actionrec.splits import SPLITS

OUT, PARTIAL, CHUNK = Path("data/features"), Path("data/features-partial"), 64
RESULT_KEYS = ("num_frames", "backbone", "weights", "precision", "compile", "resize", "crop", "seed")


def fingerprint(cfg: dict, videos: pd.DataFrame, root: Path) -> str:
    """Changes when anything that changes the features changes: then old chunks are unusable."""
    stats = [(v, (root / v).stat().st_size if (root / v).exists() else -1) for v in videos["video"]]
    blob = json.dumps([{k: cfg[k] for k in RESULT_KEYS}, stats]).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def extract_all(model, paths: list[str], cfg: dict, partial: Path) -> tuple[np.ndarray, list[str]]:
    """Features for all paths (float16 [N, T, D]) and an error per path ("" when fine)."""
    dim = feature_dim(cfg["backbone"])
    feats = np.zeros((len(paths), cfg["num_frames"], dim), np.float16)
    errors = [""] * len(paths)
    todo = []
    for start in range(0, len(paths), CHUNK):
        chunk = partial / f"chunk_{start // CHUNK:05d}.npz"
        if chunk.exists():  # finished by an earlier, interrupted run
            saved = np.load(chunk)
            feats[start:start + CHUNK], errors[start:start + CHUNK] = saved["feats"], list(saved["errors"])
        else:
            todo.extend(range(start, min(start + CHUNK, len(paths))))
    if len(todo) < len(paths):
        print(f"resuming: {len(paths) - len(todo)} videos already done in {partial}")
    left = Counter(i // CHUNK for i in todo)  # videos still to come, per chunk
    speed = Throughput()
    bar = tqdm(total=len(todo), desc="features", unit="video")
    for local_index, features, error in iter_features(model, [paths[i] for i in todo], cfg):
        position = todo[local_index]
        if features is not None:
            feats[position] = features.astype(np.float16)
        errors[position] = error
        bar.set_postfix(frames_per_s=f"{speed.add(cfg['num_frames'] if error == '' else 0):.1f}")
        bar.update()
        chunk_id = position // CHUNK
        left[chunk_id] -= 1
        if left[chunk_id] == 0:
            rows = slice(chunk_id * CHUNK, min((chunk_id + 1) * CHUNK, len(paths)))
            tmp = partial / f"chunk_{chunk_id:05d}.tmp.npz"
            np.savez(tmp, feats=feats[rows], errors=np.array(errors[rows]))
            tmp.replace(partial / f"chunk_{chunk_id:05d}.npz")
    bar.close()
    print(f"extracted {len(todo)} videos at {speed.add(0):.1f} frames/s")
    return feats, errors


def main() -> None:
    params = load_params("data", "features")
    cfg, root = params["features"], Path(params["data"]["root"])
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    splits = {name: pd.read_csv(f"data/splits/{name}.csv") for name in SPLITS}
    videos = pd.concat(splits.values(), ignore_index=True)
    partial = PARTIAL / fingerprint(cfg, videos, root)
    partial.mkdir(parents=True, exist_ok=True)
    model = inference_backbone(cfg)
    feats, errors = extract_all(model, [str(root / v) for v in videos["video"]], cfg, partial)

    failed = pd.DataFrame({"video": videos["video"], "error": errors})
    failed = failed[failed["error"] != ""]
    Path("metrics").mkdir(exist_ok=True)
    failed.to_csv("metrics/failed_videos.csv", index=False)
    if len(failed) > cfg["max_failed_fraction"] * len(videos):
        raise UserError(f"{len(failed)} of {len(videos)} videos could not be decoded (more than "
                        f"features.max_failed_fraction={cfg['max_failed_fraction']}): see "
                        "metrics/failed_videos.csv; fix or remove them, or raise the limit")

    tmp = OUT.with_name(OUT.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    ok, offset, summary = np.array([e == "" for e in errors]), 0, {}
    for name, rows in splits.items():
        keep = ok[offset:offset + len(rows)]
        atomic_save_npy(tmp / f"{name}.npy", feats[offset:offset + len(rows)][keep])
        rows[keep].to_csv(tmp / f"{name}.csv", index=False)
        summary[name] = {"videos": int(keep.sum()), "failed_videos": int((~keep).sum())}
        offset += len(rows)
    shutil.rmtree(OUT, ignore_errors=True)
    tmp.replace(OUT)
    shutil.rmtree(partial)
    summary.update(videos=int(ok.sum()), failed_videos=len(failed), frames=int(ok.sum()) * cfg["num_frames"],
                   feature_dim=feats.shape[2], num_frames=cfg["num_frames"], backbone=cfg["backbone"],
                   weights=cfg["weights"], precision=cfg["precision"])
    Path("metrics/features.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    run_stage(main)
