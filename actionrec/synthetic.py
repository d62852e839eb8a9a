"""Render the embedded demo dataset: UCF-101-shaped clips whose classes are motions.

A group's clips share a scene, as UCF-101's share a source video, so a random split leaks appearance
and a group split does not. Twelve pairs of classes are the same frames played forwards and backwards:
a model that ignores frame order cannot tell them apart."""
from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from pathlib import Path

import av
import numpy as np

from actionrec.errors import ParamsError


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


def _circle(rx: float, ry: float, phi: float) -> dict:
    return {"x": rx * math.cos(phi), "y": ry * math.sin(phi)}


# base motion: (its class, the class played backwards or None, what it moves at time t in [0, 1]
# (s = 2t - 1, from -1 to 1) with the clip's jitter a, b (path length, offset)); everything else keeps
# POSE_AT_REST. Scene coordinates centre on 0. A backwards class is the exact frame-reverse of its
# partner, so both have the same set of frames.
MOTIONS = {
    "slide_x": ("MoveRight", "MoveLeft", lambda t, s, a, b: {"x": 110 * a * s, "y": 40 * b}),
    "slide_y": ("MoveDown", "MoveUp", lambda t, s, a, b: {"x": 60 * b, "y": 80 * a * s}),
    "slide_diag": ("SlideDownRight", "SlideUpLeft", lambda t, s, a, b: {"x": 100 * a * s, "y": 75 * a * s}),
    "slide_antidiag": ("SlideDownLeft", "SlideUpRight", lambda t, s, a, b: {"x": -100 * a * s, "y": 75 * a * s}),
    "grow": ("Grow", "Shrink", lambda t, s, a, b: {"scale": 0.4 + 1.4 * t}),
    "rotate": ("RotateClockwise", "RotateAnticlockwise", lambda t, s, a, b: {"angle": 1.5 * np.pi * t * a}),
    "orbit": ("OrbitClockwise", "OrbitAnticlockwise",  # from the top
              lambda t, s, a, b: _circle(90, 70, 2 * np.pi * (0.85 * t + 0.05 * b) - np.pi / 2)),
    "fade": ("FadeIn", "FadeOut", lambda t, s, a, b: {"alpha": t}),
    "stretch": ("StretchWide", "StretchTall", lambda t, s, a, b: {"stretch": 1.7 ** s}),  # width/height: wide to tall
    # around the frame centre, so an off-centre object also drifts out
    "zoom": ("ZoomIn", "ZoomOut", lambda t, s, a, b: {"zoom": 1.0 + 0.9 * t, "x": 60 * np.sign(b), "y": 40 * b}),
    "split": ("SplitApart", "ComeTogether", lambda t, s, a, b: {"x": 20 + 100 * t * a, "mirror": True}),  # and at -x
    "spiral": ("SpiralOut", "SpiralIn", lambda t, s, a, b: _circle(100 * t, 80 * t, 3 * np.pi * t + 0.3 * b)),
    "shake": ("Shake", None, lambda t, s, a, b: {"x": 60 * math.sin(6 * np.pi * t) * a}),
}
CLASSES = [(name, motion, backwards) for motion, (*names, _) in MOTIONS.items()
           for backwards, name in zip((False, True), names) if name]  # (class name, base motion, backwards)
POSE_AT_REST = {"x": 0.0, "y": 0.0, "scale": 1.0, "angle": 0.0, "alpha": 1.0, "stretch": 1.0, "zoom": 1.0,
                "mirror": False}


def _draw(scene: dict, pose: dict, grid: tuple, lighting: np.ndarray) -> np.ndarray:
    """Rasterise one frame: camera transform to scene coordinates, then background + object."""
    px, py = grid  # pixel coordinates centred on the frame centre
    sx, sy = px / pose["zoom"], py / pose["zoom"]
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
    frame *= lighting
    return np.clip(frame, 0, 255).astype(np.uint8)


def render_clip(motion: str, backwards: bool, scene: dict, rng: np.random.Generator,
                num_frames: int, width: int, height: int) -> np.ndarray:
    """Frames [T, H, W, 3] uint8 of one clip; backwards clips are the exact reverse."""
    jitter = np.array([rng.uniform(0.7, 1.0), rng.uniform(-1.0, 1.0)])
    py, px = np.mgrid[0:height, 0:width].astype(np.float32)
    grid = (px - width / 2, py - height / 2)
    # Every scene is lit alike: a warm lamp on the left (red falls to the right), a cool one on the
    # right (blue rises), a green one above. An object's colour then tells where it is, so position
    # survives the backbone's global pooling, and the direction of motion with it.
    x, y = np.broadcast_arrays(np.linspace(0, 1, width, dtype=np.float32)[None, :, None],
                               np.linspace(0, 1, height, dtype=np.float32)[:, None, None])
    lighting = scene["light"] * (np.concatenate([1.3 - 0.6 * x, 1.2 - 0.4 * y, 0.7 + 0.6 * x], axis=2)
                                 * (1.1 - 0.2 * y))
    times = np.linspace(0.0, 1.0, num_frames)
    poses = [POSE_AT_REST | MOTIONS[motion][2](t, 2 * t - 1, *jitter) for t in times]
    frames = np.stack([_draw(scene, pose, grid, lighting) for pose in poses])
    return frames[::-1].copy() if backwards else frames


def rgb_to_yuv420p(frame: np.ndarray) -> np.ndarray:
    """RGB [H, W, 3] -> yuv420p planes [H * 3 / 2, W], BT.601 in integers: FFmpeg's swscale SIMD paths
    round differently from CPU to CPU."""
    rgb = frame.astype(np.int32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    uv = np.stack([-38 * r - 74 * g + 112 * b, 112 * r - 94 * g - 18 * b])
    h, w = y.shape
    block = uv.reshape(2, h // 2, 2, w // 2, 2).sum(axis=(2, 4))  # the sum of each 2x2 block, then one rounding
    return np.concatenate([y, (((block + 512) >> 10) + 128).reshape(h // 2, w)]).astype(np.uint8)  # Y, U, V


# The same bytes on every machine: one encoder thread (with several, the output depends on the
# core count), the C DCT/IDCT (FFmpeg picks SIMD versions by CPU, which round differently) and
# no version strings in the file: the options FFmpeg's own regression tests encode with.
ENCODER_OPTIONS = {"threads": "1", "flags": "+bitexact", "dct": "fastint", "idct": "simple"}


def write_avi(path: Path, frames: Iterable[np.ndarray], fps: int, gop: int | None = None) -> None:
    """MPEG-4 part 2 in AVI as UCF-101, byte-identical on any machine; gop: frames between keyframes."""
    tmp = path.with_name(path.name + ".tmp.avi")
    frames = iter(frames)
    first = next(frames)
    height, width = first.shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"frames must have an even width and height for yuv420p, got {width}x{height}")
    with av.open(str(tmp), mode="w", format="avi", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("mpeg4", rate=fps, options=ENCODER_OPTIONS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = 600_000
        if gop:
            stream.codec_context.gop_size = gop
        for frame in itertools.chain([first], frames):
            picture = av.VideoFrame.from_ndarray(rgb_to_yuv420p(frame), format="yuv420p")
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)


def clip_plan(cfg: dict) -> list[dict]:
    """Every clip to render, with its own seed, in a fixed order (independent of workers). Checks
    synthesize.num_classes against the demo's classes (stages/validate.py runs it too)."""
    if cfg["num_classes"] > len(CLASSES):
        raise ParamsError(f"params.yaml: synthesize.num_classes must be between 2 and {len(CLASSES)} "
                          f"(the demo's classes), got {cfg['num_classes']}")
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
