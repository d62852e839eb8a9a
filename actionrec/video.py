"""Open a video, choose which frames to sample, decode them to upright uint8 RGB arrays.

One PyAV demux pass finds the frames, clean keyframes and rotation, so every decoder gives the same
pixels; the decoder only changes speed (docs/decoding.md). Non-videos are refused first: FFmpeg reads
text as "ANSI art" video and a JPEG as a one-frame video, which a model would classify with confidence."""
from __future__ import annotations

import functools
import itertools
import os
import sys
import traceback
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np

from actionrec.params import DECODERS

# `auto` tries these in this order: fastest first, as bench/decode.py measured them
# (docs/decoding.md). PyAV always loads; decoders after it serve only as explicit choices.
AUTO_ORDER = ("pyav", "torchcodec", "decord")
# codecs torchcodec decodes with NVDEC (its CUDA interface); others decode on the CPU
NVDEC_CODECS = frozenset({"h264", "hevc", "av1", "vp9", "vp8", "mpeg4"})
FFMPEG_INSTALL = "Debian/Ubuntu: apt-get install ffmpeg; macOS: brew install ffmpeg"


class VideoError(Exception):
    """Not a video, or no decoder could read it; the message never holds the path (callers add it)."""


class Clip(NamedTuple):
    frames: np.ndarray            # uint8 [T, H, W, 3], upright RGB
    indices: list[int]            # the sampled frame indices (presentation order)
    rotation: int                 # clockwise degrees (0, 90, 180, 270) applied to make frames upright
    frame_count: int              # frames the indices were drawn from (demuxed, or decoded when damaged)
    declared_frames: int | None   # what the container header declares, if anything
    decoder: str                  # "decord" | "pyav" | "torchcodec": the one that produced the frames
    warning: str                  # "" or e.g. "decoded 60 of 150 frames: damaged file?"


def frame_indices(num_available: int, num_frames: int, clip_frames: int = 1, step: float = 1.0) -> list[int]:
    """TSN-style segment centres; short clips repeat frames deterministically, in order. With clip_frames > 1, a
    clip of that many frames `step` apart centred on each (moved inside the video; slowed down where longer)."""
    if num_available < 1:
        raise VideoError("the video has no frames")
    span = (clip_frames - 1) * min(step, (num_available - 1) / max(clip_frames - 1, 1))
    starts = [min((i + 0.5) * num_available / num_frames - span / 2, num_available - 1 - span) for i in range(num_frames)]
    step = span / max(clip_frames - 1, 1)
    return [min(int(max(start, 0.0) + k * step), num_available - 1) for start in starts for k in range(clip_frames)]


# ---------------------------------------------------------------- what the demuxer says

NOT_VIDEO_FORMATS = {"tty": "a text file", "image2": "a still image", "image2pipe": "a still image"}
NOT_VIDEO_CODECS = {"ansi", "bintext", "xbin", "idf", "text", "subrip", "ass"}


class Scan(NamedTuple):
    """One demux pass over the video stream (no decoding beyond the first frame)."""
    stream_index: int
    codec: str
    width: int                   # upright (after rotation)
    height: int
    fps: float | None
    rotation: int                # clockwise degrees to turn decoded frames upright
    declared_frames: int | None
    times: np.ndarray            # seconds of each frame from the first one, presentation order
    keyframes: list[int]         # positions a decoder can start from with no earlier frame (0 first)
    seek_points: dict[int, tuple[int | None, int | None]]  # keyframe position -> packet (pts, dts)
    damage: str                  # "" or what looks damaged (demuxing stopped early, rotation unknown)
    reordered: bool              # B-frames: packets arrive out of presentation order

    @property
    def frame_count(self) -> int:
        return len(self.times)


def _ffmpeg_reason(error: Exception) -> str:
    """FFmpeg's reason without the file name it appends (messages must hold no path)."""
    return str(getattr(error, "strerror", None) or _first_line(error)).split(": '")[0]


def _open(path: str):
    """PyAV's container, whose metadata that is not UTF-8 (a damaged tag) is replaced: it must not stop decoding."""
    import av

    return av.open(path, metadata_errors="replace")


def scan(path: str | os.PathLike) -> Scan:
    """Refuse what is not a video (VideoError, one line), then demux the video stream once."""
    import av

    path = str(path)
    if os.path.isdir(path):
        raise VideoError("is a directory; use --csv for a folder")
    if not os.path.isfile(path):
        raise VideoError("no such file")
    if os.path.getsize(path) == 0:
        raise VideoError("the file is empty (0 bytes)")
    try:
        container = _open(path)
    except av.error.FFmpegError as error:
        raise VideoError(f"not a video FFmpeg can open ({_ffmpeg_reason(error)})") from None
    with container:
        kind = container.format.name
        if kind in NOT_VIDEO_FORMATS or kind.endswith("_pipe"):
            raise VideoError(f"not a video: FFmpeg reads it as {NOT_VIDEO_FORMATS.get(kind, 'a still image')} "
                             f"({kind})")
        videos = [s for s in container.streams.video
                  if not s.disposition & av.stream.Disposition.attached_pic]
        if not videos:
            if container.streams.video:
                raise VideoError(f"not a video: audio with cover art ({kind}), no video stream")
            raise VideoError(f"not a video: the file has no video stream ({kind}; audio only?)")
        stream = videos[0]
        if stream.codec_context is None:  # a damaged header names no codec FFmpeg knows
            raise VideoError(f"the video stream has no codec FFmpeg can decode ({kind}; damaged file?)")
        stream.codec_context.thread_count = 1
        codec = stream.codec_context.name
        if codec in NOT_VIDEO_CODECS:
            raise VideoError(f"not a video: its 'video' stream is {codec} text")
        pts, dts, key = [], [], []
        first_frame, demux_error = None, ""
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # the end-of-stream marker, not a frame
                    continue
                pts.append(packet.pts)
                dts.append(packet.dts)
                key.append(packet.is_keyframe)
                if first_frame is None and len(pts) <= 64:  # the rotation rides on decoded frames
                    try:
                        first_frame = next(iter(packet.decode()), None)
                    except av.error.FFmpegError:
                        pass
        except av.error.FFmpegError as error:
            demux_error = _ffmpeg_reason(error)
        if len(pts) < 2 and (demux_error or (stream.frames or 0) > len(pts)):  # not a still image: cut short
            said = f"of the {stream.frames} frames its header declares " if stream.frames else "frame(s) "
            raise VideoError(f"damaged or truncated file: {len(pts)} {said}demux ({demux_error or 'the data ends'})")
        if not pts:
            raise VideoError("the video has no frames that demux (empty stream)")
        if len(pts) == 1:
            raise VideoError(f"not a video: a still image (one frame, {codec} in {kind.split(',')[0]})")
        # FFmpeg's display matrix turns counter-clockwise (what `ffmpeg`'s autorotate undoes):
        # the clockwise turn that makes the frame upright, rounded to 90 degrees
        rotation = int(round(-(getattr(first_frame, "rotation", 0) or 0) / 90.0)) % 4 * 90
        damage = [f"demuxing stopped early ({demux_error})"] if demux_error else []
        if first_frame is None:  # the rotation rides on a decoded frame: say it is a guess
            damage.append("no frame of the first 64 packets decodes, so its rotation is unknown (taken as upright)")
        width, height = stream.codec_context.width, stream.codec_context.height
        if rotation in (90, 270):
            width, height = height, width
        fps = float(stream.average_rate) if stream.average_rate else None
        times, keyframes, seek_points = _presentation(pts, dts, key, float(stream.time_base or 0), fps)
        reordered = any(a is not None and b is not None and b < a for a, b in zip(pts, pts[1:]))
        return Scan(stream.index, codec, width, height, fps, rotation, stream.frames or None, times,
                    keyframes, seek_points, "; ".join(damage), reordered)


def _presentation(pts: list, dts: list, key: list, time_base: float, fps: float | None):
    """Frame times in presentation order, and the clean keyframes (every earlier packet shows before, every later
    one after: no open GOP), from which decoding yields the frames in order; without timestamps, only 0."""
    times = np.arange(len(pts)) / (fps or 25.0)  # without timestamps: the nominal rate
    positions = [0]
    if all(p is not None for p in pts):
        stamps = np.array(pts, dtype=np.int64)
        if time_base:
            shown = np.sort(stamps)
            times = (shown - shown[0]) * time_base
        before = np.maximum.accumulate(np.concatenate([[np.iinfo(np.int64).min], stamps[:-1]]))
        after = np.minimum.accumulate(np.concatenate([stamps[1:], [np.iinfo(np.int64).max]])[::-1])[::-1]
        clean = np.flatnonzero(np.array(key) & (before < stamps) & (stamps < after))
        positions = sorted({0, *clean.tolist()})
    return times, positions, {k: (pts[k], dts[k]) for k in positions}


def probe(path: str | os.PathLike) -> dict:
    """What the demuxer says, without decoding; duration (s) only where the frame rate is known."""
    found = scan(path)
    return {"frame_count": found.frame_count, "fps": found.fps,
            "duration": float(found.times[-1]) + 1.0 / found.fps if found.fps else None,
            "rotation": found.rotation, "declared_frames": found.declared_frames, "codec": found.codec,
            "width": found.width, "height": found.height}


# ---------------------------------------------------------------- which decoders load


@contextmanager
def _native_stderr_silenced():
    """decord's C++ core logs each failure to fd 2 itself; the exception already says it."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@functools.cache
def load_error(name: str) -> str | None:
    """None when decoder `name` loads; "" when not installed (decord has no macOS or aarch64 wheel); else why not."""
    try:
        if name == "decord":
            import decord  # noqa: F401
        elif name == "torchcodec":
            import torchcodec
            if getattr(torchcodec, "ffmpeg_major_version", 0) is None:
                return "FFmpeg's shared libraries (versions 4 to 9) are not installed"
    except Exception as error:  # torchcodec before 0.5 raises on import without FFmpeg
        return "" if isinstance(error, ModuleNotFoundError) and error.name == name else _first_line(error)
    return None


@functools.cache
def _note(message: str) -> None:
    """One line on stderr, once per process (and per message)."""
    print(f"note: {message}", file=sys.stderr)


def available_decoders(*names_to_check: str) -> list[str]:
    """The decoders `auto` tries, a note for each that cannot load; only `names_to_check` (torchcodec loads slowly)."""
    reasons = {name: load_error(name) for name in AUTO_ORDER if not names_to_check or name in names_to_check}
    for name, reason in reasons.items():
        if reason:
            _note(f"decoder {name} cannot load ({reason}): decoding without it; to use it, "
                  f"install FFmpeg ({FFMPEG_INSTALL})")
    return [name for name, reason in reasons.items() if reason is None]


def unavailable_decoder(decoder: str, key: str = "runtime.decoder") -> str:
    """"" when `decoder` can run here, else a one-line error naming the key and what to do."""
    if decoder not in DECODERS:
        return f"{key} must be one of {', '.join(DECODERS)}, got {decoder!r}"
    reason = None if decoder == "auto" else load_error(decoder)
    if reason is None:
        return ""
    if decoder == "decord":
        return (f"{key} is decord but decord is not installed (it has no wheel for this platform): "
                f"set {key}: auto or pyav")
    if not reason:
        return f"{key} is torchcodec but it is not installed: pip install torchcodec, or set {key}: auto"
    return (f"{key} is {decoder} but it cannot load ({reason}): install FFmpeg ({FFMPEG_INSTALL}), "
            f"or set {key}: auto")


def decode_device(device: str, codec: str) -> str:
    """The CUDA device where torchcodec can decode `codec` with NVDEC there, else "cpu" (a note says why)."""
    if not str(device).startswith("cuda"):
        return "cpu"
    if load_error("torchcodec") is not None:
        _note("GPU decoding needs torchcodec with FFmpeg: decoding on the CPU")
        return "cpu"
    if codec not in NVDEC_CODECS:
        _note(f"NVDEC does not decode {codec} here: decoding {codec} videos on the CPU")
        return "cpu"
    return str(device)


def _decoder_order(decoder: str, found: Scan, device: str) -> list[str]:
    """Decoders to try for this file, best first; PyAV (the reference) is always among them."""
    if decoder == "auto":  # none after PyAV is needed: PyAV reads whatever they read
        order = available_decoders(*AUTO_ORDER[:AUTO_ORDER.index("pyav") + 1])
    elif problem := unavailable_decoder(decoder):
        raise VideoError(problem)
    else:
        order = [decoder]
    if device.startswith("cuda") and decoder in ("auto", "torchcodec"):  # decode_device checked it loads
        order = ["torchcodec", *[name for name in order if name != "torchcodec"]]
    # decord 0.6 ignores the display matrix (and garbles 90-degree frames): not for rotated files
    if found.rotation:
        order = [name for name in order if name != "decord"]
    # MPEG-4 part 2 with B-frames (UCF-101's packed AVI among them): decord and torchcodec
    # return neighbouring frames for sampled indices there (measured, docs/decoding.md)
    if found.codec == "mpeg4" and found.reordered:
        order = []
    return order if "pyav" in order else [*order, "pyav"]


# ---------------------------------------------------------------- decoders


class _DecoderFailed(Exception):
    """A decoder's own verdict on the file (or it ran out of frames before a sampled one): a damaged file."""


@contextmanager
def _own_errors(package, *types: type[Exception]):
    """`types` raised inside the decoder `package` become _DecoderFailed: decord and torchcodec raise plain
    RuntimeErrors for a bad file. The same types raised by our code that calls them (a bug) pass."""
    try:
        yield
    except types as error:
        folder = os.path.dirname(package.__file__)
        if not any(frame.filename.startswith(folder) for frame in traceback.extract_tb(error.__traceback__)):
            raise
        raise _DecoderFailed(_first_line(error)) from None


def _upright(frame, found: Scan) -> np.ndarray:
    frame = frame.to_ndarray(format="rgb24")
    frame = np.ascontiguousarray(np.rot90(frame, k=-found.rotation // 90)) if found.rotation else frame
    if frame.shape[:2] != (found.height, found.width):  # a stream that changes size (concatenated files)
        raise _DecoderFailed(f"the frame size changes within the stream ({found.width}x{found.height}, then "
                             f"{frame.shape[1]}x{frame.shape[0]})")
    return frame


def _decode_pyav(path: str, found: Scan, wanted: list[int], device: str = "cpu") -> np.ndarray:
    """Seek to the clean keyframe before each sampled frame where that skips frames, then decode up to it."""
    picked: dict[int, np.ndarray] = {}
    with _open(path) as container:
        stream = container.streams[found.stream_index]
        codec = stream.codec_context
        codec.thread_count = 1  # one thread per video, as decord and torchcodec here: workers parallelise
        position, frames, targets = 0, _decoded(codec, container.demux(stream)), set(wanted)
        for target in sorted(targets):
            start = found.keyframes[int(np.searchsorted(found.keyframes, target, side="right")) - 1]
            if start > position:  # a seek skips the frames in between
                packets, position = _seek(container, stream, codec, found, start)
                frames = _decoded(codec, packets)
            while position <= target:
                frame = next(frames, None)
                if frame is None:
                    raise _DecoderFailed(f"PyAV decoded {position} frames, frame {target} is missing")
                if position in targets:
                    picked[position] = _upright(frame, found)
                position += 1
    return np.stack([picked[i] for i in wanted])


def _seek(container, stream, codec, found: Scan, start: int):
    """(packets, position) from the clean keyframe at `start`; demuxers seek by pts (MP4) or dts
    (AVI), so try both and accept any clean keyframe up to `start`."""
    known = {stamps: position for position, stamps in found.seek_points.items()}
    for stamp in dict.fromkeys(found.seek_points[start]):
        if stamp is None:
            continue
        container.seek(stamp, stream=stream, backward=True, any_frame=False)
        codec.flush_buffers()
        packets = container.demux(stream)
        first = next((p for p in packets if p.size), None)
        landed = known.get((first.pts, first.dts)) if first is not None else None
        if landed is not None and landed <= start:
            return itertools.chain([first], packets), landed
    raise _DecoderFailed("PyAV's seek landed on no known keyframe")


def _decoded(codec, packets):
    import av

    try:
        for packet in packets:
            if packet.size:
                yield from codec.decode(packet)
        yield from codec.decode(None)
    except av.error.FFmpegError:
        return  # damaged data: the caller sees fewer frames than it needs


def _decode_decord(path: str, found: Scan, wanted: list[int], device: str = "cpu") -> np.ndarray:
    import decord
    from decord._ffi.base import DECORDError  # a plain Exception

    with _native_stderr_silenced(), _own_errors(decord, DECORDError, RuntimeError):
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
        if len(reader) != found.frame_count:  # its frame numbers would be other frames
            raise _DecoderFailed(f"decord counts {len(reader)} frames, the demuxer {found.frame_count}")
        return reader.get_batch(wanted).asnumpy()


def _decode_torchcodec(path: str, found: Scan, wanted: list[int], device: str = "cpu") -> np.ndarray:
    import torchcodec
    from torchcodec.decoders import VideoDecoder

    with _own_errors(torchcodec, RuntimeError):
        reader = VideoDecoder(path, stream_index=found.stream_index, dimension_order="NHWC",
                              num_ffmpeg_threads=1, seek_mode="exact", device=device)
        if reader.metadata.num_frames != found.frame_count:
            raise _DecoderFailed(f"torchcodec counts {reader.metadata.num_frames} frames, "
                                 f"the demuxer {found.frame_count}")
        unique = sorted(set(wanted))
        batch = reader.get_frames_at(unique).data.cpu().numpy()
    return batch[[unique.index(i) for i in wanted]]


DECODE = {"pyav": _decode_pyav, "decord": _decode_decord, "torchcodec": _decode_torchcodec}


def _decode_pyav_whole(path: str, found: Scan, sampling: tuple, window: tuple[int, int],
                       ) -> tuple[np.ndarray, list[int], int]:
    """A damaged file: count the frames that really decode, then sample those (two passes)."""
    with _open(path) as container:
        stream = container.streams[found.stream_index]
        stream.codec_context.thread_count = 1
        count = sum(1 for _ in _decoded(stream.codec_context, container.demux(stream)))
    first, stop = window[0], min(window[1], count)
    if stop <= first:
        raise VideoError(f"only {count} frames decode: none in the requested window (damaged file?)")
    wanted = [first + i for i in frame_indices(stop - first, *sampling)]
    # with no keyframe but the first, the sparse decoder decodes from the start, seeking nowhere
    return _decode_pyav(path, found._replace(keyframes=[0]), wanted), wanted, count


def _window(found: Scan, start: float | None, end: float | None) -> tuple[int, int]:
    """The frame positions [first, stop) shown within [start, end) seconds."""
    first = 0 if start is None else int(np.searchsorted(found.times, start, side="left"))
    stop = found.frame_count if end is None else int(np.searchsorted(found.times, end, side="left"))
    if stop <= first:
        length = float(found.times[-1]) + (1.0 / found.fps if found.fps else 0.0)
        raise VideoError(f"no frames between {start or 0:g} s and {end if end is not None else length:g} s "
                         f"(the video is {length:.2f} s long)")
    return first, stop


def _damage_warning(decoded: int, expected: int | None, damage: str, slack: int | None = None) -> str:
    """Clearly fewer frames than expected (by default: than a header declares), or what the scan found damaged."""
    slack = max(2, (expected or 0) // 50) if slack is None else slack
    said = [f"decoded {decoded} of {expected} frames"] if expected and expected - decoded > slack else []
    said += [damage] if damage else []
    return "; ".join(said) + ": damaged file?" if said else ""


def sample_clip(path: str | os.PathLike, num_frames: int, decoder: str = "auto", start: float | None = None,
                end: float | None = None, device: str = "cpu", clip_frames: int = 1, clip_fps: float | None = None) -> Clip:
    """Frames at the segment centres of the video or of [start, end) s (clips of clip_frames at clip_fps there), alike
    from any decoder: what the one asked for cannot decode faithfully goes to PyAV; device "cuda..." decodes with
    NVDEC where it can."""
    import av

    # the decoders' own errors and the file system's (a file gone or unreadable); anything else is a bug: it crashes
    unreadable = (av.error.FFmpegError, _DecoderFailed, FileNotFoundError, PermissionError)
    path = str(path)
    found = scan(path)
    window = _window(found, start, end)
    sampling = (num_frames, clip_frames, found.fps / clip_fps if found.fps and clip_fps else 1.0)
    wanted = [window[0] + i for i in frame_indices(window[1] - window[0], *sampling)]
    gpu = decode_device(device, found.codec)
    errors = []
    for name in _decoder_order(decoder, found, gpu):
        try:
            frames = DECODE[name](path, found, wanted, gpu if name == "torchcodec" else "cpu")
        except unreadable as error:
            errors.append(f"{name}: {_first_line(error)}")
            if name == "torchcodec" and gpu != "cpu":
                _note(f"torchcodec could not decode {found.codec} on {gpu} ({_first_line(error)}): "
                      "decoding on the CPU")
            continue
        if frames.shape != (len(wanted), found.height, found.width, 3):
            errors.append(f"{name}: frames of shape {frames.shape[1:]}")
            continue
        warning = _damage_warning(found.frame_count, found.declared_frames, found.damage)
        return Clip(frames, wanted, found.rotation, found.frame_count, found.declared_frames, name, warning)
    try:  # sparse decoding ran out of frames: count what really decodes
        frames, wanted, count = _decode_pyav_whole(path, found, sampling, window)
    except unreadable as error:
        raise VideoError("; ".join([*errors, f"PyAV: {_first_line(error)}"])) from None
    warning = (_damage_warning(count, found.declared_frames, "")
               and _damage_warning(count, found.declared_frames, found.damage)
               or _damage_warning(count, found.frame_count, found.damage, slack=0))
    return Clip(frames, wanted, found.rotation, count, found.declared_frames, "pyav", warning)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__
