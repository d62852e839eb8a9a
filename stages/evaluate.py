"""Stage evaluate: MODEL vs an order-blind baseline on SPLITS/test.csv -> METRICS, CONFUSION, PER_CLASS."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from threadpoolctl import threadpool_limits

from actionrec.dataset import load_split
from actionrec.device import resolve_device
from actionrec.model import load_checkpoint, prepare
from actionrec.errors import run_stage
from actionrec.params import load_params
from actionrec.portable import use_portable_kernels
from actionrec.training import predict_logits, resident


def clip_means(features: np.ndarray, mean: np.ndarray, std: np.ndarray, chunk: int = 256) -> np.ndarray:
    """[N, T, D] float16 -> [N, D] standardised clip means (standardising commutes with the mean), by chunks."""
    means = np.concatenate([features[i:i + chunk].astype(np.float32).mean(1)
                            for i in range(0, len(features), chunk)])
    return (means - mean) / std


def scores(prefix: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    return {f"{prefix}test_accuracy": round(accuracy_score(y_true, y_pred), 6),
            f"{prefix}test_macro_f1": round(f1_score(y_true, y_pred, average="macro", zero_division=0), 6)}


def main(features: str, splits: str, model_file: str, metrics_file: str, confusion: str, per_class_csv: str) -> None:
    use_portable_kernels()  # the same bits on every x86-64 CPU, before the first kernel
    params = load_params("evaluate", "runtime")
    cfg, device = params["evaluate"], resolve_device(params["runtime"]["device"])
    features, splits = Path(features), Path(splits)
    model, meta = load_checkpoint(model_file, device)
    mean, std = meta["feature_mean"].numpy(), meta["feature_std"].numpy()
    names = np.array(meta["class_names"])
    train_feats, train_rows, _ = load_split("train", features, splits)
    test_feats, test_rows, test_failed = load_split("test", features, splits)
    y_train, y_test = train_rows["label"].to_numpy(), test_rows["label"].to_numpy()
    mean_t, std_t = meta["feature_mean"].to(device), meta["feature_std"].to(device)
    logits = predict_logits(model, resident(test_feats, device), device=device,  # a batch at a time
                            transform=lambda b: prepare(b, mean_t, std_t, meta["temporal_centering"]))
    lstm_pred = logits.argmax(1).numpy()
    # the order-blind baseline: a linear classifier on the plain (uncentred) clip means
    baseline = LogisticRegression(C=cfg["baseline_c"], max_iter=3000)
    with threadpool_limits(limits=1):  # lbfgs on the demo: 0.9 s with one BLAS thread, 22 s with two on shared cores
        baseline.fit(clip_means(train_feats, mean, std), y_train)
        baseline_pred = baseline.predict(clip_means(test_feats, mean, std))

    metrics = {**scores("", y_test, lstm_pred), **scores("baseline_", y_test, baseline_pred),
               # the accuracies are over the test videos that could be decoded; the others are counted
               "test_videos": int(len(y_test)), "test_videos_not_decoded": test_failed}
    metrics["temporal_gain_test_accuracy"] = round(metrics["test_accuracy"] - metrics["baseline_test_accuracy"], 6)
    Path(metrics_file).write_text(json.dumps(metrics, indent=2) + "\n")

    pd.DataFrame({"actual": names[y_test], "predicted": names[lstm_pred]}).to_csv(confusion, index=False)
    per_class = pd.DataFrame({"class_name": names[y_test], "accuracy": lstm_pred == y_test,
                              "baseline_accuracy": baseline_pred == y_test})
    per_class.groupby("class_name", sort=True).mean().round(4).reset_index().to_csv(per_class_csv, index=False)
    print(json.dumps(metrics))


if __name__ == "__main__":
    run_stage(main)
