"""The temporal heads over frame features (lstm, gru, transformer, mean), their input, the model file."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from actionrec.params import HEADS  # each head, with the train.* keys its build_model reads


class RecurrentClassifier(nn.Module):
    """[B, T, D] standardised frame features -> [B, C] logits from the last hidden state of an LSTM or GRU."""

    def __init__(self, input_dim: int, num_classes: int, cell: str = "lstm", hidden_size: int = 256,
                 num_layers: int = 1, dropout: float = 0.3, bidirectional: bool = False,
                 proj_dim: int = 0):
        super().__init__()
        # projecting first (proj_dim > 0) makes the recurrent layer's input matmul proj_dim x 4H, not 2048 x 4H
        self.proj = nn.Linear(input_dim, proj_dim) if proj_dim > 0 else nn.Identity()
        # dropout after the projection: a mask for every 2048-d input cost more than the LSTM step (bench/train.py)
        self.input_dropout = nn.Dropout(dropout)
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn(proj_dim if proj_dim > 0 else input_dim, hidden_size, num_layers, batch_first=True,
                       dropout=dropout if num_layers > 1 else 0.0, bidirectional=bidirectional)
        self.head = nn.Sequential(nn.Dropout(dropout),
                                  nn.Linear(hidden_size * (2 if bidirectional else 1), num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, hidden = self.rnn(self.input_dropout(self.proj(x)))
        if isinstance(hidden, tuple):  # LSTM: (h, c)
            hidden = hidden[0]
        # hidden: [layers * directions, B, H]; the last layer's state(s) summarise the clip
        last = hidden[-2:] if self.rnn.bidirectional else hidden[-1:]
        return self.head(torch.cat(list(last), dim=1))


class TransformerClassifier(nn.Module):
    """Projection, learned frame positions (what makes it see the order), pre-norm encoder, mean, linear."""

    def __init__(self, input_dim: int, num_classes: int, num_frames: int, proj_dim: int = 128,
                 num_layers: int = 1, num_heads: int = 4, dropout: float = 0.3):
        super().__init__()
        self.proj = nn.Linear(input_dim, proj_dim)
        self.input_dropout = nn.Dropout(dropout)
        self.position = nn.Parameter(torch.zeros(1, num_frames, proj_dim))
        # the scale of the projected features: order is visible from the start (0.02 stalled on the demo)
        nn.init.normal_(self.position, std=1.0)
        layer = nn.TransformerEncoderLayer(proj_dim, num_heads, 2 * proj_dim, dropout, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(proj_dim)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(proj_dim, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.input_dropout(self.proj(x)) + self.position[:, : x.shape[1]]
        return self.head(self.norm(self.encoder(z).mean(1)))


class MeanClassifier(nn.Module):
    """Order-blind: the average of the frame features, then one linear layer."""

    def __init__(self, input_dim: int, num_classes: int, dropout: float = 0.3):
        super().__init__()
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(input_dim, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean(1))


def build_model(meta: dict) -> nn.Module:
    """The classifier described by a model file's meta (or by train.* params plus
    feature_dim, num_frames and class_names). Model files from before `head` are LSTMs."""
    head, dim, classes = meta.get("head", "lstm"), meta["feature_dim"], len(meta["class_names"])
    if head in ("lstm", "gru"):
        return RecurrentClassifier(dim, classes, head, meta["hidden_size"], meta["num_layers"],
                                   meta["dropout"], meta["bidirectional"], meta.get("proj_dim", 0))
    if head == "transformer":
        return TransformerClassifier(dim, classes, meta["num_frames"], meta["proj_dim"],
                                     meta["transformer_layers"], meta["transformer_heads"], meta["dropout"])
    if head == "mean":
        return MeanClassifier(dim, classes, meta["dropout"])
    raise ValueError(f"unknown head {head!r}: expected one of {', '.join(HEADS)}")


def uses_centering(cfg: dict) -> bool:
    """Clip centring leaves the mean head nothing: every centred clip averages to zero (cfg's value resolved)."""
    return cfg["temporal_centering"] and cfg.get("head", "lstm") != "mean"


def prepare(features: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
            center_clips: bool = False) -> torch.Tensor:
    """float16 [B, T, D] -> float32 standardised, a batch at a time. center_clips subtracts each clip's mean,
    leaving how frames change, not the look: the demo's signal (look random per group), not real UCF-101's."""
    x = features.float()
    # centring commutes with the per-dimension scaling, so centre first and skip the shift
    shift = x.mean(dim=1, keepdim=True) if center_clips else mean
    return (x - shift) / std


def lstm_inputs(features: np.ndarray, meta: dict) -> torch.Tensor:
    """Backbone features [N, T, D] -> the head's input, as train prepared it (statistics from the meta)."""
    return prepare(torch.from_numpy(np.asarray(features)), meta["feature_mean"], meta["feature_std"],
                   meta["temporal_centering"])


def feature_stats(features: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std over all frames (std floored: dead units stay 0), in float64 by chunks."""
    total = np.zeros(features.shape[-1])
    squares = np.zeros(features.shape[-1])
    for start in range(0, len(features), chunk):
        flat = np.asarray(features[start:start + chunk], dtype=np.float64).reshape(-1, features.shape[-1])
        total += flat.sum(0)
        squares += np.square(flat).sum(0)
    count = max(1, len(features) * int(np.prod(features.shape[1:-1])))
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean ** 2, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-6 * max(std.max(), 1e-12)).astype(np.float32)


def load_checkpoint(path: str, device: torch.device = torch.device("cpu")) -> tuple[nn.Module, dict]:
    """(model in eval mode on device, meta), loaded onto the CPU first: a file written on a GPU loads anywhere."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(checkpoint["meta"])
    # model files from before heads named the recurrent layer "lstm"
    model.load_state_dict({("rnn." + k[5:] if k.startswith("lstm.") else k): v
                           for k, v in checkpoint["state_dict"].items()})
    return model.eval().to(device), checkpoint["meta"]
