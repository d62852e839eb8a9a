"""The temporal classifier (LSTM over frame features) and the order-blind baseline."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


class LSTMClassifier(nn.Module):
    """[B, T, D] standardised frame features -> [B, C] logits from the last hidden state."""

    def __init__(self, input_dim: int, num_classes: int, hidden_size: int = 256,
                 num_layers: int = 1, dropout: float = 0.3, bidirectional: bool = False):
        super().__init__()
        self.input_dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(input_dim, hidden_size, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional)
        self.head = nn.Sequential(nn.Dropout(dropout),
                                  nn.Linear(hidden_size * (2 if bidirectional else 1), num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(self.input_dropout(x))
        # hidden: [layers * directions, B, H]; the last layer's state(s) summarise the clip
        last = hidden[-2:] if self.lstm.bidirectional else hidden[-1:]
        return self.head(torch.cat(list(last), dim=1))


def standardize(features: np.ndarray, mean: np.ndarray, std: np.ndarray,
                center_clips: bool = False) -> torch.Tensor:
    """float16 [N, T, D] -> float32 tensor, per-dimension standardised with train statistics.

    center_clips subtracts each clip's own mean vector: what is left is how the frames
    change over time, without the scene's look. That is the signal on the demo data, whose
    appearance is random per group, and on random-weight features; with ImageNet features on
    real UCF-101 the look is most of the signal, so leave it off there."""
    z = (features.astype(np.float32) - mean) / std
    if center_clips:
        z = z - z.mean(axis=1, keepdims=True)
    return torch.from_numpy(z)


def lstm_inputs(features: np.ndarray, meta: dict) -> torch.Tensor:
    """Backbone features [N, T, D] -> the LSTM's input, prepared exactly as train did it
    (train statistics and centring from the model file's meta)."""
    return standardize(features, meta["feature_mean"].numpy(), meta["feature_std"].numpy(),
                       meta["temporal_centering"])


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std over all train frames (std floored: dead units stay 0)."""
    flat = features.reshape(-1, features.shape[-1]).astype(np.float64)
    mean, std = flat.mean(0), flat.std(0)
    return mean.astype(np.float32), np.maximum(std, 1e-6 * max(std.max(), 1e-12)).astype(np.float32)


def build_model(meta: dict) -> LSTMClassifier:
    """The classifier described by a model file's meta."""
    return LSTMClassifier(meta["feature_dim"], len(meta["class_names"]), meta["hidden_size"],
                          meta["num_layers"], meta["dropout"], meta["bidirectional"])


def load_checkpoint(path: str, device: torch.device = torch.device("cpu")) -> tuple[LSTMClassifier, dict]:
    """(model in eval mode on device, meta) from models/lstm.pt, loaded with weights_only=True
    onto the CPU first, so a file written on a GPU machine loads anywhere."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(checkpoint["meta"])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval().to(device), checkpoint["meta"]
