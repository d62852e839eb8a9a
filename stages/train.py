"""Stage train: a temporal head (train.head) over the frame features -> models/lstm.pt,
dvclive per-epoch logs, metrics/train.json."""
import json
from pathlib import Path

import pandas as pd
import torch
from dvclive import Live

from actionrec.dataset import feature_info, load_split
from actionrec.device import resolve_device
from actionrec.model import HEAD_KEYS, build_model, feature_stats, prepare, uses_centering
from actionrec.params import load_params, run_stage
from actionrec.training import fit

# what predict.py needs to make features exactly as the features stage made them
FEATURE_META = ("num_frames", "backbone", "weights", "weights_sha256", "precision", "resize", "crop",
                "interpolation", "preprocessing", "seed", "calibration")


def main() -> None:
    params = load_params("data", "features", "train")
    cfg, data = params["train"], params["data"]
    device = resolve_device(params["features"]["device"])
    torch.use_deterministic_algorithms(True)
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    info = feature_info()
    train_feats, train_rows, _ = load_split("train")
    val_feats, val_rows, _ = load_split("val")
    y_train, y_val = (torch.tensor(rows["label"].to_numpy()) for rows in (train_rows, val_rows))
    # keep_default_na=False: a class folder named e.g. NA or None stays a name, not a NaN
    class_names = (pd.read_csv("data/metadata.csv", keep_default_na=False).drop_duplicates("label")
                   .sort_values("label")["class_name"].tolist())

    mean, std = feature_stats(train_feats)
    if cfg["temporal_centering"] == "auto":  # on for the synthetic demo (random backbone, scene
        cfg["temporal_centering"] = data["source"] == "synthetic"  # look random per group) only
    center = uses_centering(cfg)
    mean_t, std_t = torch.from_numpy(mean).to(device), torch.from_numpy(std).to(device)
    meta = {"class_names": class_names, "feature_dim": int(train_feats.shape[2]),
            "head": cfg["head"], "dropout": cfg["dropout"], **{k: cfg[k] for k in HEAD_KEYS[cfg["head"]]},
            # what was applied: the mean head never centres (a centred clip averages to zero)
            "temporal_centering": center, **{k: info[k] for k in FEATURE_META if k in info},
            "sampling": "segment_centres",
            "data_source": data["source"],  # predict.py warns when the model is the synthetic demo's
            "feature_mean": torch.from_numpy(mean), "feature_std": torch.from_numpy(std)}
    torch.manual_seed(cfg["seed"])
    model = build_model(meta)
    with Live("plots/train", dvcyaml=None, save_dvc_exp=False, report=None) as live:
        result = fit(model, torch.from_numpy(train_feats), y_train, torch.from_numpy(val_feats), y_val,
                     cfg, device, live, transform=lambda batch: prepare(batch, mean_t, std_t, center), progress=True)
    print(f"{cfg['head']}: best epoch {result['best_epoch']} of {result['epochs_run']}: "
          f"val loss {result['best_val_loss']:.4f}, val accuracy {result['best_val_accuracy']:.3f}")

    Path("models").mkdir(exist_ok=True)
    tmp = Path("models/lstm.pt.tmp")
    torch.save({"state_dict": result["state_dict"], "meta": meta}, tmp)
    tmp.replace("models/lstm.pt")
    summary = {"best_epoch": result["best_epoch"], "epochs_run": result["epochs_run"],
               "best_val_loss": round(result["best_val_loss"], 6),
               "best_val_accuracy": round(result["best_val_accuracy"], 6)}
    Path("metrics").mkdir(exist_ok=True)
    Path("metrics/train.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    run_stage(main)
