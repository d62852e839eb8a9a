"""Frame features for many videos: decode in DataLoader workers, batch frames across videos,
run the backbone once per batch. Shared by the features stage and bench/extract.py."""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from actionrec.backbone import embed, resize_crop
from actionrec.video import VideoError, read_frames


class ClipDataset(Dataset):
    """Item i: (i, uint8 [T, 3, crop, crop] frames or None, error message or "")."""

    def __init__(self, paths: list[str], num_frames: int, resize: int, crop: int):
        self.paths, self.num_frames, self.resize, self.crop = paths, num_frames, resize, crop

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            frames = read_frames(self.paths[i], self.num_frames)
            return i, resize_crop(frames, self.resize, self.crop), ""
        except VideoError as error:
            return i, None, str(error)
        except Exception as error:  # a decoder bug on one file must not end the stage
            return i, None, f"{type(error).__name__}: {error}"


def _single_threaded_worker(_: int) -> None:
    torch.set_num_threads(1)  # the main process owns the cores for the backbone


def iter_features(model: torch.nn.Module, paths: list[str], cfg: dict,
                  ) -> Iterator[tuple[int, np.ndarray | None, str]]:
    """Yield (index into paths, float32 [T, D] features or None, error) in completion order.

    Frames of several videos share one forward pass of cfg["batch_frames"] frames, so the
    backbone always sees full batches while workers decode the next videos."""
    dataset = ClipDataset(paths, cfg["num_frames"], cfg["resize"], cfg["crop"])
    workers = cfg["num_workers"]
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                        prefetch_factor=8 if workers else None,
                        worker_init_fn=_single_threaded_worker if workers else None,
                        persistent_workers=False)
    pending: list[tuple[int, torch.Tensor]] = []
    buffered = 0

    def flush():
        nonlocal pending, buffered
        output = embed(model, torch.cat([frames for _, frames in pending]), cfg["precision"])
        start = 0
        for index, frames in pending:
            yield index, output[start:start + len(frames)].numpy(), ""
            start += len(frames)
        pending, buffered = [], 0

    for index, frames, error in loader:
        if frames is None:
            yield index, None, error
            continue
        pending.append((index, frames))
        buffered += len(frames)
        if buffered >= cfg["batch_frames"]:
            yield from flush()
    if pending:
        yield from flush()


class Throughput:
    """Frames per second since creation, for progress bars and benchmarks."""

    def __init__(self):
        self.start, self.frames = time.perf_counter(), 0

    def add(self, frames: int) -> float:
        self.frames += frames
        return self.frames / max(time.perf_counter() - self.start, 1e-9)


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)
