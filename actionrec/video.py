"""Open a video, choose which frames to sample, decode them to upright uint8 RGB arrays.

One demux pass with PyAV (no decoding) finds what every decoder then agrees on: the frames
that exist (packets, in presentation order), the keyframes a decoder can start from, the
rotation of the display matrix, and what the header declares. The sampled indices come from
that count, so decord, PyAV and torchcodec give the same indices and the same pixels
(docs/decoding.md); the decoder only changes speed. PyAV is the reference: it seeks to the
keyframe before each sampled frame and decodes forward only as far as needed, and decodes
the whole file (counting what really decodes) only when a sparse decode fails on a damaged
file. Files that are not videos (text, still images, audio with cover art) are refused
before decoding: FFmpeg reads a text file as "ANSI art" video and a JPEG as a one-frame
video, and a model would classify them with confidence.
"""
from __future__ import annotations

import functools
import os
import sys
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np

DECODERS = ("auto", "decord", "pyav", "torchcodec")
# `auto` tries these in this order: fastest first, as bench/decode.py measured them
# (docs/decoding.md). PyAV always loads; decoders after it serve only as explicit choices.
AUTO_ORDER = ("pyav", "torchcodec", "decord")
# codecs torchcodec decodes with NVDEC (its CUDA interface); others decode on the CPU
NVDEC_CODECS = frozenset({"h264", "hevc", "av1", "vp9", "vp8", "mpeg4"})
FFMPEG_INSTALL = "Debian/Ubuntu: apt-get install ffmpeg; macOS: brew install ffmpeg"


class VideoError(Exception):
    """A file that is not a video or that no decoder could read; the message says why and
    never contains the path (callers add it)."""


class Clip(NamedTuple):
    frames: np.ndarray            # uint8 [T, H, W, 3], upright RGB
    indices: list[int]            # the sampled frame indices (presentation order)
    rotation: int                 # clockwise degrees (0, 90, 180, 270) applied to make frames upright
    frame_count: int              # frames the indices were drawn from (demuxed, or decoded when damaged)
    declared_frames: int | None   # what the container header declares, if anything
    decoder: str                  # "decord" | "pyav" | "torchcodec": the one that produced the frames
    warning: str                  # "" or e.g. "decoded 60 of 150 frames: damaged file?"


def frame_indices(num_available: int, num_frames: int) -> list[int]:
    """TSN-style segment centres: split the clip into num_frames equal segments, take each
    middle frame. Short clips repeat frames deterministically, in order."""
    if num_available < 1:
        raise VideoError("the video has no frames")
    return [min(int((i + 0.5) * num_available / num_frames), num_available - 1)
            for i in range(num_frames)]


# ---------------------------------------------------------------- what the demuxer says

NOT_VIDEO_FORMATS = {"tty": "a text file", "image2": "a still image", "image2pipe": "a still image"}
NOT_VIDEO_CODECS = {"ansi", "bintext", "xbin", "idf", "text", "subrip", "ass"}


class Scan(NamedTuple):
    """One demux pass over the video stream (no decoding beyond the first frame)."""
    stream_index: int
    format: str
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

    def keyframe_before(self, position: int) -> int:
        return self.keyframes[int(np.searchsorted(self.keyframes, position, side="right")) - 1]


def _ffmpeg_reason(error: Exception) -> str:
    """FFmpeg's reason without the file name it appends (messages must hold no path)."""
    reason = getattr(error, "strerror", None) or _first_line(error)
    return str(reason).split(": '")[0]


def _check_path(path: str) -> None:
    if os.path.isdir(path):
        raise VideoError("is a directory; use --csv for a folder")
    if not os.path.isfile(path):
        raise VideoError("no such file")
    if os.path.getsize(path) == 0:
        raise VideoError("the file is empty (0 bytes)")


def _display_rotation(frame) -> int:
    """Clockwise degrees that turn this frame upright: FFmpeg's display matrix rotation is
    counter-clockwise (what the `ffmpeg` command's autorotate undoes), rounded to 90."""
    angle = getattr(frame, "rotation", 0) or 0
    return int(round(-angle / 90.0)) % 4 * 90


def scan(path: str | os.PathLike) -> Scan:
    """Refuse what is not a video, then demux the video stream once: VideoError with a
    one-line reason otherwise."""
    import av

    path = str(path)
    _check_path(path)
    try:
        container = av.open(path)
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
        declared = stream.frames or None
        fps = float(stream.average_rate) if stream.average_rate else None
        time_base = float(stream.time_base) if stream.time_base else None
        width, height = stream.codec_context.width, stream.codec_context.height
        index = stream.index  # read while the container is open
    count = len(pts)
    if count == 0:
        raise VideoError(f"the video has no frames that demux ({demux_error or 'empty stream'})")
    if count == 1:
        raise VideoError(f"not a video: a still image (one frame, {codec} in {kind.split(',')[0]})")
    rotation = _display_rotation(first_frame) if first_frame is not None else 0
    damage = [f"demuxing stopped early ({demux_error})"] if demux_error else []
    if first_frame is None:  # the rotation rides on a decoded frame: say it is a guess
        damage.append("no frame of the first 64 packets decodes, so its rotation is unknown (taken as upright)")
    if rotation in (90, 270):
        width, height = height, width
    times, keyframes, seek_points = _presentation(pts, dts, key, time_base, fps)
    reordered = any(a is not None and b is not None and b < a for a, b in zip(pts, pts[1:]))
    return Scan(index, kind, codec, width, height, fps, rotation, declared, times,
                keyframes, seek_points, "; ".join(damage), reordered)


def _presentation(pts: list, dts: list, key: list, time_base: float | None, fps: float | None):
    """Frame times in presentation order, and the keyframes a decoder can start from.

    With timestamps, presentation order is the order of packet pts. A keyframe at decode
    position k is a clean start when every earlier packet shows before it and every later
    one after it (no open-GOP frames that need the previous group): then decoding from it
    yields frames k, k+1, ... in order. Without timestamps only the start is clean."""
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
    seek_points = {k: (pts[k], dts[k]) for k in positions}
    return times, positions, seek_points


def probe(path: str | os.PathLike) -> dict:
    """What the demuxer says, without decoding the video: frame_count (frames that demux),
    fps, duration (s), rotation (clockwise degrees applied to make frames upright),
    declared_frames (header), codec, width and height (upright)."""
    found = scan(path)
    duration = None
    if found.fps:
        duration = float(found.times[-1]) + 1.0 / found.fps
    return {"frame_count": found.frame_count, "fps": found.fps, "duration": duration,
            "rotation": found.rotation, "declared_frames": found.declared_frames, "codec": found.codec,
            "width": found.width, "height": found.height}


# ---------------------------------------------------------------- which decoders load


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


@functools.cache
def load_error(name: str) -> str | None:
    """None when decoder `name` loads here; "" when it is not installed (decord has no wheel
    on macOS or Linux aarch64); else why it is installed but cannot load."""
    if name == "pyav":
        return None
    try:
        if name == "decord":
            import decord  # noqa: F401
        elif name == "torchcodec":
            import torchcodec
            if getattr(torchcodec, "ffmpeg_major_version", 0) is None:
                return "FFmpeg's shared libraries (versions 4 to 9) are not installed"
    except ModuleNotFoundError as error:
        if error.name == name:
            return ""
        return _first_line(error)
    except Exception as error:  # torchcodec before 0.5 raises on import without FFmpeg
        return _first_line(error)
    return None


@functools.cache
def _note(message: str) -> None:
    """One line on stderr, once per process (and per message)."""
    print(f"note: {message}", file=sys.stderr)


def available_decoders(*names_to_check: str) -> list[str]:
    """The decoders `auto` tries on this machine, in order; a decoder installed but unable to
    load (torchcodec without FFmpeg) is left out with one line on stderr. With names, only
    those are loaded and checked (importing torchcodec takes seconds)."""
    names = []
    for name in [n for n in AUTO_ORDER if not names_to_check or n in names_to_check]:
        reason = load_error(name)
        if reason:
            _note(f"decoder {name} cannot load ({reason}): decoding without it; to use it, "
                  f"install FFmpeg ({FFMPEG_INSTALL})")
        if reason is None:
            names.append(name)
    return names


def decord_available() -> bool:
    return load_error("decord") is None


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
    if decoder == "torchcodec" and not reason:
        return f"{key} is torchcodec but it is not installed: pip install torchcodec, or set {key}: auto"
    return (f"{key} is {decoder} but it cannot load ({reason}): install FFmpeg ({FFMPEG_INSTALL}), "
            f"or set {key}: auto")


def decode_device(device: str, codec: str) -> str:
    """"cuda..." to decode with torchcodec on the GPU (NVDEC) when the features run on CUDA,
    torchcodec loads and NVDEC handles the codec; "cpu" otherwise (one line says why)."""
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
    if decoder not in DECODERS:
        raise VideoError(f"unknown decoder {decoder!r}: use one of {', '.join(DECODERS)}")
    if decoder == "auto":  # none after PyAV is needed: PyAV reads whatever they read
        order = available_decoders(*AUTO_ORDER[:AUTO_ORDER.index("pyav") + 1])
    else:
        problem = unavailable_decoder(decoder)
        if problem:
            raise VideoError(problem)
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


class _DecodedShort(Exception):
    """The decoder ran out of frames before a sampled one: a damaged file."""


def _upright(frame: np.ndarray, rotation: int) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(frame, k=-rotation // 90)) if rotation else frame


def _decode_pyav(path: str, found: Scan, wanted: list[int], device: str = "cpu") -> np.ndarray:
    """The sampled frames by seeking: to the clean keyframe before each wanted frame when
    that skips frames, then decoding forward only as far as needed."""
    import av

    picked: dict[int, np.ndarray] = {}
    targets = sorted(set(wanted))
    with av.open(path) as container:
        stream = _stream(container, found)
        codec = stream.codec_context
        codec.thread_count = 1  # one thread per video, as decord and torchcodec here: workers parallelise
        position, frames = _frames_from(container, stream, codec, None)

        for target in targets:
            start = found.keyframe_before(target)
            if start > position:  # a seek skips the frames in between
                position, frames = _frames_from(container, stream, codec, found, start)
            while position <= target:
                frame = next(frames, None)
                if frame is None:
                    raise _DecodedShort(f"PyAV decoded {position} frames, frame {target} is missing")
                if position in wanted:
                    picked[position] = _upright(frame.to_ndarray(format="rgb24"), found.rotation)
                position += 1
    return np.stack([picked[i] for i in wanted])


def _frames_from(container, stream, codec, found: Scan | None, start: int = 0):
    """Decoded frames from keyframe position `start` (the file's start when found is None),
    as (position of the first frame, frames)."""
    packets = container.demux(stream)
    if found is not None:
        packets, start = _seek(container, stream, codec, found, start)
    return start, _decoded(codec, packets)


def _seek(container, stream, codec, found: Scan, start: int):
    """Seek to the clean keyframe at `start`; demuxers differ in which timestamp they seek
    by (MP4: pts, AVI: dts), so try both and accept any clean keyframe up to `start`."""
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
            return _chain([first], packets), landed
    raise _DecodedShort("PyAV's seek landed on no known keyframe")


def _decoded(codec, packets):
    import av

    try:
        for packet in packets:
            if packet.size:
                yield from codec.decode(packet)
        yield from codec.decode(None)
    except av.error.FFmpegError:
        return  # damaged data: the caller sees fewer frames than it needs


def _stream(container, found: Scan):
    return container.streams[found.stream_index]


def _chain(first: list, rest):
    yield from first
    yield from rest


def _decode_decord(path: str, found: Scan, wanted: list[int], device: str = "cpu") -> np.ndarray:
    import decord

    with _native_stderr_silenced():
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
        if len(reader) != found.frame_count:  # its frame numbers would be other frames
            raise _DecodedShort(f"decord counts {len(reader)} frames, the demuxer {found.frame_count}")
        frames = reader.get_batch(wanted).asnumpy()
    return frames


def _decode_torchcodec(path: str, found: Scan, wanted: list[int], device: str = "cpu") -> np.ndarray:
    from torchcodec.decoders import VideoDecoder

    reader = VideoDecoder(path, stream_index=found.stream_index, dimension_order="NHWC",
                          num_ffmpeg_threads=1, seek_mode="exact", device=device)
    if reader.metadata.num_frames != found.frame_count:
        raise _DecodedShort(f"torchcodec counts {reader.metadata.num_frames} frames, "
                            f"the demuxer {found.frame_count}")
    unique = sorted(set(wanted))
    batch = reader.get_frames_at(unique).data.cpu().numpy()
    return batch[[unique.index(i) for i in wanted]]


DECODE = {"pyav": _decode_pyav, "decord": _decode_decord, "torchcodec": _decode_torchcodec}


def _decode_pyav_whole(path: str, found: Scan, num_frames: int, window: tuple[int, int],
                       ) -> tuple[np.ndarray, list[int], int]:
    """A damaged file: count the frames that really decode, then sample those (two passes)."""
    import av

    def decoded(container):
        stream = _stream(container, found)
        stream.codec_context.thread_count = 1
        try:
            yield from container.decode(stream)
        except av.error.FFmpegError:
            return  # keep what decoded before the damage

    with av.open(path) as container:
        count = sum(1 for _ in decoded(container))
    first, stop = window[0], min(window[1], count)
    if stop <= first:
        raise VideoError(f"only {count} frames decode: none in the requested window (damaged file?)")
    wanted = [first + i for i in frame_indices(stop - first, num_frames)]
    picked: dict[int, np.ndarray] = {}
    with av.open(path) as container:
        for i, frame in enumerate(decoded(container)):
            if i in wanted:
                picked[i] = _upright(frame.to_ndarray(format="rgb24"), found.rotation)
            if i >= wanted[-1]:
                break
    return np.stack([picked[i] for i in wanted]), wanted, count


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
    """Clearly fewer frames than expected (by default: than a header declares), or what the
    scan found damaged: a cut or damaged file."""
    slack = max(2, (expected or 0) // 50) if slack is None else slack
    said = [f"decoded {decoded} of {expected} frames"] if expected and expected - decoded > slack else []
    said += [damage] if damage else []
    return "; ".join(said) + ": damaged file?" if said else ""


@functools.cache
def _unreadable_errors() -> tuple[type[Exception], ...]:
    """What the decoders raise on a file they cannot read; anything else is a bug, and crashes."""
    import av

    errors = (av.error.FFmpegError, RuntimeError, ValueError, OSError, EOFError, _DecodedShort)
    if decord_available():
        from decord._ffi.base import DECORDError  # a plain Exception

        errors += (DECORDError,)
    return errors


def sample_clip(path: str | os.PathLike, num_frames: int, decoder: str = "auto",
                start: float | None = None, end: float | None = None, device: str = "cpu") -> Clip:
    """num_frames upright RGB frames at the segment centres of the video (or of the frames
    shown within [start, end) seconds), the same whichever decoder produced them.

    decoder: auto (the fastest that loads here, docs/decoding.md), or one to prefer; a file
    it cannot decode faithfully (decord and rotation) or at all goes to PyAV, the reference.
    device: where the features run; "cuda..." decodes with torchcodec on the GPU where NVDEC
    handles the codec. VideoError (no path in the message) when nothing can read it."""
    unreadable = _unreadable_errors()
    path = str(path)
    found = scan(path)
    window = _window(found, start, end)
    wanted = [window[0] + i for i in frame_indices(window[1] - window[0], num_frames)]
    gpu = decode_device(device, found.codec)
    errors = []
    for name in _decoder_order(decoder, found, gpu):
        try:
            frames = DECODE[name](path, found, wanted, gpu if name == "torchcodec" else "cpu")
        except unreadable as error:  # decord and torchcodec raise their own RuntimeErrors
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
        frames, wanted, count = _decode_pyav_whole(path, found, num_frames, window)
    except VideoError:
        raise
    except unreadable as error:
        raise VideoError("; ".join([*errors, f"PyAV: {_first_line(error)}"])) from None
    warning = (_damage_warning(count, found.declared_frames, "") and _damage_warning(count, found.declared_frames, found.damage)
               or _damage_warning(count, found.frame_count, found.damage, slack=0))
    return Clip(frames, wanted, found.rotation, count, found.declared_frames, "pyav", warning)


def sample_frames(path: str | os.PathLike, num_frames: int, decoder: str = "auto",
                  ) -> tuple[np.ndarray, list[int]]:
    """num_frames sampled frames of a video as uint8 [T, H, W, 3] and their indices;
    VideoError if the file is not a video or no decoder could read it."""
    clip = sample_clip(path, num_frames, decoder)
    return clip.frames, clip.indices


def read_frames(path: str | os.PathLike, num_frames: int, decoder: str = "auto") -> np.ndarray:
    """num_frames sampled frames of a video as uint8 [T, H, W, 3]; VideoError if unreadable."""
    return sample_clip(path, num_frames, decoder).frames


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__
