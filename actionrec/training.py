"""The training loop. Features stay float16, standardised a mini-batch at a time; a split over RESIDENT_BYTES
is read from the shards a mini-batch at a time, in the same order: flat memory, the same result."""
from __future__ import annotations

import os
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from actionrec.errors import UserError

# cuBLAS needs this for use_deterministic_algorithms on CUDA; must be set before its first use
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

Transform = Callable[[torch.Tensor], torch.Tensor]
RESIDENT_BYTES = 2 * 2**30  # a split up to this size is moved to the device whole


def resident(x, device: torch.device):
    """x (a tensor, an array or Features) as a tensor on the device when it fits, else as is."""
    if torch.is_tensor(x):
        return x.to(device)
    return torch.from_numpy(np.asarray(x)).to(device) if x.nbytes <= RESIDENT_BYTES else x


def take(x, index: torch.Tensor | slice, device: torch.device) -> torch.Tensor:
    """Rows of x (from resident()) on the device: x[index]."""
    if torch.is_tensor(x):
        return x[index.to(x.device) if torch.is_tensor(index) else index]
    return torch.from_numpy(x[index.cpu().numpy() if torch.is_tensor(index) else index]).to(device)


def predict_logits(model: nn.Module, x: torch.Tensor, transform: Transform | None = None,
                   batch_size: int = 256, device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """Logits [N, C] (on the CPU) for all of x (from resident()), a batch at a time, in eval mode."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            batch = take(x, slice(start, start + batch_size), device).to(device)
            out.append(model(transform(batch) if transform else batch.float()).float().cpu())
    return torch.cat(out)


def fit(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor,
        y_val: torch.Tensor, cfg: dict, device: torch.device = torch.device("cpu"), live=None,
        transform: Transform | None = None, progress: bool = False) -> dict:
    """Adam, ReduceLROnPlateau, early stopping on the validation loss; leaves the best weights in model. The
    train loss and accuracy logged are the running figures of the epoch's mini-batches."""
    torch.manual_seed(cfg["seed"])
    model.to(device)
    x_train, x_val = resident(x_train, device), resident(x_val, device)
    y_train, y_val = y_train.to(device), y_val.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=cfg["lr_factor"],
                                                           patience=cfg["lr_patience"])
    generator = torch.Generator().manual_seed(cfg["seed"])
    best = {"val_loss": float("inf"), "epoch": -1}
    transform = transform or (lambda batch: batch.float())
    for epoch in tqdm(range(cfg["max_epochs"]), desc="train", unit="epoch", leave=False, disable=not progress):
        model.train()
        loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device)
        for batch in torch.randperm(len(x_train), generator=generator).split(cfg["batch_size"]):
            batch = batch.to(device)
            target = y_train[batch]
            logits = model(transform(take(x_train, batch, device)))
            loss = nn.functional.cross_entropy(logits, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            # accumulated on the device: no host sync per step
            loss_sum += loss.detach() * len(batch)
            correct += (logits.detach().argmax(1) == target).sum()
        train_loss, train_acc = loss_sum.item() / len(x_train), correct.item() / len(x_train)
        val_logits = predict_logits(model, x_val, transform, device=device)
        val_loss = nn.functional.cross_entropy(val_logits, y_val.cpu()).item()
        val_acc = (val_logits.argmax(1) == y_val.cpu()).float().mean().item()
        scheduler.step(val_loss)
        if live is not None:
            for name, value in (("train/loss", train_loss), ("train/accuracy", train_acc),
                                ("val/loss", val_loss), ("val/accuracy", val_acc),
                                ("lr", optimizer.param_groups[0]["lr"])):
                live.log_metric(name, round(value, 6))
            live.next_step()
        if val_loss < best["val_loss"]:
            best = {"val_loss": val_loss, "val_accuracy": val_acc, "epoch": epoch,
                    "state_dict": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}}
        elif epoch - best["epoch"] >= cfg["patience"]:
            break
    if "state_dict" not in best:
        raise UserError(f"the validation loss was never finite in {epoch + 1} epochs (the run diverged): "
                        "lower train.lr")
    model.load_state_dict(best["state_dict"])
    return {"best_epoch": best["epoch"], "epochs_run": epoch + 1, "best_val_loss": best["val_loss"],
            "best_val_accuracy": best["val_accuracy"], "state_dict": best["state_dict"]}
