"""Open a video, choose which frames to sample, decode them to uint8 RGB arrays.

decord is tried first (fast seeking); PyAV is the fallback for files decord refuses or
decodes short (containers that report more frames than they hold, odd codecs).
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np


class VideoError(Exception):
    """A video that no decoder could read; the message says why."""


def frame_indices(num_available: int, num_frames: int) -> list[int]:
    """TSN-style segment centres: split the clip into num_frames equal segments, take each
    middle frame. Short clips repeat frames deterministically, in order."""
    if num_available < 1:
        raise VideoError("the video has no frames")
    return [min(int((i + 0.5) * num_available / num_frames), num_available - 1)
            for i in range(num_frames)]


@contextmanager
def _native_stderr_silenced():
    """decord's C++ core logs each failure to fd 2 itself; the exception already says it."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _read_decord(path: str, num_frames: int) -> np.ndarray:
    import decord

    with _native_stderr_silenced():
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
        indices = frame_indices(len(reader), num_frames)
        frames = reader.get_batch(indices).asnumpy()
    if frames.shape[0] != num_frames:
        raise VideoError(f"decord returned {frames.shape[0]} of {num_frames} frames")
    return frames


def _read_pyav(path: str, num_frames: int) -> np.ndarray:
    import av

    def decoded_frames(container):
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            yield from container.decode(stream)
        except av.error.FFmpegError:
            return  # a truncated file: keep what decoded before the damage

    # Two passes: the container's frame count can be wrong, so count what really decodes.
    with av.open(path) as container:
        if not container.streams.video:
            raise VideoError("the file has no video stream")
        count = sum(1 for _ in decoded_frames(container))
    wanted = frame_indices(count, num_frames)
    picked: dict[int, np.ndarray] = {}
    with av.open(path) as container:
        for i, frame in enumerate(decoded_frames(container)):
            if i in wanted:
                picked[i] = frame.to_ndarray(format="rgb24")
            if i >= wanted[-1]:
                break
    return np.stack([picked[i] for i in wanted])


def read_frames(path: str | os.PathLike, num_frames: int) -> np.ndarray:
    """num_frames sampled frames of a video as uint8 [T, H, W, 3]; VideoError if unreadable."""
    path = str(path)
    if not Path(path).is_file():
        raise VideoError(f"no such file: {path}")
    if os.path.getsize(path) == 0:
        raise VideoError("the file is empty (0 bytes)")
    try:
        return _read_decord(path, num_frames)
    except Exception as decord_error:  # decord raises its own and generic errors
        try:
            return _read_pyav(path, num_frames)
        except Exception as pyav_error:
            raise VideoError(f"decord: {_first_line(decord_error)}; "
                             f"PyAV: {_first_line(pyav_error)}") from None


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__
