"""Stage train: LSTM over the frame features -> models/lstm.pt, dvclive per-epoch logs."""
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from dvclive import Live
from torch import nn

from actionrec.dataset import feature_info, load_split
from actionrec.device import resolve_device
from actionrec.model import LSTMClassifier, feature_stats, standardize
from actionrec.params import load_params, run_stage

# what predict.py needs to make features exactly as the features stage made them
FEATURE_META = ("num_frames", "backbone", "weights", "weights_sha256", "precision", "resize", "crop",
                "decoder", "seed", "feature_dim")


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = model(x)
    return nn.functional.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def main() -> None:
    params = load_params("data", "features", "train")
    cfg, data = params["train"], params["data"]
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    device = resolve_device(params["features"]["device"])
    torch.manual_seed(cfg["seed"])
    torch.use_deterministic_algorithms(True)
    info = feature_info()
    train_feats, train_rows, _ = load_split("train")
    val_feats, val_rows, _ = load_split("val")
    y_train, y_val = (torch.tensor(rows["label"].to_numpy()) for rows in (train_rows, val_rows))
    mean, std = feature_stats(train_feats)
    # auto: on for the synthetic demo (random backbone, scene look random per group), off on real videos
    center = data["source"] == "synthetic" if cfg["temporal_centering"] == "auto" else cfg["temporal_centering"]
    x_train, x_val = standardize(train_feats, mean, std, center), standardize(val_feats, mean, std, center)
    # keep_default_na=False: a class folder named e.g. NA or None stays a name, not a NaN
    class_names = (pd.read_csv("data/metadata.csv", keep_default_na=False).drop_duplicates("label")
                   .sort_values("label")["class_name"].tolist())

    model = LSTMClassifier(x_train.shape[2], len(class_names), cfg["hidden_size"], cfg["num_layers"],
                           cfg["dropout"], cfg["bidirectional"]).to(device)
    x_train, y_train, x_val, y_val = (t.to(device) for t in (x_train, y_train, x_val, y_val))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=cfg["lr_factor"],
                                                           patience=cfg["lr_patience"])
    generator = torch.Generator().manual_seed(cfg["seed"])  # on the CPU: same batches on any device
    best = {"val_loss": float("inf")}
    with Live("plots/train", dvcyaml=None, save_dvc_exp=False, report=None) as live:
        for epoch in range(cfg["max_epochs"]):
            model.train()
            for batch in torch.randperm(len(x_train), generator=generator).to(device).split(cfg["batch_size"]):
                loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            train_loss, train_acc = evaluate(model, x_train, y_train)
            val_loss, val_acc = evaluate(model, x_val, y_val)
            scheduler.step(val_loss)
            for name, value in (("train/loss", train_loss), ("train/accuracy", train_acc),
                                ("val/loss", val_loss), ("val/accuracy", val_acc),
                                ("lr", optimizer.param_groups[0]["lr"])):
                live.log_metric(name, round(value, 6))
            live.next_step()
            if val_loss < best["val_loss"]:
                best = {"val_loss": val_loss, "val_accuracy": val_acc, "epoch": epoch,
                        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
            elif epoch - best["epoch"] >= cfg["patience"]:
                break
    print(f"best epoch {best['epoch']}: val loss {best['val_loss']:.4f}, val accuracy {best['val_accuracy']:.3f}")

    meta = {"class_names": class_names, "feature_dim": int(x_train.shape[2]),
            **{k: cfg[k] for k in ("hidden_size", "num_layers", "dropout", "bidirectional")},
            "temporal_centering": center, **{k: info[k] for k in FEATURE_META},
            "sampling": "segment_centres", "normalize": "imagenet",
            "feature_mean": torch.from_numpy(mean), "feature_std": torch.from_numpy(std)}
    Path("models").mkdir(exist_ok=True)
    tmp = Path("models/lstm.pt.tmp")
    torch.save({"state_dict": best["state_dict"], "meta": meta}, tmp)
    tmp.replace("models/lstm.pt")
    summary = {"best_epoch": best["epoch"], "epochs_run": epoch + 1,
               "best_val_loss": round(best["val_loss"], 6), "best_val_accuracy": round(best["val_accuracy"], 6)}
    Path("metrics").mkdir(exist_ok=True)
    Path("metrics/train.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    run_stage(main)
