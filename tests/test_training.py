"""actionrec.training.fit on small real problems: it learns, is deterministic, stops early,
logs per epoch through dvclive."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from dvclive import Live

from actionrec import training
from actionrec.dataset import Features, read_index, write_features
from actionrec.model import build_model, prepare
from actionrec.training import fit, predict_logits

CFG = {"lr": 0.01, "weight_decay": 0.0, "batch_size": 16, "max_epochs": 40, "patience": 40,
       "lr_factor": 0.5, "lr_patience": 5, "seed": 0}
TRAIN = {"proj_dim": 8, "hidden_size": 16, "num_layers": 1, "bidirectional": False,
         "transformer_layers": 1, "transformer_heads": 2, "dropout": 0.0}


def direction_task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: a ramp that rises over the frames, class 1: the same ramp falling. Every clip
    has the same frame average, so only the order tells them apart. Stored float16."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    ramp = torch.linspace(-1, 1, 6)[None, :, None] * torch.randn(n, 1, 4, generator=g).abs()
    x = torch.where(y[:, None, None] == 0, ramp, ramp.flip(1)) + 0.1 * torch.randn(n, 6, 4, generator=g)
    return x.half(), y


def model_for(head: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model({**TRAIN, "head": head, "feature_dim": 4, "num_frames": 6, "class_names": ["up", "down"]})


def test_order_aware_heads_learn_the_order_and_mean_cannot():
    (xt, yt), (xv, yv) = direction_task(96, 0), direction_task(48, 1)
    for head in ("lstm", "gru", "transformer", "mean"):
        result = fit(model_for(head), xt, yt, xv, yv, {**CFG, "lr": 0.02, "batch_size": 32, "max_epochs": 15})
        if head == "mean":
            assert result["best_val_accuracy"] < 0.75
        else:
            assert result["best_val_accuracy"] >= 0.95, head


def test_fit_is_deterministic_and_keeps_the_best_epoch():
    (xt, yt), (xv, yv) = direction_task(64, 0), direction_task(32, 1)
    cfg = {**CFG, "max_epochs": 6}
    mean, std = torch.zeros(4), torch.ones(4)
    runs = []
    for _ in range(2):
        model = model_for("lstm")
        runs.append((model, fit(model, xt, yt, xv, yv, cfg, transform=lambda b: prepare(b, mean, std))))
    (model, first), (_, second) = runs
    assert {k: v for k, v in first.items() if k != "state_dict"} == {k: v for k, v in second.items() if k != "state_dict"}
    assert all(torch.equal(first["state_dict"][k], second["state_dict"][k]) for k in first["state_dict"])
    # the model holds the best epoch's weights: its val loss is the reported best
    logits = predict_logits(model, xv, lambda b: prepare(b, mean, std))
    assert abs(torch.nn.functional.cross_entropy(logits, yv).item() - first["best_val_loss"]) < 1e-5


def test_a_split_read_a_batch_at_a_time_trains_exactly_as_one_on_the_device(tmp_path, monkeypatch):
    """Above RESIDENT_BYTES, fit reads each mini-batch from the shards: same batches, same weights."""
    (xt, yt), (xv, yv) = direction_task(64, 0), direction_task(32, 1)
    videos = [f"C{i % 3}/v{i:02d}.avi" for i in range(96)]  # rows spread over three shards
    write_features(tmp_path, pd.DataFrame({"video": videos}), lambda i: torch.cat([xt, xv])[i].numpy())
    index = read_index(tmp_path).set_index("video").loc[videos]  # where video i is
    on_disk = {name: Features(tmp_path, index["shard"].to_numpy()[rows], index["row"].to_numpy()[rows])
               for name, rows in (("train", slice(0, 64)), ("val", slice(64, 96)))}
    assert np.array_equal(on_disk["train"][:], xt.numpy()) and np.array_equal(on_disk["val"][::-1], xv.numpy()[::-1])
    cfg = {**CFG, "max_epochs": 4}
    whole = fit(model_for("gru"), xt, yt, xv, yv, cfg)
    monkeypatch.setattr(training, "RESIDENT_BYTES", 0)
    streamed = fit(model_for("gru"), on_disk["train"], yt, on_disk["val"], yv, cfg)
    assert whole["best_val_loss"] == streamed["best_val_loss"]
    assert all(torch.equal(whole["state_dict"][k], streamed["state_dict"][k]) for k in whole["state_dict"])


def test_early_stopping_cuts_epochs_on_unlearnable_labels():
    g = torch.Generator().manual_seed(0)
    xt, xv = torch.randn(64, 6, 4, generator=g).half(), torch.randn(32, 6, 4, generator=g).half()
    yt, yv = torch.randint(0, 2, (64,), generator=g), torch.randint(0, 2, (32,), generator=g)
    result = fit(model_for("gru"), xt, yt, xv, yv, {**CFG, "max_epochs": 100, "patience": 3})
    assert result["epochs_run"] == result["best_epoch"] + 4 < 100


def test_logs_running_train_and_val_figures_per_epoch(tmp_path):
    (xt, yt), (xv, yv) = direction_task(64, 0), direction_task(32, 1)
    with Live(str(tmp_path / "live"), dvcyaml=None, save_dvc_exp=False, report=None) as live:
        result = fit(model_for("lstm"), xt, yt, xv, yv, {**CFG, "max_epochs": 5}, live=live)
    plots = tmp_path / "live/plots/metrics"
    for name in ("train/loss", "train/accuracy", "val/loss", "val/accuracy", "lr"):
        table = pd.read_csv(plots / f"{name}.tsv", sep="\t")
        assert list(table["step"]) == list(range(result["epochs_run"])), name
    val_loss = pd.read_csv(plots / "val/loss.tsv", sep="\t")["loss"]
    assert abs(val_loss.min() - result["best_val_loss"]) < 1e-5
    accuracy = pd.read_csv(plots / "train/accuracy.tsv", sep="\t")["accuracy"]
    assert ((accuracy >= 0) & (accuracy <= 1)).all() and accuracy.iloc[-1] > accuracy.iloc[0]
