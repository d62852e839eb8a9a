"""Render the embedded demo dataset: UCF-101-shaped clips whose classes are motions.

Every clip of one group shares a scene (background, lighting, object look), as UCF-101
groups share a source video, so a random split leaks appearance and a group split does not.
Twelve pairs of classes are the same frames played forwards or backwards: a model that
ignores frame order cannot tell the two classes of a pair apart.
"""
from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np

# (class name, base motion, played backwards). A backwards class is the exact frame-reverse
# of its partner, so both have the same set of frames.
CLASSES: list[tuple[str, str, bool]] = [
    ("MoveRight", "slide_x", False), ("MoveLeft", "slide_x", True),
    ("MoveDown", "slide_y", False), ("MoveUp", "slide_y", True),
    ("SlideDownRight", "slide_diag", False), ("SlideUpLeft", "slide_diag", True),
    ("SlideDownLeft", "slide_antidiag", False), ("SlideUpRight", "slide_antidiag", True),
    ("Grow", "grow", False), ("Shrink", "grow", True),
    ("RotateClockwise", "rotate", False), ("RotateAnticlockwise", "rotate", True),
    ("OrbitClockwise", "orbit", False), ("OrbitAnticlockwise", "orbit", True),
    ("FadeIn", "fade", False), ("FadeOut", "fade", True),
    ("StretchWide", "stretch", False), ("StretchTall", "stretch", True),
    ("ZoomIn", "zoom", False), ("ZoomOut", "zoom", True),
    ("SplitApart", "split", False), ("ComeTogether", "split", True),
    ("SpiralOut", "spiral", False), ("SpiralIn", "spiral", True),
    ("Shake", "shake", False),
]
CLASS_NAMES = [name for name, _, _ in CLASSES]


def _scene(rng: np.random.Generator, width: int, height: int) -> dict:
    """One group's look: a textured background wider than the frame, lighting, an object."""
    bg_h, bg_w = height * 2, width * 2  # room for zooming out
    yy, xx = np.mgrid[0:bg_h, 0:bg_w].astype(np.float32)
    top, bottom = rng.uniform(25, 120, size=(2, 3))  # darker than the objects
    angle = rng.uniform(0, np.pi)
    ramp = (math.cos(angle) * xx / bg_w + math.sin(angle) * yy / bg_h + 1) / 2
    bg = top * (1 - ramp[..., None]) + bottom * ramp[..., None]
    for _ in range(rng.integers(3, 7)):  # static clutter, so the background has texture
        cx, cy = rng.uniform(0, bg_w), rng.uniform(0, bg_h)
        rx, ry = rng.uniform(8, 60, size=2)
        mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
        bg[mask] = rng.uniform(25, 140, size=3)
    return {
        "background": bg.astype(np.float32),
        "light": rng.uniform(0.7, 1.2),
        # objects are light grey with a tint, so that the lighting, not the paint, sets their colour
        "color": (rng.uniform(140, 170) + rng.uniform(-15, 15, size=3)).astype(np.float32),
        "marker": rng.uniform(0, 90, size=3).astype(np.float32),
        "shape": rng.choice(["disc", "square", "diamond"]),
        "radius": rng.uniform(44, 58),
    }


def _pose(motion: str, t: float, jitter: np.ndarray) -> dict:
    """Object and camera state at time t in [0, 1] (scene coordinates centred on 0)."""
    a, b = jitter  # per-clip variation in path length / offset
    x, y, scale, angle, alpha, stretch, zoom = 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0
    s = 2 * t - 1  # -1 .. 1
    if motion == "slide_x":
        x, y = 110 * a * s, 40 * b
    elif motion == "slide_y":
        x, y = 60 * b, 80 * a * s
    elif motion == "slide_diag":
        x, y = 100 * a * s, 75 * a * s
    elif motion == "slide_antidiag":
        x, y = -100 * a * s, 75 * a * s
    elif motion == "grow":
        scale = 0.4 + 1.4 * t
    elif motion == "rotate":
        angle = 1.5 * np.pi * t * a
    elif motion == "orbit":
        phi = 2 * np.pi * (0.85 * t + 0.05 * b) - np.pi / 2  # starts near the top
        x, y = 90 * math.cos(phi), 70 * math.sin(phi)
    elif motion == "fade":
        alpha = t
    elif motion == "stretch":
        stretch = 1.7 ** s  # width / height from wide to tall
    elif motion == "zoom":  # around the frame centre, so an off-centre object also drifts out
        zoom = 1.0 + 0.9 * t
        x, y = 60 * np.sign(b), 40 * b
    elif motion == "split":
        x = 20 + 100 * t * a  # second copy drawn mirrored at -x
    elif motion == "spiral":
        phi = 3 * np.pi * t + 0.3 * b
        x, y = 100 * t * math.cos(phi), 80 * t * math.sin(phi)
    elif motion == "shake":
        x = 60 * math.sin(6 * np.pi * t) * a
    return {"x": x, "y": y, "scale": scale, "angle": angle, "alpha": alpha, "stretch": stretch,
            "zoom": zoom, "mirror": motion == "split"}


def _draw(scene: dict, pose: dict, width: int, height: int, grid: tuple) -> np.ndarray:
    """Rasterise one frame: camera transform to scene coordinates, then background + object."""
    px, py = grid  # pixel coordinates centred on the frame centre
    sx = px / pose["zoom"]
    sy = py / pose["zoom"]
    bg = scene["background"]
    bx = np.clip((sx + bg.shape[1] / 2).astype(np.int32), 0, bg.shape[1] - 1)
    by = np.clip((sy + bg.shape[0] / 2).astype(np.int32), 0, bg.shape[0] - 1)
    frame = bg[by, bx]
    centres = [(pose["x"], pose["y"])] + ([(-pose["x"], pose["y"])] if pose["mirror"] else [])
    radius = scene["radius"] * pose["scale"]
    cos, sin = math.cos(pose["angle"]), math.sin(pose["angle"])
    for cx, cy in centres:
        u, v = sx - cx, sy - cy
        u, v = cos * u + sin * v, -sin * u + cos * v  # rotate into the object's frame
        u, v = u / np.sqrt(pose["stretch"]), v * np.sqrt(pose["stretch"])
        if scene["shape"] == "disc":
            inside = u * u + v * v < radius * radius
        elif scene["shape"] == "square":
            inside = np.maximum(np.abs(u), np.abs(v)) < radius * 0.85
        else:
            inside = np.abs(u) + np.abs(v) < radius * 1.2
        # an off-centre marker makes rotation visible whatever the shape
        marker = (u - 0.5 * radius) ** 2 + v * v < (0.4 * radius) ** 2
        a = pose["alpha"]
        for mask, color in ((inside, scene["color"]), (inside & marker, scene["marker"])):
            frame[mask] = (1 - a) * frame[mask] + a * color
    # Every scene is lit alike: a warm lamp on the left, a cool one on the right, a green
    # one above. An object's colour then tells where it is, so position survives the backbone's
    # global pooling, and the direction of motion with it.
    frame *= scene["light"] * _lighting(width, height)
    return np.clip(frame, 0, 255).astype(np.uint8)


def _lighting(width: int, height: int) -> np.ndarray:
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    # red falls and blue rises from left to right, green falls from top to bottom
    x, y = np.broadcast_arrays(x, y)
    return np.concatenate([1.3 - 0.6 * x, 1.2 - 0.4 * y, 0.7 + 0.6 * x], axis=2) * (1.1 - 0.2 * y)


def render_clip(motion: str, backwards: bool, scene: dict, rng: np.random.Generator,
                num_frames: int, width: int, height: int) -> np.ndarray:
    """Frames [T, H, W, 3] uint8 of one clip; backwards clips are the exact reverse."""
    jitter = np.array([rng.uniform(0.7, 1.0), rng.uniform(-1.0, 1.0)])
    py, px = np.mgrid[0:height, 0:width].astype(np.float32)
    grid = (px - width / 2, py - height / 2)
    times = np.linspace(0.0, 1.0, num_frames)
    frames = np.stack([_draw(scene, _pose(motion, t, jitter), width, height, grid) for t in times])
    return frames[::-1].copy() if backwards else frames


def rgb_to_yuv420p(frame: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] (H, W even) -> the yuv420p planes stacked as [H * 3 / 2, W]: BT.601
    limited range in integer arithmetic, chroma averaged over 2x2 pixels. Done here rather than
    by FFmpeg's swscale, whose SIMD paths round differently from CPU to CPU."""
    rgb = frame.astype(np.int32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    u = -38 * r - 74 * g + 112 * b
    v = 112 * r - 94 * g - 18 * b
    h, w = y.shape

    def subsample(c: np.ndarray) -> np.ndarray:  # the sum of each 2x2 block, then one rounding
        block = c.reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3))
        return ((block + 512) >> 10) + 128

    u, v = subsample(u), subsample(v)
    return np.concatenate([y, u.reshape(h // 4, w), v.reshape(h // 4, w)]).astype(np.uint8)


# The same bytes on every machine: one encoder thread (with several, the output depends on the
# core count), the C DCT/IDCT (FFmpeg picks SIMD versions by CPU, which round differently) and
# no version strings in the file: the options FFmpeg's own regression tests encode with.
ENCODER_OPTIONS = {"threads": "1", "flags": "+bitexact", "dct": "fastint", "idct": "simple"}


def write_avi(path: Path, frames: np.ndarray, fps: int) -> None:
    """Write MPEG-4 part 2 in AVI, the codec and container of UCF-101, byte-identical on any
    machine (ENCODER_OPTIONS, rgb_to_yuv420p); atomic rename. Width and height must be even."""
    tmp = path.with_name(path.name + ".tmp.avi")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"frames must have an even width and height for yuv420p, got {width}x{height}")
    with av.open(str(tmp), mode="w", format="avi", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("mpeg4", rate=fps, options=ENCODER_OPTIONS)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 600_000
        stream.codec_context.thread_count = 1
        for frame in frames:
            picture = av.VideoFrame.from_ndarray(rgb_to_yuv420p(frame), format="yuv420p")
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)


def clip_plan(cfg: dict) -> list[dict]:
    """Every clip to render, with its own seed, in a fixed order (independent of workers)."""
    plan = []
    for class_index, (name, motion, backwards) in enumerate(CLASSES[: cfg["num_classes"]]):
        for group in range(1, cfg["groups_per_class"] + 1):
            # UCF-101 groups hold 4-7 clips; the demo keeps 1-N so it stays small
            n_clips = 1 + (class_index + group) % cfg["clips_per_group"]
            for clip in range(1, n_clips + 1):
                plan.append({"class_name": name, "motion": motion, "backwards": backwards,
                             "group": group, "clip": clip,
                             "seed": [cfg["seed"], class_index, group, clip]})
    return plan


def render_and_write(item: dict, cfg: dict, root: Path) -> Path:
    """Render one planned clip and write it under root/<Class>/v_<Class>_gNN_cMM.avi."""
    scene = _scene(np.random.default_rng(item["seed"][:3]), cfg["width"], cfg["height"])
    rng = np.random.default_rng(item["seed"])
    seconds = rng.uniform(cfg["min_seconds"], cfg["max_seconds"])
    frames = render_clip(item["motion"], item["backwards"], scene, rng,
                         int(round(seconds * cfg["fps"])), cfg["width"], cfg["height"])
    name = item["class_name"]
    path = root / name / f"v_{name}_g{item['group']:02d}_c{item['clip']:02d}.avi"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_avi(path, frames, cfg["fps"])
    return path
