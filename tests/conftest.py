"""Shared fixtures: tiny generated videos and the real sample clips in tests/data/."""
from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from actionrec.synthetic import write_avi

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_VIDEOS = ROOT / "tests" / "data"  # real clips recorded outside this project (README there)
REAL_CLIPS = ("v_ApplyEyeMakeup_g01_c01.avi", "kinetics_arm_wrestling.mp4", "short_32_frames.mp4")
# What `dvc exp run` applies to the workspace: tests read these as committed, so that `make
# test` passes whatever experiment the workspace holds.
EXPERIMENT_RESULTS = ("params.yaml", "dvc.lock", "metrics/", "plots/")


def stage_argv(stage: str) -> list[str]:
    """The stage's command as dvc.yaml gives it (its paths relative to the working directory),
    run by this Python on this checkout's script."""
    script, *args = shlex.split(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]["cmd"])[1:]
    return [sys.executable, str(ROOT / script), *args]


def committed(rel: str, repo: Path = ROOT) -> bytes | None:
    """The file rel as committed at HEAD of repo; None where HEAD has no such file."""
    result = subprocess.run(["git", "show", f"HEAD:{rel}"], cwd=repo, capture_output=True)
    return result.stdout if result.returncode == 0 else None


def committed_params(repo: Path = ROOT) -> dict:
    """params.yaml as committed, whatever experiment is applied to the workspace."""
    return yaml.safe_load(committed("params.yaml", repo))


def update_params(params: dict, **keys) -> dict:
    """Set each key in the section that holds it, features before runtime before data (a key
    such as seed or threads also lives elsewhere: set those directly)."""
    from actionrec.params import MODELS

    for key, value in keys.items():
        section = next(name for name in ("features", "runtime", "data") if key in MODELS[name].model_fields)
        params[section][key] = value
    return params


def read_features(folder: Path) -> np.ndarray:
    """Every feature row of a features stage's output folder, shard by shard."""
    from actionrec.dataset import open_features

    return np.asarray(open_features(folder)[0])


def tiny_video(path: Path, frames: int, width: int = 64, height: int = 48, fps: int = 25) -> Path:
    """An MPEG-4 AVI whose frame i is filled with grey level 10 * i (so frames are tellable)."""
    data = np.zeros((frames, height, width, 3), np.uint8)
    for i in range(frames):
        data[i] = min(10 * i, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_avi(path, data, fps)
    return path


@pytest.fixture
def real_clips(tmp_path: Path) -> dict[str, Path]:
    """The three real clips, copied into the test's own folder so that tests may alter them."""
    out = {}
    for name in REAL_CLIPS:
        out[name] = tmp_path / name
        shutil.copy(SAMPLE_VIDEOS / name, out[name])
    return out


def encode_video(path: Path, frames, fps: int = 25, codec: str = "mpeg4", pix_fmt: str = "yuv420p",
                 gop: int | None = None, b_frames: int | None = None, pts=None, time_base=None,
                 colorspace: int | None = None, color_range: int | None = None) -> Path:
    """Encode uint8 RGB frames [H, W, 3] with PyAV; pts (with time_base) gives a variable
    frame rate; colorspace/color_range tag the stream and convert the pixels accordingly."""
    import av
    from fractions import Fraction

    frames = list(frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = pix_fmt
        if time_base:
            stream.codec_context.time_base = Fraction(time_base)
        if gop:
            stream.codec_context.gop_size = gop
        if b_frames is not None:
            stream.codec_context.max_b_frames = b_frames
        if colorspace is not None:
            stream.codec_context.colorspace = colorspace
        if color_range is not None:
            stream.codec_context.color_range = color_range
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame = frame.reformat(format=pix_fmt, dst_colorspace=colorspace, dst_color_range=color_range)
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(time_base)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def numbered_frames(count: int, width: int = 64, height: int = 48, seed: int = 0):
    """Textured frames that differ from each other (a noise image shifted by i pixels)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height, width + count, 3), np.uint8)
    base = ((base.astype(np.uint16) + np.roll(base, 1, 1) + np.roll(base, 1, 0)) // 3).astype(np.uint8)
    return [np.ascontiguousarray(base[:, i:i + width]) for i in range(count)]


def set_display_matrix(path: Path, matrix: tuple[int, ...]) -> Path:
    """Overwrite the 3x3 display matrix (9 big-endian int32 at offset 48 of the tkhd box) of
    an MP4, as a phone does for a video shot upright."""
    import struct

    data = bytearray(path.read_bytes())
    box = data.find(b"tkhd") - 4
    data[box + 48:box + 84] = struct.pack(">9i", *matrix)
    path.write_bytes(bytes(data))
    return path


# display matrices whose rotation FFmpeg undoes by turning the frame clockwise this much
ROTATION_MATRICES = {90: (0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30),
                     180: (-65536, 0, 0, 0, -65536, 0, 0, 0, 1 << 30),
                     270: (0, -65536, 0, 65536, 0, 0, 0, 0, 1 << 30)}


def rotated_video(path: Path, degrees: int, frames: int = 10) -> Path:
    """A 64x48 MP4 whose display matrix says: turn `degrees` clockwise to show upright.
    Each frame has a white 16x16 square in its top-left corner as stored."""
    image = np.zeros((48, 64, 3), np.uint8)
    image[:16, :16] = 255
    return set_display_matrix(encode_video(path, [image] * frames), ROTATION_MATRICES[degrees])


def white_corner(frame: np.ndarray) -> str:
    """Which corner of a frame holds the white square: TL, TR, BL or BR."""
    corners = {"TL": frame[:8, :8], "TR": frame[:8, -8:], "BL": frame[-8:, :8], "BR": frame[-8:, -8:]}
    return max(corners, key=lambda name: corners[name].mean())


def vfr_video(path: Path, frames: int = 24) -> Path:
    """An MP4 whose frame gaps alternate 70 and 20 ms (14 and 50 frames/s); frame i grey 10 * i."""
    pts, time = [], 0
    for i in range(frames):
        pts.append(time)
        time += 20 if i % 2 else 70
    return encode_video(path, [np.full((48, 64, 3), 10 * i, np.uint8) for i in range(frames)],
                        fps=30, pts=pts, time_base="1/1000")
