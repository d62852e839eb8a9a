"""Features for many videos: decode in DataLoader workers, batch input items (frames, or clips for a video
backbone) across videos, run the backbone once per batch. Shared by the features stage, predict.py, verify and
bench/extract.py."""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from actionrec.backbone import batch_items, clip_inputs, embed, video_frames
from actionrec.video import VideoError


class ClipDataset(Dataset):
    """Item i: (i, uint8 [num_frames, *item_shape] inputs or None, error or "", {"rotation", "decoder", "warning"})."""

    def __init__(self, paths: list[str], num_frames: int, prep: dict, decoder: str = "auto",
                 device: str = "cpu"):
        self.paths, self.num_frames, self.prep = paths, num_frames, prep
        self.decoder, self.device = decoder, device

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            clip, inputs = clip_inputs(self.paths[i], self.num_frames, self.prep, self.decoder, device=self.device)
            return i, inputs, "", {"rotation": clip.rotation, "decoder": clip.decoder, "warning": clip.warning}
        except VideoError as error:  # an unreadable file; a bug in our code crashes the stage
            return i, None, str(error), {"rotation": 0, "decoder": "", "warning": ""}


def _single_threaded_worker(_: int) -> None:
    torch.set_num_threads(1)  # the main process owns the cores for the backbone


def iter_features(model: torch.nn.Module, paths: list[str], cfg: dict,
                  ) -> Iterator[tuple[int, np.ndarray | None, str, dict]]:
    """Yield (index into paths, float32 [T, D] features or None, error, info) in completion order.

    cfg holds resolved values (actionrec.device). On CUDA, frames arrive in pinned memory and are
    copied to the GPU while the next video decodes; where NVDEC handles the codec, torchcodec
    decodes on the GPU in workers started with spawn (a forked worker cannot use CUDA)."""
    device = model.inference_device
    decode_on = str(device) if device.type == "cuda" else "cpu"
    dataset = ClipDataset(paths, cfg["num_frames"], model.preprocessing, cfg.get("decoder", "auto"), decode_on)
    workers = cfg["num_workers"]
    # items wait in shared memory: 8 videos a worker of 16 frames, as many frames of longer ones (a video model's)
    prefetch = max(2, 8 * 16 // video_frames(cfg["num_frames"], model.preprocessing))
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                        prefetch_factor=prefetch if workers else None, pin_memory=device.type == "cuda",
                        worker_init_fn=_single_threaded_worker if workers else None,
                        multiprocessing_context="spawn" if workers and decode_on != "cpu" else None)
    yield from embed_stream(model, loader, cfg["batch_frames"], cfg["precision"])


def embed_stream(model: torch.nn.Module, clips, batch_frames: int, precision: str,
                 ) -> Iterator[tuple[int, np.ndarray | None, str, dict]]:
    """iter_features for ClipDataset's items. The backbone always sees exactly batch_frames frames (so many clips
    of a video model; a fixed shape keeps a compiled model from recompiling): videos share batches, and only the
    very last one is padded."""
    batch_frames = batch_items(batch_frames, model.preprocessing)
    waiting: deque[tuple[int, int, dict]] = deque()  # (video index, frames, info) not yet handed out
    inputs: list[torch.Tensor] = []  # uint8 frames not yet through the backbone
    outputs: list[torch.Tensor] = []  # features not yet handed out

    def run(final: bool) -> Iterator[tuple[int, np.ndarray, str, dict]]:
        nonlocal inputs, outputs
        frames = torch.cat(inputs)
        while len(frames) >= batch_frames or (final and len(frames)):
            batch, frames = frames[:batch_frames], frames[batch_frames:]
            real = len(batch)
            if real < batch_frames:  # the last batch: padded to the compiled shape
                batch = torch.cat([batch, batch.new_zeros((batch_frames - real, *batch.shape[1:]))])
            outputs.append(embed(model, batch, precision)[:real])
        inputs, done, offset = [frames], torch.cat(outputs), 0
        while waiting and len(done) - offset >= waiting[0][1]:
            index, count, info = waiting.popleft()
            yield index, done[offset:offset + count].numpy(), "", info
            offset += count
        outputs = [done[offset:]]

    for index, frames, error, info in clips:
        if frames is None:
            yield index, None, error, info
            continue
        waiting.append((index, len(frames), info))
        inputs.append(frames.to(model.inference_device, non_blocking=True))
        if sum(map(len, inputs)) >= batch_frames:
            yield from run(final=False)
    if waiting:
        yield from run(final=True)


class Throughput:
    """Frames per second since creation, for progress bars and benchmarks."""

    def __init__(self):
        self.start, self.frames = time.perf_counter(), 0

    def add(self, frames: int) -> float:
        self.frames += frames
        return self.frames / max(time.perf_counter() - self.start, 1e-9)
