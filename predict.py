"""Classify one video with the trained model: python predict.py VIDEO [--top-k K] [--json]

Everything it needs (class names, frames, backbone, weights, preprocessing, feature
normalisation) comes from the model file that `dvc repro` wrote; nothing is guessed."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_weights(meta: dict) -> None:
    """The backbone weights must be the very file the features were made with."""
    from actionrec.backbone import weights_file
    from actionrec.download import sha256_of

    path = weights_file(meta["weights"], meta["backbone"])
    if path is None or not meta.get("weights_sha256"):
        return
    if not path.is_file():
        fail(f"the backbone weights {meta['weights']} are not at {path}: put the file the model was "
             "trained with there (see README)")
    if sha256_of(path) != meta["weights_sha256"]:
        fail(f"{path} is not the weights file the model was trained with (SHA-256 differs): restore "
             "that file, or re-run 'dvc repro' to retrain on the new one")


def predict(video: str, model_path: str, top_k: int, device_name: str = "auto") -> dict:
    import torch

    from actionrec.backbone import embed, inference_backbone, resize_crop
    from actionrec.device import cpu_has_native_bf16, resolve_device
    from actionrec.model import load_checkpoint, lstm_inputs
    from actionrec.params import ParamsError, UserError
    from actionrec.video import VideoError, read_frames

    if not Path(model_path).is_file():
        fail(f"no trained model at {model_path}: run 'make repro' (or 'dvc repro') first")
    if not Path(video).is_file():
        fail(f"no such video: {video}")
    try:
        device = resolve_device(device_name, key="--device")
    except ParamsError as error:
        fail(str(error))
    model, meta = load_checkpoint(model_path, device)
    check_weights(meta)
    try:
        frames = read_frames(video, meta["num_frames"], meta.get("decoder", "auto"))
    except VideoError as error:
        fail(f"cannot read {video} as a video ({error})")
    precision = meta["precision"]  # as the features were made, where this machine can run it well
    if device.type == "cpu" and (precision == "fp16" or (precision == "bf16" and not cpu_has_native_bf16())):
        precision = "fp32"  # made on a GPU or a bf16 CPU: fp32 here gives the same features within rounding
    try:  # compiling pays over many videos, not one
        backbone = inference_backbone({**meta, "precision": precision, "compile": False}, device)
    except UserError as error:  # e.g. named weights that cannot be downloaded
        fail(str(error))
    features = embed(backbone, resize_crop(frames, backbone.preprocessing), precision)
    with torch.no_grad():
        probs = torch.softmax(model(lstm_inputs(features.numpy()[None], meta).to(device))[0], dim=0).cpu()
    top = torch.topk(probs, min(top_k, len(probs)))
    ranked = [{"label": meta["class_names"][i], "confidence": round(float(p), 6)}
              for p, i in zip(top.values.tolist(), top.indices.tolist())]
    return {"video": video, "label": ranked[0]["label"], "confidence": ranked[0]["confidence"],
            "top_k": ranked}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--model", default="models/lstm.pt")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    args = parser.parse_args()
    if args.top_k < 1:
        fail("--top-k must be at least 1")
    result = predict(args.video, args.model, args.top_k, args.device)
    if args.json:
        print(json.dumps(result))
        return
    print(f"Prediction: {result['label']}")
    print(f"Confidence: {100 * result['confidence']:.2f}%")
    print(f"Top {len(result['top_k'])}:")
    for rank, item in enumerate(result["top_k"], 1):
        print(f"  {rank}. {item['label']:<24} {100 * item['confidence']:6.2f}%")


if __name__ == "__main__":
    main()
