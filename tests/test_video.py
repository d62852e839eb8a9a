import numpy as np
import pytest

from actionrec.video import VideoError, frame_indices, load_error, sample_clip
from tests.conftest import rotated_video, tiny_video


def test_frame_indices_are_segment_centres():
    assert frame_indices(160, 16) == [5 + 10 * i for i in range(16)]
    assert frame_indices(32, 4) == [4, 12, 20, 28]


def test_short_videos_repeat_frames_in_order():
    assert frame_indices(3, 16) == sorted(frame_indices(3, 16))
    assert set(frame_indices(3, 16)) == {0, 1, 2}
    assert frame_indices(1, 4) == [0, 0, 0, 0]
    with pytest.raises(VideoError):
        frame_indices(0, 16)


def test_reads_the_sampled_frames_of_a_generated_video(tmp_path):
    path = tiny_video(tmp_path / "v.avi", frames=20)
    frames = sample_clip(path, 4).frames
    assert frames.shape == (4, 48, 64, 3) and frames.dtype == np.uint8
    # frame i is grey 10*i: the centres of 4 segments of 20 are frames 2, 7, 12, 17
    assert np.allclose(frames.mean(axis=(1, 2, 3)), [20, 70, 120, 170], atol=4)


def test_real_clips_decode(real_clips):
    for name, path in real_clips.items():
        frames = sample_clip(path, 16).frames
        assert frames.shape[0] == 16 and frames.shape[3] == 3, name
        assert frames.std() > 5, name  # real content, not blank frames


@pytest.mark.parametrize("content", [b"", b"this is not a video" * 100])
def test_unreadable_files_raise_video_error(tmp_path, content):
    path = tmp_path / "broken.avi"
    path.write_bytes(content)
    with pytest.raises(VideoError):
        sample_clip(path, 16)


def test_very_short_video_gives_num_frames(tmp_path):
    frames = sample_clip(tiny_video(tmp_path / "two.avi", frames=2), 16).frames
    assert frames.shape[0] == 16


def test_variable_frame_rate_video(tmp_path):
    import av
    from fractions import Fraction

    path = tmp_path / "vfr.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        pts = 0
        for i in range(24):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 10 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            pts += 20 if i % 2 else 70  # gaps alternate: 50 and 14 frames/s
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    frames = sample_clip(path, 8).frames
    levels = frames.mean(axis=(1, 2, 3))
    assert frames.shape == (8, 48, 64, 3) and np.all(np.diff(levels) > 0)


def test_truncated_file_decodes_what_is_there(real_clips, tmp_path):
    whole = real_clips["v_ApplyEyeMakeup_g01_c01.avi"].read_bytes()
    path = tmp_path / "truncated.avi"
    path.write_bytes(whole[: len(whole) // 2])
    frames = sample_clip(path, 16).frames
    assert frames.shape == (16, 240, 320, 3) and frames.std() > 5


def test_a_video_cut_before_its_second_frame_is_named_damaged_not_a_still_image(real_clips, tmp_path):
    """A download cut short keeps the AVI header that declares 164 frames: with one frame or none
    left it is a damaged file (once "not a video: a still image (one frame)")."""
    whole = real_clips["v_ApplyEyeMakeup_g01_c01.avi"].read_bytes()
    path = tmp_path / "truncated.avi"
    for size, frames in ((20_000, 1), (12_000, 0)):
        path.write_bytes(whole[:size])
        with pytest.raises(VideoError, match=rf"^damaged or truncated file: {frames} of the 164 frames its header "
                                             r"declares demux \(the data ends\)$"):
            sample_clip(path, 16)


@pytest.mark.parametrize("decoder", ["decord", "torchcodec"])
def test_pyav_takes_over_when_another_decoder_fails_or_decodes_short(tmp_path, monkeypatch, decoder):
    """A decoder that fails (or counts other frames than the demuxer) on a file: PyAV, the
    reference, decodes it, also when that decoder was asked for by name (the decoder is a
    speed choice, so a file must not be lost to it)."""
    import actionrec.video as video

    path = tiny_video(tmp_path / "v.avi", frames=20)
    expected = sample_clip(path, 4, "pyav").frames

    def short_read(path, found, wanted, device="cpu"):
        raise video._DecoderFailed(f"{decoder} counts 3 frames, the demuxer 20")

    monkeypatch.setitem(video.DECODE, decoder, short_read)
    monkeypatch.setattr(video, "unavailable_decoder", lambda name, key="runtime.decoder": "")
    clip = video.sample_clip(path, 4, decoder)
    assert clip.decoder == "pyav" and np.array_equal(clip.frames, expected)


@pytest.mark.skipif(load_error("decord") is not None, reason="decord has no wheel for this platform")
def test_decord_and_pyav_pick_the_same_frames_on_real_clips(real_clips):
    """runtime.decoder: decord and pyav give the same frame indices and the same pixels within
    a tolerance of 0.5 grey levels on average and 2 at the 99.9th percentile (measured here:
    identical, 0 difference, on the three sample clips)."""
    for name, path in real_clips.items():
        frames_decord, indices_decord = sample_clip(path, 16, "decord")[:2]
        frames_pyav, indices_pyav = sample_clip(path, 16, "pyav")[:2]
        assert indices_decord == indices_pyav, name
        difference = np.abs(frames_decord.astype(np.int16) - frames_pyav.astype(np.int16))
        assert difference.mean() <= 0.5 and np.percentile(difference, 99.9) <= 2, name


def _jpeg(path):
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)).save(path)


def _audio_only(path):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 4000), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


@pytest.mark.parametrize("name,make,reason", [
    ("notes.txt", lambda p: p.write_text("hello, this is text\n" * 300), "a text file"),
    ("photo.jpg", _jpeg, "a still image"),
    ("photo.png", lambda p: _jpeg(p.with_suffix(".tmp.png")) or p.with_suffix(".tmp.png").rename(p), "a still image"),
    ("sound.wav", _audio_only, "no video stream"),
])
def test_files_that_are_not_videos_are_refused(tmp_path, name, make, reason):
    """FFmpeg reads text as ANSI-art video and a JPEG as a one-frame video: neither is a clip.
    (The default decoder, auto: scan() refuses such a file before any decoder is chosen.)"""
    path = tmp_path / name
    make(path)
    with pytest.raises(VideoError, match=reason):
        sample_clip(path, 16)


def test_a_rotation_that_cannot_be_read_is_a_warning_not_a_silent_upright(tmp_path, monkeypatch):
    """The display rotation rides on a decoded frame: when none of the first packets decodes
    (a damaged phone video), the clip says its rotation is unknown instead of taking 0 silently."""
    import av

    import actionrec.video as video

    path = rotated_video(tmp_path / "phone.mp4", 90, frames=12)
    assert video.sample_clip(path, 4).rotation == 90 and not video.sample_clip(path, 4).warning
    real_open = av.open

    class NoFrames:  # packets as demuxed, but decoding none of them works
        def __init__(self, packet):
            self.packet = packet

        def __getattr__(self, name):
            return getattr(self.packet, name)

        def decode(self):
            raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")

    def open_damaged(*args, **kwargs):
        container = real_open(*args, **kwargs)
        demux = container.demux
        container_proxy = type("Damaged", (), {
            "__enter__": lambda self: self, "__exit__": lambda self, *a: container.close(),
            "__getattr__": lambda self, name: getattr(container, name),
            "demux": lambda self, *a, **k: (NoFrames(p) for p in demux(*a, **k))})()
        return container_proxy

    monkeypatch.setattr(av, "open", open_damaged)
    found = video.scan(path)
    monkeypatch.setattr(av, "open", real_open)
    assert found.rotation == 0 and "rotation is unknown" in found.damage
    monkeypatch.setattr(video, "scan", lambda p: found)
    clip = video.sample_clip(path, 4)
    assert "rotation is unknown (taken as upright): damaged file?" in clip.warning


def test_damaged_headers_are_a_video_error_or_decode(real_clips):
    """Bytes a damaged download or disk can garble: a codec tag FFmpeg does not know (no decoder:
    a one-line VideoError, once an AttributeError) and a metadata tag that is not UTF-8 (the
    frames still decode, as FFmpeg shows them; once a UnicodeDecodeError)."""
    path = real_clips["kinetics_arm_wrestling.mp4"]
    original = path.read_bytes()
    path.write_bytes(original.replace(b"avc1", b"zzzz"))
    with pytest.raises(VideoError, match="no codec FFmpeg can decode"):
        sample_clip(path, 4)
    path.write_bytes(original.replace(b"Lavf", b"\x8fLav", 1))
    assert sample_clip(path, 4).frames.shape[0] == 4
