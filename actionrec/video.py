"""Open a video, choose which frames to sample, decode them to uint8 RGB arrays.

features.decoder: auto tries decord first (fast seeking) where it is installed (its wheels
exist only for x86_64 Linux and Windows) and falls back to PyAV for files decord refuses or
decodes short; decord or pyav use that one alone. Before decoding, PyAV checks that the file
is a video at all: FFmpeg happily reads a text file as "ANSI art" video and a JPEG as a
one-frame video, and a model would then classify them with confidence.
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


NOT_VIDEO_FORMATS = {"tty": "a text file", "image2": "a still image", "image2pipe": "a still image"}
NOT_VIDEO_CODECS = {"ansi", "bintext", "xbin", "idf", "text", "subrip", "ass"}


def check_is_video(path: str) -> None:
    """VideoError unless FFmpeg sees a real video: a container that is not a still image or
    text, with a video stream whose codec is a picture codec."""
    import av

    try:
        with av.open(path) as container:
            kind = container.format.name
            streams = list(container.streams.video)
    except av.error.FFmpegError as error:
        raise VideoError(f"not a video FFmpeg can open ({_first_line(error)})") from None
    if kind in NOT_VIDEO_FORMATS or kind.endswith("_pipe"):
        raise VideoError(f"not a video: FFmpeg reads it as {NOT_VIDEO_FORMATS.get(kind, 'a still image')} "
                         f"({kind})")
    if not streams:
        raise VideoError(f"not a video: the file has no video stream ({kind}; audio only?)")
    if streams[0].codec_context.name in NOT_VIDEO_CODECS:
        raise VideoError(f"not a video: its 'video' stream is {streams[0].codec_context.name} text")


def decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def _read_decord(path: str, num_frames: int) -> tuple[np.ndarray, list[int]]:
    import decord

    with _native_stderr_silenced():
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
        indices = frame_indices(len(reader), num_frames)
        frames = reader.get_batch(indices).asnumpy()
    if frames.shape[0] != num_frames:
        raise VideoError(f"decord returned {frames.shape[0]} of {num_frames} frames")
    return frames, indices


def _read_pyav(path: str, num_frames: int) -> tuple[np.ndarray, list[int]]:
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
    return np.stack([picked[i] for i in wanted]), wanted


def sample_frames(path: str | os.PathLike, num_frames: int, decoder: str = "auto",
                  ) -> tuple[np.ndarray, list[int]]:
    """num_frames sampled frames of a video as uint8 [T, H, W, 3] and their indices;
    VideoError if the file is not a video or no decoder could read it."""
    path = str(path)
    if not Path(path).is_file():
        raise VideoError(f"no such file: {path}")
    if os.path.getsize(path) == 0:
        raise VideoError("the file is empty (0 bytes)")
    check_is_video(path)
    if decoder == "pyav" or (decoder == "auto" and not decord_available()):
        try:
            return _read_pyav(path, num_frames)
        except VideoError:
            raise
        except Exception as error:
            raise VideoError(f"PyAV: {_first_line(error)}") from None
    try:
        return _read_decord(path, num_frames)
    except Exception as decord_error:  # decord raises its own and generic errors
        if decoder == "decord":
            raise VideoError(f"decord: {_first_line(decord_error)}") from None
        try:
            return _read_pyav(path, num_frames)
        except Exception as pyav_error:
            raise VideoError(f"decord: {_first_line(decord_error)}; "
                             f"PyAV: {_first_line(pyav_error)}") from None


def read_frames(path: str | os.PathLike, num_frames: int, decoder: str = "auto") -> np.ndarray:
    """num_frames sampled frames of a video as uint8 [T, H, W, 3]; VideoError if unreadable."""
    return sample_frames(path, num_frames, decoder)[0]


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__
