"""Stage train: a temporal head over FEATURES of SPLITS -> MODEL (all predict.py needs), dvclive's curves under
LIVE, METRICS. METADATA names the classes."""
import json
from pathlib import Path

import torch
from dvclive import Live

from actionrec.dataset import load_split
from actionrec.device import resolve_device
from actionrec.errors import run_stage
from actionrec.model import build_model, feature_stats, prepare, uses_centering
from actionrec.params import HEADS, load_params
from actionrec.pipeline import read_csv
from actionrec.portable import use_portable_kernels
from actionrec.training import fit


def main(features: str, splits: str, metadata: str, model_file: str, live_dir: str, metrics: str) -> None:
    use_portable_kernels()  # the same bits on every x86-64 CPU, before the first kernel
    params = load_params("data", "train", "runtime")
    cfg, data, runtime = params["train"], params["data"], params["runtime"]
    device = resolve_device(runtime["device"])
    torch.use_deterministic_algorithms(True)
    if runtime["train_threads"]:
        torch.set_num_threads(runtime["train_threads"])
    features, splits = Path(features), Path(splits)
    info = json.loads((features / "info.json").read_text())  # what made the features
    train_feats, train_rows, _ = load_split("train", features, splits)
    val_feats, val_rows, _ = load_split("val", features, splits)
    y_train, y_val = (torch.tensor(rows["label"].to_numpy()) for rows in (train_rows, val_rows))
    class_names = (read_csv(metadata).drop_duplicates("label")
                   .sort_values("label")["class_name"].tolist())

    mean, std = feature_stats(train_feats)
    if cfg["temporal_centering"] == "auto":  # on for the synthetic demo (random backbone, scene
        cfg["temporal_centering"] = data["source"] == "synthetic"  # look random per group) only
    center = uses_centering(cfg)
    mean_t, std_t = torch.from_numpy(mean).to(device), torch.from_numpy(std).to(device)
    meta = {"class_names": class_names, "feature_dim": int(train_feats.shape[2]),
            "head": cfg["head"], "dropout": cfg["dropout"], **{k: cfg[k] for k in HEADS[cfg["head"]]},
            # what was applied: the mean head never centres (a centred clip averages to zero)
            "temporal_centering": center,
            **info,  # what made the features (info.json): predict.py makes them again exactly so
            "sampling": "segment_centres",
            "data_source": data["source"],  # predict.py warns when the model is the synthetic demo's
            "feature_mean": torch.from_numpy(mean), "feature_std": torch.from_numpy(std)}
    torch.manual_seed(cfg["seed"])
    model = build_model(meta)
    with Live(live_dir, dvcyaml=None, save_dvc_exp=False, report=None) as live:
        result = fit(model, train_feats, y_train, val_feats, y_val,
                     cfg, device, live, transform=lambda batch: prepare(batch, mean_t, std_t, center), progress=True)
    print(f"{cfg['head']}: best epoch {result['best_epoch']} of {result['epochs_run']}: "
          f"val loss {result['best_val_loss']:.4f}, val accuracy {result['best_val_accuracy']:.3f}")

    tmp = Path(model_file + ".tmp")
    torch.save({"state_dict": result["state_dict"], "meta": meta}, tmp)
    tmp.replace(model_file)
    summary = {"best_epoch": result["best_epoch"], "epochs_run": result["epochs_run"],
               "best_val_loss": round(result["best_val_loss"], 6),
               "best_val_accuracy": round(result["best_val_accuracy"], 6)}
    Path(metrics).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    run_stage(main)
