"""Decoder benchmark: frames/s of sample_clip (16 frames a video) per decoder, beside the old two-pass PyAV reader.

    python bench/decode.py [--clips 15] [--minutes 10] [--repeat 3] [--num-frames 16] [--clip-frames 1]

Prints a markdown table; the generated videos are kept in data/bench/ (git-ignored) for later runs. --clip-frames L
samples a video backbone's S clips of L frames at 15 fps (S x L frames a video; the old reader reads S x L frames
at its own indices) and says how many frames PyAV decoded a video against its length: seeking, not reading it all."""
import argparse
import datetime
import itertools
import os
import time
from collections import Counter
from pathlib import Path

import av
import numpy as np

from actionrec import video
from actionrec.synthetic import write_avi
from actionrec.verify import cpu_name
from actionrec.video import AUTO_ORDER, frame_indices, load_error, sample_clip, scan

OUT = Path("data/bench")
SAMPLE_CLIP = Path("tests/data/v_ApplyEyeMakeup_g01_c01.avi")  # a real UCF-101 clip
OLD = "old pyav (two passes)"
REAL_H264 = [Path("tests/data/kinetics_arm_wrestling.mp4"), Path("tests/data/short_32_frames.mp4")]


def generated(name: str, frames: int, seed: int, gop: int | None = None) -> Path:
    """A 320x240 MPEG-4 part 2 AVI at 25 fps, written once, frame by frame (memory stays small), of a
    shifted noise image: texture and motion, so the encoder works as on film."""
    path = OUT / name
    if not path.exists():
        base = np.random.default_rng(seed).integers(0, 256, (480, 640, 3), np.uint8)
        base = ((base.astype(np.uint16) + np.roll(base, 1, 0) + np.roll(base, 1, 1)) // 3).astype(np.uint8)
        path.parent.mkdir(parents=True, exist_ok=True)
        shifts = ((3 * i % 240, 2 * i % 320) for i in range(frames))
        write_avi(path, (base[y:y + 240, x:x + 320] for y, x in shifts), 25, gop)
    return path


def old_two_pass_pyav(path: str, num_frames: int) -> np.ndarray:
    """The reader before sparse decoding, kept to compare: count the frames, then decode up to the last sampled one."""
    def decoded(container):
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            yield from container.decode(stream)
        except av.error.FFmpegError:
            return

    with av.open(path) as container:
        count = sum(1 for _ in decoded(container))
    wanted = frame_indices(count, num_frames)
    with av.open(path) as container:
        frames = itertools.islice(decoded(container), wanted[-1] + 1)
        picked = {i: frame.to_ndarray(format="rgb24") for i, frame in enumerate(frames) if i in wanted}
    return np.stack([picked[i] for i in wanted])


def timed_run(paths: list[Path], decoder: str, num_frames: int, clip_frames: int) -> tuple[float, Counter]:
    """(seconds for one pass over paths, which decoder produced each video's frames)"""
    used = Counter()
    start = time.perf_counter()
    for path in paths:
        if decoder == OLD:
            old_two_pass_pyav(str(path), num_frames * clip_frames)
            used["pyav"] += 1
        else:
            used[sample_clip(path, num_frames, decoder, clip_frames=clip_frames, clip_fps=15.0).decoder] += 1
    return time.perf_counter() - start, used


def pyav_decoded(paths: list[Path], num_frames: int, clip_frames: int) -> tuple[float, float]:
    """(frames PyAV decodes a video for sample_clip, the videos' mean length): sparse decoding seeks past the rest."""
    decoded, counted = [], video._decoded

    def counting(codec, packets):
        for frame in counted(codec, packets):
            decoded.append(1)
            yield frame

    video._decoded = counting
    try:
        for path in paths:
            sample_clip(path, num_frames, "pyav", clip_frames=clip_frames, clip_fps=15.0)
    finally:
        video._decoded = counted
    return len(decoded) / len(paths), sum(scan(path).frame_count for path in paths) / len(paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=15, help="generated short clips")
    parser.add_argument("--minutes", type=int, default=10, help="length of the long video")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the best is kept")
    parser.add_argument("--num-frames", type=int, default=16, help="S: frames (or clips) a video")
    parser.add_argument("--clip-frames", type=int, default=1, help="L: frames a clip (a video backbone's); 1: frames")
    args = parser.parse_args()
    frames = args.num_frames * args.clip_frames
    # UCF-101-like clips of 160 frames (6.4 s); a long video with a keyframe every 250 frames, as
    # common encoders default to
    short = [generated(f"clip_{seed:02d}.avi", 160, seed) for seed in range(args.clips)]
    sets = {"UCF-101 clip + generated 320x240 MPEG-4 AVI": [SAMPLE_CLIP, *short],
            "real H.264 MP4 clips (tests/data)": REAL_H264,
            f"{args.minutes}-minute 320x240 MPEG-4 AVI": [generated(f"long_{args.minutes}min.avi",
                                                                     args.minutes * 60 * 25, 99, gop=250)]}
    decoders = [name for name in AUTO_ORDER if load_error(name) is None]
    for name in AUTO_ORDER:
        if name not in decoders:
            print(f"({name} cannot load here: {load_error(name) or 'not installed'})")
    for name in decoders:  # load each library once before timing
        sample_clip(SAMPLE_CLIP, 16, name)
    rows, best, used = [*decoders, "auto", OLD], {}, {}
    for _ in range(args.repeat):  # rounds over all decoders, so a busy spell hits them alike
        for decoder in rows:
            for title, paths in sets.items():
                seconds, used[decoder, title] = timed_run(paths, decoder, args.num_frames, args.clip_frames)
                best[decoder, title] = min(best.get((decoder, title), seconds), seconds)
    print(f"{datetime.date.today()}, {cpu_name()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; {args.num_frames} x {args.clip_frames} frames per video, best of {args.repeat} "
          "rounds")
    print("| decoder | " + " | ".join(f"{title} ({len(paths)} video{'s' * (len(paths) > 1)}), frames/s"
                                     for title, paths in sets.items()) + " |")
    print("|---" * (len(sets) + 1) + "|")
    for decoder in rows:
        cells = []
        for title, paths in sets.items():
            counts = used[decoder, title]
            note = ", ".join(f"{n} by {d}" for d, n in counts.items()) if set(counts) - {decoder} else ""
            cells.append(f"{frames * len(paths) / best[decoder, title]:.1f}" + (f" ({note})" if note else ""))
        print(f"| {decoder} | " + " | ".join(cells) + " |")
    for title, paths in sets.items():
        decoded, length = pyav_decoded(paths, args.num_frames, args.clip_frames)
        print(f"{title}: PyAV decoded {decoded:.0f} frames a video of {length:.0f} ({decoded / length:.0%}) "
              f"for {frames} sampled")


if __name__ == "__main__":
    main()
