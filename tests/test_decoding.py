"""The decoding contract (docs/decoding.md): sample_clip returns upright RGB frames at the
segment centres of the frames that exist, the same from every decoder; PyAV seeks instead
of decoding everything; what is not a video is refused; a damaged file says so."""
from __future__ import annotations

import importlib
import os
import sys
import types

import av
import numpy as np
import pytest

import actionrec.video as video
from actionrec.video import Clip, VideoError, frame_indices, probe, sample_clip
from tests.conftest import (encode_video, numbered_frames, rotated_video, tiny_video,
                            vfr_video, white_corner)

OTHER_DECODERS = ["decord", "torchcodec"]


def needs(decoder: str) -> None:
    """Skip where `decoder` cannot load here, except under CI, where `make test` installs it."""
    reason = video.load_error(decoder)
    if reason is None:
        return
    message = f"{decoder} cannot load here: {reason or 'not installed'}"
    if os.environ.get("CI") == "true" and not (decoder == "decord" and reason == ""):
        pytest.fail(f"{message}; under CI this test must run (make test installs FFmpeg)")
    pytest.skip(message)


def full_decode(path) -> list[np.ndarray]:
    """Every frame, decoded in order from the start: the reference."""
    with av.open(str(path)) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    return frames


def long_clip(path):
    """1500 frames (a minute at 25 fps) with a keyframe every 25."""
    return encode_video(path, numbered_frames(1500, 32, 24), gop=25)


def h264_b_frames(path):
    return encode_video(path, numbered_frames(120), codec="libx264", gop=30, b_frames=2)


def mpeg4_b_frames(path):
    return encode_video(path.with_suffix(".avi"), numbered_frames(60), gop=12, b_frames=2)


def truncated_ucf(path, real_clips):
    data = real_clips["v_ApplyEyeMakeup_g01_c01.avi"].read_bytes()
    path = path.with_suffix(".avi")
    path.write_bytes(data[: int(len(data) * 0.4)])
    return path


def bt709(path):
    return encode_video(path, [colour_bars()] * 6, codec="libx264", colorspace=1, color_range=1)


def full_range(path):
    return encode_video(path, [colour_bars()] * 6, codec="libx264", pix_fmt="yuvj420p", color_range=2)


def colour_bars() -> np.ndarray:
    image = np.zeros((48, 64, 3), np.uint8)
    for i, colour in enumerate([(200, 40, 30), (30, 200, 60), (20, 50, 220), (230, 220, 40)]):
        image[:, 16 * i:16 * (i + 1)] = colour
    return image


FIXTURES = {
    "tiny": lambda p, _: tiny_video(p.with_suffix(".avi"), frames=20),
    "long": lambda p, _: long_clip(p),
    "vfr": lambda p, _: vfr_video(p),
    "h264_b_frames": lambda p, _: h264_b_frames(p),
    "mpeg4_b_frames": lambda p, _: mpeg4_b_frames(p),
    "ucf101": lambda p, clips: clips["v_ApplyEyeMakeup_g01_c01.avi"],
    "kinetics_h264": lambda p, clips: clips["kinetics_arm_wrestling.mp4"],
    "short_h264": lambda p, clips: clips["short_32_frames.mp4"],
    "truncated_ucf101": lambda p, clips: truncated_ucf(p, clips),
    "rotated_90": lambda p, _: rotated_video(p, 90),
    "bt709": lambda p, _: bt709(p),
    "full_range": lambda p, _: full_range(p),
}


@pytest.mark.parametrize("name", ["tiny", "long", "vfr", "h264_b_frames", "mpeg4_b_frames", "ucf101",
                                  "kinetics_h264", "short_h264"])
def test_sparse_pyav_gives_the_indices_and_pixels_of_a_full_decode(tmp_path, real_clips, name):
    path = FIXTURES[name](tmp_path / "v.mp4", real_clips)
    reference = full_decode(path)
    found = video.scan(path)
    assert found.frame_count == len(reference)  # counted by the demuxer, no decoding
    wanted = frame_indices(len(reference), 16)
    frames = video._decode_pyav(str(path), found, wanted)  # no fallback can hide a miss here
    assert np.array_equal(frames, np.stack([reference[i] for i in wanted]))
    clip = sample_clip(path, 16, "pyav")
    assert clip.indices == wanted and clip.decoder == "pyav" and clip.warning == ""


@pytest.mark.parametrize("segments,clip_frames", [(16, 1), (4, 16)])
def test_a_long_video_is_not_decoded_whole(tmp_path, monkeypatch, segments, clip_frames):
    """16 frames of 1500 with a keyframe every 25: at most a group of frames per sample; 4 clips of 16 frames
    at 15 frames/s (a video backbone's): at most a group of frames and the clip's span per clip."""
    path = long_clip(tmp_path / "long.mp4")
    decoded = []
    real = video._decoded

    def counting(codec, packets):
        for frame in real(codec, packets):
            decoded.append(frame)
            yield frame

    monkeypatch.setattr(video, "_decoded", counting)
    clip = sample_clip(path, segments, "pyav", clip_frames=clip_frames, clip_fps=15)
    assert clip.frame_count == 1500 and clip.decoder == "pyav"
    assert clip.indices == frame_indices(1500, segments, clip_frames, 25 / 15)
    span = clip.indices[clip_frames - 1] - clip.indices[0]  # 25 frames for 16 at 15 of 25 frames/s
    assert len(decoded) <= segments * (25 + span), f"decoded {len(decoded)} frames for {len(clip.indices)}"


def test_open_gop_keyframes_are_not_seek_points():
    """A keyframe after which a packet still shows earlier (open GOP) is no clean start."""
    pts = [0, 2, 1, 3, 6, 4, 5, 7, 9, 8]  # decode order; B-frames 4 and 5 follow keyframe 6
    key = [True, False, False, True, True, False, False, True, False, False]
    times, keyframes, _ = video._presentation(pts, list(range(10)), key, 0.04, 25.0)
    assert keyframes == [0, 3, 7]
    assert np.allclose(times, np.arange(10) * 0.04)


@pytest.mark.parametrize("decoder", OTHER_DECODERS)
@pytest.mark.parametrize("name", list(FIXTURES))
def test_every_decoder_gives_the_frames_pyav_gives(tmp_path, real_clips, decoder, name):
    """Same indices, frame count, rotation, warning and pixels; where a decoder cannot decode
    a file faithfully (decord: rotation; both: MPEG-4 part 2 with B-frames, where they return
    neighbouring frames) PyAV decodes it, and the clip says so."""
    needs(decoder)
    path = FIXTURES[name](tmp_path / "v.mp4", real_clips)
    reference = sample_clip(path, 16, "pyav")
    clip = sample_clip(path, 16, decoder)
    assert clip.indices == reference.indices
    assert (clip.frame_count, clip.declared_frames, clip.rotation, clip.warning) == \
           (reference.frame_count, reference.declared_frames, reference.rotation, reference.warning)
    assert np.array_equal(clip.frames, reference.frames)
    routed_to_pyav = name in ("mpeg4_b_frames", "ucf101", "truncated_ucf101") or \
        (decoder == "decord" and name == "rotated_90")
    assert clip.decoder == ("pyav" if routed_to_pyav else decoder)


@pytest.mark.parametrize("degrees,corner", [(90, "TR"), (180, "BR"), (270, "BL")])
@pytest.mark.parametrize("decoder", ["pyav", *OTHER_DECODERS])
def test_a_rotated_phone_video_comes_out_upright(tmp_path, decoder, degrees, corner):
    """As the `ffmpeg` command shows it: turned clockwise by the display matrix's rotation."""
    if decoder != "pyav":
        needs(decoder)
    path = rotated_video(tmp_path / "phone.mp4", degrees)
    clip = sample_clip(path, 4, decoder)
    shape = (48, 64) if degrees == 180 else (64, 48)
    assert clip.frames.shape == (4, *shape, 3) and clip.rotation == degrees
    assert all(white_corner(frame) == corner for frame in clip.frames)
    assert probe(path)["rotation"] == degrees and (probe(path)["height"], probe(path)["width"]) == shape


def expected_rgb(y: float, u: float, v: float, matrix: str, full: bool) -> np.ndarray:
    """YUV -> RGB by the book (ITU-R BT.601 or BT.709, limited or full range)."""
    kr, kb = {"601": (0.299, 0.114), "709": (0.2126, 0.0722)}[matrix]
    if full:
        y, u, v = y, u - 128, v - 128
    else:
        y, u, v = (y - 16) * 255 / 219, (u - 128) * 255 / 224, (v - 128) * 255 / 224
    r, b = y + 2 * (1 - kr) * v, y + 2 * (1 - kb) * u
    g = (y - kr * r - kb * b) / (1 - kr - kb)
    return np.array([r, g, b])


@pytest.mark.parametrize("name,matrix,full", [("bt709", "709", False), ("full_range", "601", True)])
@pytest.mark.parametrize("decoder", ["pyav", *OTHER_DECODERS])
def test_colour_follows_the_stream_tags(tmp_path, real_clips, decoder, name, matrix, full):
    """A BT.709-tagged and a full-range (yuvj420p, color_range=pc) clip: every decoder applies
    the matrix and range the stream declares (the untagged default is BT.601 limited)."""
    if decoder != "pyav":
        needs(decoder)
    path = FIXTURES[name](tmp_path / "v.mp4", real_clips)
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        planes = [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:p.height, :p.width]
                  for p in frame.planes]
    clip = sample_clip(path, 4, decoder)
    for column in (8, 24, 40, 56):  # the middle of each colour bar
        yuv = [float(planes[0][24, column]), float(planes[1][12, column // 2]), float(planes[2][12, column // 2])]
        want = expected_rgb(*yuv, matrix, full)
        assert np.abs(clip.frames[0, 24, column].astype(float) - want).max() <= 2.5, (column, want)
        wrong = expected_rgb(*yuv, "601" if matrix == "709" else "709", full) if not full else \
            expected_rgb(*yuv, matrix, False)
        assert np.abs(wrong - want).max() > 6  # the fixture tells the conversions apart


def test_a_cut_file_gets_its_frames_and_a_warning(real_clips, tmp_path):
    """UCF-101 clip cut at 40%: the header says 164 frames, 61 demux; sampled from those 61."""
    path = truncated_ucf(tmp_path / "cut", real_clips)
    clip = sample_clip(path, 16)
    assert (clip.frame_count, clip.declared_frames) == (61, 164)
    assert clip.indices == frame_indices(61, 16) and clip.frames.std() > 5
    assert clip.warning == "decoded 61 of 164 frames: damaged file?"
    assert sample_clip(real_clips["v_ApplyEyeMakeup_g01_c01.avi"], 16).warning == ""


def test_pyav_decodes_from_the_start_when_a_sparse_decode_runs_short(tmp_path, monkeypatch):
    """Fewer frames decode than demux (damage the demuxer cannot see): PyAV counts the frames
    that really decode, from the start, and samples those."""
    path = tiny_video(tmp_path / "v.avi", frames=20)
    reference = full_decode(path)
    real = video._decoded

    def lose_the_tail(codec, packets):  # as if the packets after frame 14 did not decode
        for i, frame in enumerate(real(codec, packets)):
            if i < 15:
                yield frame

    monkeypatch.setattr(video, "_decoded", lose_the_tail)
    clip = sample_clip(path, 4, "pyav")
    assert clip.decoder == "pyav" and clip.indices == frame_indices(20, 4)
    assert np.array_equal(clip.frames, np.stack([reference[i] for i in clip.indices]))


@pytest.mark.parametrize("error", [ValueError, RuntimeError])
def test_a_bug_in_the_decode_path_is_a_traceback_not_a_broken_video(tmp_path, monkeypatch, error):
    """Only the decoders' own errors make a broken video: a ValueError or RuntimeError that our code
    raises while PyAV decodes (a bad reshape, say) propagates, as any bug does."""
    path = tiny_video(tmp_path / "v.avi", frames=8)

    def bad_reshape(frame, found):
        raise error("cannot reshape array of size 9216 into shape (48,64,4)")

    monkeypatch.setattr(video, "_upright", bad_reshape)
    with pytest.raises(error, match="cannot reshape"):
        sample_clip(path, 4, "pyav")


def test_a_stream_whose_frame_size_changes_is_a_broken_video_not_a_crash(tmp_path):
    """Two MPEG-TS files of different sizes, concatenated (as a stream that changes resolution):
    a one-line VideoError (numpy's ValueError from stacking the frames is no longer taken as one)."""
    first = encode_video(tmp_path / "a.ts", numbered_frames(20, 64, 48), codec="mpeg2video")
    second = encode_video(tmp_path / "b.ts", numbered_frames(20, 96, 64), codec="mpeg2video")
    path = tmp_path / "both.ts"
    path.write_bytes(first.read_bytes() + second.read_bytes())
    with pytest.raises(VideoError, match=r"the frame size changes within the stream \(64x48, then 96x64\)"):
        sample_clip(path, 8)


@pytest.mark.parametrize("decoder,module,reader,method", [("decord", "decord", "VideoReader", "get_batch"),
                                                          ("torchcodec", "torchcodec.decoders", "VideoDecoder",
                                                           "get_frames_at")])
def test_decord_and_torchcodec_errors_on_a_damaged_file_go_to_pyav_and_a_bug_crashes(
        real_clips, monkeypatch, decoder, module, reader, method):
    """Both raise plain RuntimeErrors for a bad file: raised inside their package, that is the
    decoder's verdict (PyAV, the reference, then decodes what it can); the same RuntimeError
    from the code that calls them (here: a stand-in for their method) is a bug, and crashes."""
    needs(decoder)
    path = real_clips["kinetics_arm_wrestling.mp4"]
    data = bytearray(path.read_bytes())
    third = len(data) // 3
    data[third:2 * third] = np.random.default_rng(0).integers(0, 256, third, np.uint8).tobytes()
    path.write_bytes(bytes(data))
    found = video.scan(path)
    with pytest.raises(video._DecoderFailed):  # their own error, on the file
        video.DECODE[decoder](str(path), found, frame_indices(found.frame_count, 16))
    clip = sample_clip(path, 16, decoder)
    assert clip.decoder == "pyav" and clip.warning == "decoded 80 of 280 frames: damaged file?"

    def bug(*args, **kwargs):
        raise RuntimeError("expected a 4-d tensor")

    monkeypatch.setattr(getattr(importlib.import_module(module), reader), method, bug)
    with pytest.raises(RuntimeError, match="expected a 4-d tensor"):
        sample_clip(path, 16, decoder)


@pytest.mark.parametrize("make,reason", [
    ("one.gif", "a still image"),
    ("one.mp4", "a still image (one frame"),
    ("still.webp", "a still image"),
    ("one.apng", "a still image"),
    ("cover.mp3", "audio with cover art"),
])
def test_still_images_and_cover_art_are_refused(tmp_path, make, reason):
    path = tmp_path / make
    make_not_a_video(path)
    with pytest.raises(VideoError, match=reason.replace("(", r"\(")) as error:
        sample_clip(path, 16)
    assert str(tmp_path) not in str(error.value)


def test_an_animated_gif_is_a_video(tmp_path):
    from PIL import Image

    frames = [Image.fromarray(np.full((20, 20, 3), 60 * i, np.uint8)) for i in range(3)]
    frames[0].save(tmp_path / "three.gif", save_all=True, append_images=frames[1:], duration=40)
    clip = sample_clip(tmp_path / "three.gif", 3)
    assert clip.frame_count == 3 and np.all(np.diff(clip.frames.mean(axis=(1, 2, 3))) > 30)


def make_not_a_video(path):
    from PIL import Image

    picture = np.zeros((32, 32, 3), np.uint8)
    if path.suffix in (".gif", ".webp"):
        Image.fromarray(picture).save(path)
    elif path.suffix == ".apng":
        encode_video(path, [picture], codec="apng", pix_fmt="rgb24")
    elif path.suffix == ".mp4":
        encode_video(path, [picture])
    else:  # MP3 with a cover picture (an attached_pic stream)
        with av.open(str(path), "w") as container:
            audio = container.add_stream("mp3", rate=22050)
            cover = container.add_stream("png")
            cover.width, cover.height, cover.pix_fmt = 32, 32, "rgb24"
            cover.disposition = av.stream.Disposition.attached_pic
            for packet in [*cover.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")), *cover.encode()]:
                container.mux(packet)
            sound = av.AudioFrame.from_ndarray(np.zeros((1, 1152 * 20), np.float32), format="fltp", layout="mono")
            sound.sample_rate = 22050
            for packet in [*audio.encode(sound), *audio.encode()]:
                container.mux(packet)


def test_a_directory_and_a_missing_file_say_so_without_the_path(tmp_path):
    with pytest.raises(VideoError, match=r"^is a directory; use --csv for a folder$"):
        sample_clip(tmp_path, 16)
    with pytest.raises(VideoError, match=r"^no such file$"):
        sample_clip(tmp_path / "missing.mp4", 16)


def test_a_window_samples_only_the_frames_shown_in_it(tmp_path):
    path = tiny_video(tmp_path / "v.avi", frames=40)  # 25 fps: frame i at 0.04 * i s
    clip = sample_clip(path, 4, start=0.4, end=0.8)
    assert clip.indices == [11, 13, 16, 18] and clip.frame_count == 40
    levels = clip.frames.mean(axis=(1, 2, 3))
    assert np.allclose(levels, [min(10 * i, 255) for i in clip.indices], atol=4)
    # frames 2, 3, 4 show at 0.09, 0.16 and 0.18 s; 5 at 0.25 s
    vfr = sample_clip(vfr_video(tmp_path / "vfr.mp4"), 2, start=0.09, end=0.2)
    assert vfr.indices == [2, 4]
    with pytest.raises(VideoError, match="no frames between 5 s and 6 s"):
        sample_clip(path, 4, start=5, end=6)


def test_probe_reads_the_header_without_decoding(real_clips):
    info = probe(real_clips["kinetics_arm_wrestling.mp4"])
    assert info == {"frame_count": 280, "fps": 28.0, "duration": pytest.approx(10.0), "rotation": 0,
                    "declared_frames": 280, "codec": "h264", "width": 340, "height": 256}


def test_clip_fields(real_clips):
    clip = sample_clip(real_clips["short_32_frames.mp4"], 8)
    assert isinstance(clip, Clip) and clip._fields == (
        "frames", "indices", "rotation", "frame_count", "declared_frames", "decoder", "warning")
    assert clip.frames.dtype == np.uint8 and clip.frames.shape == (8, 256, 340, 3)


@pytest.fixture
def torchcodec_without_ffmpeg(monkeypatch):
    """torchcodec installed, FFmpeg's libraries missing: it imports, ffmpeg_major_version is None."""
    monkeypatch.setitem(sys.modules, "torchcodec", types.SimpleNamespace(ffmpeg_major_version=None))
    caches = (video.load_error, video._note)  # a test may monkeypatch these names
    for cache in caches:
        cache.cache_clear()
    yield
    for cache in caches:  # the real torchcodec loads again in later tests
        cache.cache_clear()


def test_auto_moves_on_with_one_line_where_torchcodec_cannot_load(tmp_path, monkeypatch, capsys,
                                                                  torchcodec_without_ffmpeg):
    monkeypatch.setattr(video, "AUTO_ORDER", ("torchcodec", "pyav", "decord"))
    path = tiny_video(tmp_path / "v.avi", frames=8)
    assert "torchcodec" not in video.available_decoders()
    assert sample_clip(path, 4).decoder == "pyav"
    sample_clip(path, 4)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("note: decoder torchcodec cannot load (FFmpeg")


def test_asking_for_torchcodec_without_ffmpeg_names_the_key_and_the_install(tmp_path, torchcodec_without_ffmpeg):
    with pytest.raises(VideoError) as error:
        sample_clip(tiny_video(tmp_path / "v.avi", frames=8), 4, "torchcodec")
    message = str(error.value)
    assert message.startswith("runtime.decoder is torchcodec but it cannot load (FFmpeg")
    assert "apt-get install ffmpeg" in message and "brew install ffmpeg" in message
    assert video.unavailable_decoder("torchcodec") == message


def test_gpu_decoding_is_chosen_only_where_nvdec_can_do_it(monkeypatch, capsys, torchcodec_without_ffmpeg):
    assert video.decode_device("cpu", "h264") == "cpu"
    assert video.decode_device("cuda", "h264") == "cpu"  # torchcodec cannot load here
    assert "GPU decoding needs torchcodec" in capsys.readouterr().err
    monkeypatch.setattr(video, "load_error", lambda name: None)
    assert video.decode_device("cuda:0", "h264") == "cuda:0"
    assert video.decode_device("cuda", "mpeg2video") == "cpu"
    assert capsys.readouterr().err.strip() == "note: NVDEC does not decode mpeg2video here: decoding " \
                                              "mpeg2video videos on the CPU"


def test_gpu_decoding_puts_torchcodec_first_and_pyav_still_backs_it(tmp_path):
    found = video.scan(tiny_video(tmp_path / "v.avi", frames=8))
    assert video._decoder_order("auto", found, "cuda") == ["torchcodec", "pyav"]
    assert video._decoder_order("auto", found, "cpu") == ["pyav"]
    assert video._decoder_order("decord", found._replace(rotation=90), "cpu") == ["pyav"]


def test_a_gpu_decode_that_fails_falls_back_to_the_cpu_with_one_line(real_clips, monkeypatch, capsys):
    """No NVDEC here: the GPU path is chosen (torchcodec 'loads', H.264), fails, and PyAV
    decodes on the CPU; one line says so."""
    monkeypatch.setattr(video, "load_error", lambda name: None)
    video._note.cache_clear()

    def no_nvdec(path, found, wanted, device):  # as _decode_torchcodec passes on torchcodec's RuntimeError
        assert device == "cuda"
        raise video._DecoderFailed("CUDA driver not found")

    monkeypatch.setitem(video.DECODE, "torchcodec", no_nvdec)
    path = real_clips["short_32_frames.mp4"]
    clip = sample_clip(path, 4, device="cuda")
    assert clip.decoder == "pyav" and np.array_equal(clip.frames, sample_clip(path, 4).frames)
    assert capsys.readouterr().err.strip() == ("note: torchcodec could not decode h264 on cuda "
                                               "(CUDA driver not found): decoding on the CPU")
    video._note.cache_clear()
