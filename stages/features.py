"""Stage features: every video of VIDEO_LIST through the frozen backbone -> OUT (actionrec/dataset.py),
METRICS, FAILED. Each video's features go, as soon as computed, to a store outside DVC's outputs,
OUT-store/<fingerprint>/<video SHA-256>.npz: a new class or an interrupted run decodes only the rest."""
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision
from tqdm import tqdm

from actionrec.backbone import (build_backbone, degradation, inference_backbone, preprocessing, video_frames,
                                weights_file)
from actionrec.dataset import write_features
from actionrec.extract import Throughput, iter_features
from actionrec.errors import UserError, run_stage
from actionrec.params import load_params
from actionrec.pipeline import code_hashes, feature_store, read_csv, sha256_of, store_key
from actionrec.portable import features_runtime
from actionrec.runtime import resolve_runtime


def fingerprint(info: dict) -> str:
    """Of info (what made the features) and every .py dep of the stage: a store entry is reused only if same."""
    blob = json.dumps([info, code_hashes("features")], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def store_path(store: Path, video: Path) -> Path | None:
    """A video's store entry, by content (a moved file is still found); None when unreadable (decoding says why)."""
    try:
        return store / f"{sha256_of(video)[:32]}.npz"
    except OSError:
        return None


def save_entry(path: Path, feats: np.ndarray, info: dict) -> None:
    """One video's float16 features and what decoding it said (rotation, warning), atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as file:
        np.savez(file, feats=feats, rotation=info["rotation"], warning=info["warning"])
    tmp.replace(path)


def entry_info(path: Path) -> dict:
    with np.load(path) as saved:
        return {"rotation": int(saved["rotation"]), "warning": str(saved["warning"])}


def entry_features(path: Path) -> np.ndarray:
    with np.load(path) as saved:
        return saved["feats"]


def extract_all(extract, paths: list[str], cfg: dict, store: Path,
                ) -> tuple[list[str], list[dict], list[Path | None], int]:
    """(errors, infos, store entries per path; count extracted). extract yields results in any order."""
    stored = [store_path(store, Path(p)) for p in tqdm(paths, desc="hashing videos", unit="video", leave=False)]
    todo = [i for i, entry in enumerate(stored) if entry is None or not entry.exists()]
    errors = [""] * len(paths)
    infos = [{"rotation": 0, "warning": ""} for _ in paths]
    for i in set(range(len(paths))) - set(todo):
        infos[i] = entry_info(stored[i])
    extracted, arrived = 0, set()
    if todo:
        results = extract([paths[i] for i in todo])  # the local engine builds its model here, before the bar
        speed, frames = Throughput(), video_frames(cfg["num_frames"], preprocessing(cfg))
        with tqdm(total=len(todo), desc="features", unit="video") as bar:
            for local_index, feats, error, info in results:
                position = todo[local_index]
                if position in arrived:  # a retried task's result delivered twice: kept once
                    continue
                arrived.add(position)
                errors[position] = error if error or stored[position] else "the file could not be read"
                # the decoder that served a video is a speed choice: not recorded with the result
                infos[position] = {"rotation": int(info["rotation"]), "warning": str(info["warning"])}
                if feats is not None and not errors[position]:
                    if problem := degradation(feats):  # before float16 stores them
                        fp32 = "" if cfg["precision"] == "fp32" else ", features.precision: fp32"
                        raise UserError(f"the features of {paths[position]} {problem} ({cfg['backbone']}, weights "
                                        f"{cfg['weights']}, {cfg['precision']}): use trained weights (features."
                                        f"weights: DEFAULT){fp32} or another features.backbone (e.g. resnet50)")
                    extracted += 1
                    if not stored[position].exists():  # another file with the same bytes may have come first
                        save_entry(stored[position], feats.astype(np.float16), infos[position])
                bar.set_postfix(frames_per_s=f"{speed.add(frames if error == '' else 0):.1f}")
                bar.update()
        clips = frames // cfg["num_frames"]  # frames a clip: 1 for an image backbone
        per_clip = f" ({speed.add(0) / clips:.2f} clips of {clips} frames/s)" if clips > 1 else ""
        print(f"extracted {extracted} videos at {speed.add(0):.1f} frames/s{per_clip}")
    print(f"reused {len(paths) - len(todo)} videos from {store}")
    return errors, infos, stored, extracted


def main(video_list: str, out: str, metrics: str, failed_csv: str) -> None:
    params = load_params("data", "features", "runtime")
    cfg, device = resolve_runtime(params["features"], features_runtime(params["features"], params["runtime"]))
    root, out = Path(params["data"]["root"]), Path(out)
    if not Path(video_list).is_file():
        raise UserError(f"{video_list} not found: run 'dvc repro' (the subset stage writes it)")
    videos = read_csv(video_list)["video"]
    path = weights_file(cfg["weights"], cfg["backbone"])
    if path and not path.is_file():  # named weights not downloaded yet: now, so the fingerprint has their hash
        build_backbone(cfg["backbone"], cfg["weights"])
    info = {**params["features"], "preprocessing": preprocessing(cfg), "device": cfg["device"],
            "precision": cfg["precision"], "weights_sha256": sha256_of(path) if path else None,
            "torch": torch.__version__, "torchvision": torchvision.__version__}
    if cfg["precision"] == "int8":  # the calibration clips and OpenVINO's version fix the values too
        from actionrec.quantize import calibration_info

        info["calibration"] = calibration_info()
    store = feature_store(out) / fingerprint(
        {**{k: v for k, v in info.items() if k != "device"}, "device_type": device.type})
    store.mkdir(parents=True, exist_ok=True)
    (store / "key.json").write_text(json.dumps(store_key(params["features"]), indent=1) + "\n")  # for make gc
    workers = "on Ray" if cfg["engine"] == "ray" else f"{cfg['num_workers']} decode worker(s)"  # Ray's: its own line
    print(f"features on {device} in {cfg['precision']}, {workers}, batches of {cfg['batch_frames']} frames")

    def extract(todo: list[str]):
        if cfg["engine"] == "ray":  # speed only: the same features (tests/test_ray.py)
            from actionrec.engine import iter_features_ray

            return iter_features_ray(todo, cfg)
        return iter_features(inference_backbone(cfg, device, cfg["batch_frames"]), todo, cfg)

    paths = [str(root / v) for v in videos]
    errors, infos, stored, extracted = extract_all(extract, paths, cfg, store)
    # a decoder may quote the path it was given: git keeps the list, so no path of this machine
    errors = [error.replace(path, video) for error, path, video in zip(errors, paths, videos)]
    warned = [(v, info["warning"]) for v, info, error in zip(videos, infos, errors) if info["warning"] and not error]
    for video, warning in warned:
        print(f"warning: {video}: {warning}")

    ok = np.array(errors) == ""
    failed = pd.DataFrame({"video": videos, "error": errors})[~ok]
    for video, error in failed.itertuples(index=False):  # each one named, whether or not it stops the run
        print(f"warning: {video} could not be decoded, left out: {error}", file=sys.stderr)
    failed.to_csv(failed_csv, index=False)
    if len(failed) > cfg["max_failed_fraction"] * len(videos):
        raise UserError(f"{len(failed)} of {len(videos)} videos could not be decoded (more than "
                        f"runtime.max_failed_fraction={cfg['max_failed_fraction']}): see "
                        f"{failed_csv}; fix or remove them, or raise the limit")
    if not ok.any():
        raise UserError(f"none of the {len(videos)} videos could be decoded: see {failed_csv}")

    kept = [entry for entry, good in zip(stored, ok) if good]
    info.update(feature_dim=int(entry_features(kept[0]).shape[1]), videos=int(ok.sum()))
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    table = pd.DataFrame({"video": videos, "rotation": [i["rotation"] for i in infos],  # degrees turned upright
                          "warning": [i["warning"] for i in infos]})
    write_features(tmp, table[ok], lambda i: entry_features(kept[i]))
    (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    summary = {"videos": int(ok.sum()), "failed_videos": len(failed), "warned_videos": len(warned),
               "frames": int(ok.sum()) * video_frames(cfg["num_frames"], info["preprocessing"]),
               "extracted_videos": extracted, "reused_videos": int(ok.sum()) - extracted,
               "feature_dim": info["feature_dim"]}
    # numbers only: the settings are in info.json (as metrics they made `dvc exp show` columns beside the params')
    print(f"features of {summary['videos']} videos: {info['backbone']} ({info['weights']} weights), "
          f"{info['precision']} on {info['device']}")
    Path(metrics).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    run_stage(main)
