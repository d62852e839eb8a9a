import numpy as np
import pytest

from actionrec.video import VideoError, frame_indices, read_frames
from tests.conftest import tiny_video


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
    frames = read_frames(path, 4)
    assert frames.shape == (4, 48, 64, 3) and frames.dtype == np.uint8
    # frame i is grey 10*i: the centres of 4 segments of 20 are frames 2, 7, 12, 17
    assert np.allclose(frames.mean(axis=(1, 2, 3)), [20, 70, 120, 170], atol=4)


def test_real_clips_decode(real_clips):
    for name, path in real_clips.items():
        frames = read_frames(path, 16)
        assert frames.shape[0] == 16 and frames.shape[3] == 3, name
        assert frames.std() > 5, name  # real content, not blank frames


@pytest.mark.parametrize("content", [b"", b"this is not a video" * 100])
def test_unreadable_files_raise_video_error(tmp_path, content):
    path = tmp_path / "broken.avi"
    path.write_bytes(content)
    with pytest.raises(VideoError):
        read_frames(path, 16)


def test_very_short_video_gives_num_frames(tmp_path):
    frames = read_frames(tiny_video(tmp_path / "two.avi", frames=2), 16)
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
    frames = read_frames(path, 8)
    levels = frames.mean(axis=(1, 2, 3))
    assert frames.shape == (8, 48, 64, 3) and np.all(np.diff(levels) > 0)


def test_truncated_file_decodes_what_is_there(real_clips, tmp_path):
    whole = real_clips["v_ApplyEyeMakeup_g01_c01.avi"].read_bytes()
    path = tmp_path / "truncated.avi"
    path.write_bytes(whole[: len(whole) // 2])
    frames = read_frames(path, 16)
    assert frames.shape == (16, 240, 320, 3) and frames.std() > 5


def test_pyav_takes_over_when_decord_fails_or_decodes_short(tmp_path, monkeypatch):
    """A container that reports more frames than decord can decode: PyAV counts what decodes."""
    import actionrec.video as video

    path = tiny_video(tmp_path / "v.avi", frames=20)
    expected = read_frames(path, 4)

    def short_read(path, num_frames):
        raise VideoError("decord returned 3 of 4 frames")

    monkeypatch.setattr(video, "_read_decord", short_read)
    frames = video.read_frames(path, 4)
    assert np.allclose(frames.mean(axis=(1, 2, 3)), expected.mean(axis=(1, 2, 3)), atol=4)
