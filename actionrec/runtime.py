"""params.yaml's features and runtime sections checked on this machine, `auto` resolved (actionrec/device.py):
apart from device.py, which train and evaluate import, so that they do not import the backbone or the decoders."""
from __future__ import annotations

import torch

from actionrec.backbone import check_features
from actionrec.device import resolve_batch_frames, resolve_device, resolve_precision, resolve_workers
from actionrec.errors import ParamsError
from actionrec.video import unavailable_decoder


def resolve_runtime(features: dict, runtime: dict) -> tuple[dict, torch.device]:
    """(features and runtime params checked on this machine, `auto` resolved; the device). Sets the threads."""
    check_features(features)
    cfg = {**features, **runtime}
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    device = resolve_device(cfg["device"])
    if error := unavailable_decoder(cfg["decoder"]):  # an explicit one must be installed, and load, here
        raise ParamsError(error)
    return dict(cfg, device=str(device), precision=resolve_precision(cfg["precision"], device),
                num_workers=resolve_workers(cfg["num_workers"], device),
                batch_frames=resolve_batch_frames(cfg["batch_frames"], device)), device
