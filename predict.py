"""Classify videos with the trained model (docs/predict.md):

  python predict.py VIDEO [--top-k K] [--json]     one video
  python predict.py VIDEO --window 2 [--stride 1]  a long video as a timeline of 2 s windows
  python predict.py VIDEO --frames-out DIR         also save the frames the model saw, as PNGs
  python predict.py DIR --csv out.csv              every video under DIR, one CSV row each

Everything it needs (class names, frames, backbone, weights, preprocessing, feature
normalisation) comes from the model file that `dvc repro` wrote; nothing is guessed."""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from actionrec.errors import UserError, fail
from actionrec.pipeline import paths
from actionrec.video import DECODERS, VideoError  # numpy only: argument errors come before torch loads

if TYPE_CHECKING:
    import torch

CSV_COLUMNS = ("file", "label", "confidence", "top_k", "error", "warning")
ADVICE = "train on real videos first (docs/predict.md)"


def check_weights(meta: dict) -> None:
    """The backbone weights must be the very file the features were made with."""
    from actionrec.backbone import weights_file
    from actionrec.pipeline import sha256_of

    path = weights_file(meta["weights"], meta["backbone"])
    if path is None or not meta.get("weights_sha256"):
        return
    if not path.is_file():
        fail(f"the backbone weights {meta['weights']} are not at {path}: put the file the model was "
             "trained with there (see README)")
    if sha256_of(path) != meta["weights_sha256"]:
        fail(f"{path} is not the weights file the model was trained with (SHA-256 differs): restore "
             "that file, or re-run 'dvc repro' to retrain on the new one")


def model_warnings(meta: dict) -> list[str]:
    """Why labels may mean nothing on real videos (a model file without data_source: the demo's random backbone)."""
    random_backbone, source = meta["weights"] == "none", meta.get("data_source")
    if source == "synthetic":
        how = " with a random backbone" if random_backbone else ""
        return [f"this model was trained on the synthetic demo dataset{how}: its labels mean nothing "
                f"on real videos; {ADVICE}"]
    if random_backbone:  # on real videos: the backbone is the cause, not the data
        demo = ", like the synthetic demo" if source is None else ""
        return [f"this model was trained with a random backbone (features.weights: none{demo}), so its labels "
                "mean little on real videos: retrain with trained weights (features.weights: DEFAULT; docs/predict.md)"]
    return []


class Predictor(NamedTuple):
    """The model file loaded once: head, backbone, and how to run them."""
    head: torch.nn.Module
    backbone: torch.nn.Module
    meta: dict
    device: torch.device
    precision: str
    decoder: str


def load_predictor(model_path: str, device_name: str, decoder: str | None) -> Predictor:
    """The model file's head and backbone on the device, once for all the clips of a run (decoder None: the model's)."""
    if not Path(model_path).is_file():
        fail(f"no trained model at {model_path}: run 'make repro' (or 'dvc repro') first")
    from actionrec.backbone import inference_backbone
    from actionrec.device import cpu_has_native_bf16, resolve_device
    from actionrec.model import load_checkpoint
    from actionrec.video import unavailable_decoder

    device = resolve_device(device_name, key="--device")
    head, meta = load_checkpoint(model_path, device)
    if decoder and (problem := unavailable_decoder(decoder, key="--decoder")):
        fail(problem)
    # no --decoder: the features' decoder where it runs here; any other gives the same frames
    decoder = decoder or meta.get("decoder", "auto")
    decoder = "auto" if unavailable_decoder(decoder) else decoder
    check_weights(meta)
    # as the features were made, where this machine runs it well; else fp32, within rounding of fp16/bf16
    # made on a GPU or a bf16 CPU, and within int8's tolerance of OpenVINO's int8 (a CPU's)
    precision = meta["precision"]
    if (device.type == "cpu" and (precision == "fp16" or (precision == "bf16" and not cpu_has_native_bf16()))
            or (device.type == "cuda" and precision == "int8")):
        precision = "fp32"
    if precision == "int8":  # quantized again on the committed clips: the same backbone as the stage's
        from actionrec.quantize import check_calibration

        check_calibration(meta.get("calibration", {}))
    # compiling pays over thousands of frames, more than a predict.py run sees
    backbone = inference_backbone({**meta, "precision": precision, "compile": False}, device)
    return Predictor(head, backbone, meta, device, precision, decoder)


def classify(predictor: Predictor, inputs: torch.Tensor, top_k: int) -> list[dict]:
    """The top_k classes for one clip's model input, most likely first."""
    import torch

    from actionrec.backbone import embed
    from actionrec.model import lstm_inputs

    meta = predictor.meta
    features = embed(predictor.backbone, inputs, predictor.precision)
    with torch.no_grad():
        logits = predictor.head(lstm_inputs(features.numpy()[None], meta).to(predictor.device))
    probs = torch.softmax(logits[0], dim=0).cpu()
    top = torch.topk(probs, min(top_k, len(probs)))
    return [{"label": meta["class_names"][i], "confidence": round(float(p), 6)}
            for p, i in zip(top.values.tolist(), top.indices.tolist())]


def save_frames(inputs: torch.Tensor, indices: list[int], folder: Path) -> list[str]:
    """One PNG per model input frame, NN_frameIIIIII.png: its position in the input, its index in the video."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    width = max(2, len(str(len(indices) - 1)))  # names that sort: a video model's 16 clips of 16 are 256 frames
    names = [str(folder / f"{position:0{width}d}_frame{index:06d}.png") for position, index in enumerate(indices)]
    for frame, name in zip(inputs.reshape(-1, *inputs.shape[-3:]), names):
        Image.fromarray(frame.permute(1, 2, 0).contiguous().numpy()).save(name)
    return names


def predict_clip(predictor: Predictor, video: str, top_k: int, start: float | None = None,
                 end: float | None = None, frames_out: Path | None = None) -> dict:
    """label, confidence, top_k, decoder, warning and saved frames of a video or a window; else VideoError."""
    from actionrec.backbone import clip_inputs, preprocessing

    # uint8 frames or clips, exactly as the features stage makes them (embed normalises)
    clip, inputs = clip_inputs(video, predictor.meta["num_frames"], preprocessing(predictor.meta), predictor.decoder,
                               start, end, str(predictor.device))
    ranked = classify(predictor, inputs, top_k)
    result = {"label": ranked[0]["label"], "confidence": ranked[0]["confidence"], "top_k": ranked,
              "decoder": clip.decoder, "warning": clip.warning}
    if frames_out is not None:
        result["frames"] = save_frames(inputs, clip.indices, frames_out)
    return result


# Each predict_* returns what --json prints (its "warnings" go to stderr in text mode) and the text lines.

def predict_video(args: argparse.Namespace) -> tuple[dict, list[str]]:
    predictor = load_predictor(args.model, args.device, args.decoder)
    result = predict_clip(predictor, args.path, args.top_k, frames_out=args.frames_out)
    warning = result.pop("warning")
    warnings = [f"{args.path}: {warning}"] if warning else []
    out = {"video": args.path, **result, "warnings": warnings + model_warnings(predictor.meta)}
    ranked = [f"  {rank}. {item['label']:<24} {100 * item['confidence']:6.2f}%"
              for rank, item in enumerate(result["top_k"], 1)]
    return out, [f"Prediction: {result['label']}", f"Confidence: {100 * result['confidence']:.2f}%",
                 f"Top {len(result['top_k'])}:", *ranked]


def window_bounds(duration: float, window: float, stride: float, tolerance: float) -> list[tuple[float, float]]:
    """[0, window), [stride, stride + window), ..., and one ending at the end if over `tolerance` (a frame) is left."""
    if window >= duration - tolerance:
        return [(0.0, duration)]
    bounds = []
    while (start := len(bounds) * stride) + window <= duration + tolerance:
        bounds.append((start, min(start + window, duration)))
    if bounds[-1][1] < duration - tolerance:
        bounds.append((duration - window, duration))
    else:  # less than a frame left: the last window takes it
        bounds[-1] = (bounds[-1][0], duration)
    return [(round(a, 3), round(b, 3)) for a, b in bounds]


def predict_windows(args: argparse.Namespace) -> tuple[dict, list[str]]:
    """Each window from its own frames; one that cannot be decoded (a cut file) gets an error for a label."""
    from actionrec.video import probe

    predictor = load_predictor(args.model, args.device, args.decoder)
    info = probe(args.path)  # a duration only where the frame rate is known
    if not info["duration"]:
        raise VideoError("its duration is unknown, so it cannot be cut into windows")
    duration, frame_time = round(info["duration"], 3), 1 / info["fps"]
    notes, timeline, decoders = [], [], []
    if args.window >= duration - frame_time:
        notes.append(f"{args.path} is {duration:.2f} s long, not longer than --window {args.window:g}: "
                     "one window over the whole video")
    for n, (start, end) in enumerate(window_bounds(duration, args.window, args.stride, frame_time)):
        folder = args.frames_out / f"w{n:03d}_{start:.2f}-{end:.2f}s" if args.frames_out else None
        try:
            result = predict_clip(predictor, args.path, args.top_k, start, end, folder)
        except VideoError as error:
            timeline.append({"start": start, "end": end, "error": str(error)})
            continue
        decoders.append(result.pop("decoder"))
        warning = result.pop("warning")
        if warning and f"{args.path}: {warning}" not in notes:
            notes.append(f"{args.path}: {warning}")
        timeline.append({"start": start, "end": end, **result})
    if not decoders:
        raise VideoError(timeline[0]["error"])
    lines = [f"{args.path}: {duration:.2f} s, windows of {args.window:g} s every {args.stride:g} s"]
    for item in timeline:
        span = f"{item['start']:.2f}-{item['end']:.2f} s"
        said = (f"{item['label']:<24} {100 * item['confidence']:6.2f}%" if "label" in item
                else f"error: {item['error']}")
        lines.append(f"  {span:>15}  {said}")
    out = {"video": args.path, "duration": duration, "window": args.window, "stride": args.stride,
           "decoder": decoders[0], "timeline": timeline, "warnings": notes + model_warnings(predictor.meta)}
    return out, lines


def predict_folder(args: argparse.Namespace) -> tuple[dict, list[str]]:
    """One CSV row per entry under the folder, written as it goes (non-videos: `skipped: ...`); exit 2 if none reads."""
    from tqdm import tqdm

    from actionrec.folder import SKIP_REASONS, VIDEO_EXTENSIONS, is_video, videos_under

    folder, out = Path(args.path), Path(args.csv)
    if not out.parent.is_dir() or out.is_dir() or is_video(out.name):  # never write over a video
        fail(f"--csv {args.csv}: give a .csv file name in an existing folder")
    videos, skipped = videos_under(folder)
    if not videos:
        fail(f"no video under {folder} ({', '.join(VIDEO_EXTENSIONS)}, any case, at any depth)")
    predictor = load_predictor(args.model, args.device, args.decoder)
    rows = {rel: None for rel in videos}
    rows.update({rel: f"skipped: {SKIP_REASONS[reason]}" for reason, paths in skipped.items() for rel in paths})
    failed = 0
    with open(out, "w", newline="", encoding="utf-8") as handle, \
            tqdm(total=len(videos), desc="predict", unit="video", disable=None) as bar:
        writer = csv.DictWriter(handle, CSV_COLUMNS)
        writer.writeheader()
        for rel in sorted(rows):
            row = {"file": rel, "error": rows[rel]}
            if rows[rel] is None:
                try:
                    result = predict_clip(predictor, str(folder / rel), args.top_k)
                    row.update(label=result["label"], confidence=f"{result['confidence']:.6f}",
                               top_k=";".join(f"{i['label']}:{i['confidence']:.6f}" for i in result["top_k"]),
                               warning=result["warning"])
                except VideoError as error:  # rows written so far stay: a bug crashes after them
                    row["error"] = str(error)
                failed += bool(row["error"])
                bar.update()
            writer.writerow(row)
            handle.flush()  # rows already computed survive an interruption
    skipped_count = len(rows) - len(videos)
    if failed == len(videos):
        fail(f"none of the {len(videos)} videos under {folder} could be read: see the error column of {out}")
    if not args.json:
        print(f"classified {len(videos) - failed} of {len(videos)} videos under {folder} into {out}"
              + (f"; {failed} could not be read (the error column says why)" if failed else "")
              + (f"; {skipped_count} other files skipped" if skipped_count else ""), file=sys.stderr)
    return {"folder": str(folder), "csv": str(out), "videos": len(videos), "classified": len(videos) - failed,
            "failed": failed, "skipped": skipped_count, "warnings": model_warnings(predictor.meta)}, []


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="a video, or a folder of videos with --csv")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--model", help="default: the train stage's output in dvc.yaml (from the repository root)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    parser.add_argument("--decoder", choices=DECODERS, help="default: the one the model's features used")
    parser.add_argument("--csv", metavar="OUT.csv", help="classify every video under the folder PATH into this CSV")
    parser.add_argument("--window", type=float, metavar="SECONDS", help="classify each window of this length")
    parser.add_argument("--stride", type=float, metavar="SECONDS", help="between window starts (default: --window)")
    parser.add_argument("--frames-out", type=Path, metavar="DIR", help="save the frames the model sees as PNGs in DIR")
    parser.error = fail  # one line, exit 2, like every other user error
    args = parser.parse_args()
    args.model = args.model or paths("train")["model_file"]
    if args.top_k < 1:
        fail("--top-k must be at least 1")
    if args.window is not None and not args.window > 0:
        fail("--window must be more than 0 seconds")
    if args.stride is not None and (args.window is None or not args.stride > 0):
        fail("--stride needs --window and must be more than 0 seconds")
    args.stride = args.stride or args.window
    path = Path(args.path)
    if path.is_dir():
        if args.csv is None:
            fail(f"{args.path} is a directory; use --csv OUT.csv to classify every video in it")
        if args.window is not None or args.frames_out is not None:
            fail("--window and --frames-out work on one video, not a folder")
    elif args.csv is not None:
        fail(f"--csv classifies a folder, and {args.path} is not one: for one video use --json")
    elif not path.exists():
        fail(f"no such video: {args.path}")
    frames_out = args.frames_out  # new or empty, so that no frames of an earlier run are mixed in
    if frames_out and frames_out.exists() and (not frames_out.is_dir() or any(frames_out.iterdir())):
        fail(f"--frames-out {frames_out} exists and is not an empty folder: give a new or empty one")
    return args


def main() -> None:
    """One-line exit 2 for whatever the user can fix."""
    try:
        args = parse_args()
        out, lines = (predict_folder if args.csv is not None
                      else predict_windows if args.window is not None else predict_video)(args)
    except UserError as error:
        fail(str(error))
    except VideoError as error:
        fail(f"cannot read {args.path} as a video ({error})")
    if args.json:  # stdout's one object holds the warnings, and stderr stays quiet
        print(json.dumps(out))
        return
    for line in lines:
        print(line)
    for line in out["warnings"]:
        print(f"warning: {line}", file=sys.stderr)


if __name__ == "__main__":
    main()
