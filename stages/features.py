"""Stage features: num_frames frames of every video in data/metadata.csv through the frozen
backbone -> data/features/features.npy (float16 [N, T, D], memory-mappable), videos.csv (the
metadata rows of those N videos, in row order) and info.json (what made them).

Features do not depend on the split: train and evaluate join data/splits/*.csv to videos.csv
by video, so a split change never re-extracts. Finished videos are saved in chunks under
data/features-partial/<fingerprint>/ (not a DVC output, so DVC leaves it alone): an
interrupted run resumes there, and the fingerprint changes with anything that changes the
values (params, code, torch, weights, videos), so stale chunks are never mixed in. The
outputs appear only at the end, by renaming a finished folder."""
import hashlib
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision
from tqdm import tqdm

from actionrec.backbone import inference_backbone, preprocessing, weights_file
from actionrec.device import resolve_runtime
from actionrec.download import sha256_of
from actionrec.extract import NO_INFO, Throughput, atomic_save_npy, iter_features
from actionrec.params import ParamsError, UserError, load_params, run_stage
from actionrec.video import unavailable_decoder

OUT, PARTIAL, CHUNK = Path("data/features"), Path("data/features-partial"), 64
# the params that change feature values (dvc.yaml lists the same keys); the rest only speed
RESULT_KEYS = ("num_frames", "backbone", "weights", "precision", "resize", "crop", "interpolation", "decoder",
               "seed")
CODE = ("stages/features.py", "actionrec/video.py", "actionrec/backbone.py", "actionrec/extract.py",
        "actionrec/device.py")


def fingerprint(info: dict, videos: pd.DataFrame, root: Path) -> str:
    """Changes when anything that changes the features changes: then old chunks are unusable."""
    def stat(path: Path) -> tuple[int, int]:
        return (path.stat().st_size, path.stat().st_mtime_ns) if path.exists() else (-1, -1)

    code = {name: sha256_of(Path(name)) for name in CODE if Path(name).exists()}
    blob = json.dumps([info, code, [(v, stat(root / v)) for v in videos["video"]]], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def extract_all(model, paths: list[str], cfg: dict, partial: Path) -> tuple[np.ndarray, list[str], list[dict]]:
    """Features for all paths (float16 [N, T, D]), an error per path ("" when fine) and the
    decoded clip's info per path ({"rotation", "decoder", "warning"})."""
    feats = np.zeros((len(paths), cfg["num_frames"], model.feature_dim), np.float16)
    errors = [""] * len(paths)
    infos = [dict(NO_INFO) for _ in paths]
    todo = []
    for start in range(0, len(paths), CHUNK):
        chunk = partial / f"chunk_{start // CHUNK:05d}.npz"
        if chunk.exists():  # finished by an earlier, interrupted run
            saved = np.load(chunk)
            feats[start:start + CHUNK], errors[start:start + CHUNK] = saved["feats"], list(saved["errors"])
            infos[start:start + CHUNK] = json.loads(str(saved["infos"]))
        else:
            todo.extend(range(start, min(start + CHUNK, len(paths))))
    if len(todo) < len(paths):
        print(f"resuming: {len(paths) - len(todo)} videos already done in {partial}")
    left = Counter(i // CHUNK for i in todo)  # videos still to come, per chunk
    speed = Throughput()
    bar = tqdm(total=len(todo), desc="features", unit="video")
    for local_index, features, error, info in iter_features(model, [paths[i] for i in todo], cfg):
        position = todo[local_index]
        if features is not None:
            feats[position] = features.astype(np.float16)
        errors[position], infos[position] = error, info
        bar.set_postfix(frames_per_s=f"{speed.add(cfg['num_frames'] if error == '' else 0):.1f}")
        bar.update()
        chunk_id = position // CHUNK
        left[chunk_id] -= 1
        if left[chunk_id] == 0:
            rows = slice(chunk_id * CHUNK, min((chunk_id + 1) * CHUNK, len(paths)))
            tmp = partial / f"chunk_{chunk_id:05d}.tmp.npz"
            np.savez(tmp, feats=feats[rows], errors=np.array(errors[rows]), infos=np.array(json.dumps(infos[rows])))
            tmp.replace(partial / f"chunk_{chunk_id:05d}.npz")
    bar.close()
    print(f"extracted {len(todo)} videos at {speed.add(0):.1f} frames/s")
    return feats, errors, infos


def main() -> None:
    params = load_params("data", "features")
    cfg, device = resolve_runtime(params["features"])
    root = Path(params["data"]["root"])
    if unavailable_decoder(cfg["decoder"]):
        raise ParamsError(unavailable_decoder(cfg["decoder"]))
    videos = pd.read_csv("data/metadata.csv")
    path = weights_file(cfg["weights"], cfg["backbone"])
    info = {**{k: cfg[k] for k in RESULT_KEYS}, "preprocessing": preprocessing(cfg), "device": cfg["device"],
            "weights_sha256": sha256_of(path) if path and path.is_file() else None,
            "torch": torch.__version__, "torchvision": torchvision.__version__}
    partial = PARTIAL / fingerprint({k: v for k, v in info.items() if k != "device"}, videos, root)
    partial.mkdir(parents=True, exist_ok=True)
    print(f"features on {device} in {cfg['precision']}, {cfg['num_workers']} decode worker(s), "
          f"batches of {cfg['batch_frames']} frames")
    model = inference_backbone(cfg, device, cfg["batch_frames"])
    feats, errors, infos = extract_all(model, [str(root / v) for v in videos["video"]], cfg, partial)
    videos["rotation"] = [info["rotation"] for info in infos]  # degrees turned to make frames upright
    warned = [(v, info["warning"]) for v, info in zip(videos["video"], infos) if info["warning"]]
    for video, warning in warned:
        print(f"warning: {video}: {warning}")

    failed = pd.DataFrame({"video": videos["video"], "error": errors})
    failed = failed[failed["error"] != ""]
    Path("metrics").mkdir(exist_ok=True)
    failed.to_csv("metrics/failed_videos.csv", index=False)
    if len(failed) > cfg["max_failed_fraction"] * len(videos):
        raise UserError(f"{len(failed)} of {len(videos)} videos could not be decoded (more than "
                        f"features.max_failed_fraction={cfg['max_failed_fraction']}): see "
                        "metrics/failed_videos.csv; fix or remove them, or raise the limit")

    if info["weights_sha256"] is None and cfg["weights"] != "none":  # downloaded just now
        info["weights_sha256"] = sha256_of(weights_file(cfg["weights"], cfg["backbone"]))
    ok = np.array([e == "" for e in errors], dtype=bool)
    info.update(feature_dim=int(feats.shape[2]), videos=int(ok.sum()))
    tmp = OUT.with_name(OUT.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    atomic_save_npy(tmp / "features.npy", feats[ok])
    videos[ok].to_csv(tmp / "videos.csv", index=False)
    (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(OUT, ignore_errors=True)
    tmp.replace(OUT)
    shutil.rmtree(partial)
    summary = {"videos": int(ok.sum()), "failed_videos": len(failed), "warned_videos": len(warned),
               "frames": int(ok.sum()) * cfg["num_frames"],
               **{k: info[k] for k in ("feature_dim", "num_frames", "backbone", "weights", "precision",
                                       "decoder", "device")}}
    Path("metrics/features.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    run_stage(main)
