"""Procedural site-safety camera scenes with exact boxes, deterministic by seed.
Feeds `edgeloop demo` and the tests: a YOLO dataset, an H.264 clip, ground truth per frame.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CLASSES: tuple[str, ...] = ("helmet", "no_helmet", "vest", "package")
# Class 1 (a bare head) is the rare event the loop exists to fix: ~3% of objects.
DEFAULT_CLASS_WEIGHTS: tuple[float, ...] = (0.37, 0.03, 0.30, 0.30)

# Object sizes (pixels at 320x240) per class; heads are the smallest, as on a real site.
_SIZE_RANGE = {0: (22, 46), 1: (22, 46), 2: (36, 72), 3: (28, 66)}
_MIN_VISIBLE = 0.65  # an object less visible than this is never drawn, so every drawn pixel is labelled
_SKIN = [(60, 90, 140), (80, 130, 190), (110, 160, 220), (150, 190, 235)]
_HAIR = [(20, 20, 20), (25, 40, 60), (40, 60, 90)]
_HELMET = [(0, 215, 255), (235, 235, 235), (0, 140, 255)]  # yellow, white, orange (BGR)
_VEST = [(0, 110, 255), (40, 240, 190)]  # hi-vis orange, hi-vis lime


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # H×W×3 uint8, BGR
    boxes: np.ndarray  # N×4 float32 xyxy pixels, clipped to the frame
    class_ids: np.ndarray  # N int64
    seed: int


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], amount: int = 18) -> tuple[int, ...]:
    return tuple(int(v) for v in np.clip(np.array(colour) + rng.integers(-amount, amount + 1, 3), 0, 255))


def _head(rng: np.random.Generator, img: np.ndarray, c: int, s: int) -> None:
    cy = c + s // 8
    cv2.circle(img, (c, cy), int(0.36 * s), _jitter(rng, _SKIN[rng.integers(len(_SKIN))]), -1)
    for dx in (-1, 1):  # eyes make it read as a face rather than a ball
        cv2.circle(img, (c + dx * int(0.13 * s), cy + s // 20), max(1, s // 20), (30, 30, 30), -1)


def _draw(rng: np.random.Generator, cls: int, s: int) -> np.ndarray:
    """One object on a transparent square canvas (BGRA), centred, room left for rotation."""
    side = int(1.8 * s) | 1
    img = np.zeros((side, side, 4), np.uint8)
    c = side // 2
    if cls in (0, 1):
        _head(rng, img, c, s)
        if cls == 0:  # hard hat: a tall dome with a brim, wider than the head
            col = _jitter(rng, _HELMET[rng.integers(len(_HELMET))], 12)
            cv2.ellipse(img, (c, c - s // 20), (int(0.42 * s), int(0.40 * s)), 0, 180, 360, col, -1)
            brim = (c - int(0.52 * s), c - s // 20), (c + int(0.52 * s), c + s // 40)
            cv2.rectangle(img, *brim, col, -1)
            cv2.line(img, (c, c - int(0.42 * s)), (c, c - s // 20), _jitter(rng, (60, 60, 60)), max(1, s // 14))
        else:  # hair: a flat dark cap that follows the skull, no brim
            col = _jitter(rng, _HAIR[rng.integers(len(_HAIR))], 10)
            cv2.ellipse(img, (c, c + s // 16), (int(0.37 * s), int(0.30 * s)), 0, 180, 360, col, -1)
    elif cls == 2:  # vest: a torso with two reflective stripes and a dark V-neck
        w, h = int(0.42 * s), s // 2
        torso = np.array([[c - w, c - h], [c + w, c - h], [c + int(0.85 * w), c + h], [c - int(0.85 * w), c + h]])
        cv2.fillPoly(img, [torso], _jitter(rng, _VEST[rng.integers(len(_VEST))], 15))
        cv2.fillPoly(img, [np.array([[c - w // 3, c - h], [c + w // 3, c - h], [c, c - h // 3]])], (40, 40, 40))
        for y in (c + h // 6, c + h * 3 // 5):
            cv2.rectangle(img, (c - w, y), (c + w, y + max(2, s // 12)), _jitter(rng, (210, 210, 210), 10), -1)
    else:  # package: cardboard box, random aspect, tape down the middle, a white shipping label
        w, h = int(0.5 * s * rng.uniform(0.75, 1.3)), int(0.5 * s * rng.uniform(0.6, 1.0))
        cv2.rectangle(img, (c - w, c - h), (c + w, c + h), _jitter(rng, (70, 125, 180)), -1)
        cv2.rectangle(img, (c - w, c - h), (c + w, c + h), (40, 75, 110), max(1, s // 25))
        tape = max(2, s // 14)
        cv2.rectangle(img, (c - tape, c - h), (c + tape, c + h), _jitter(rng, (150, 195, 225)), -1)
        cv2.rectangle(img, (c + w // 4, c + h // 4), (c + w * 3 // 4, c + h * 2 // 3), (235, 235, 235), -1)
    img[..., 3] = np.where(img[..., :3].any(axis=2), 255, 0)  # nothing is drawn in pure black
    return img


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Concrete-ish gradient with blotchy texture, maybe a conveyor belt, grey clutter."""
    # Grey concrete with a mild tint: colourful enough to vary, never as vivid as hi-vis.
    a, b = (rng.uniform(60, 200) + rng.uniform(-30, 30, 3) for _ in range(2))
    sideways = rng.random() < 0.5
    t = np.linspace(0, 1, w if sideways else h, dtype=np.float32)
    ramp = t[None, :, None] if sideways else t[:, None, None]
    img = (a * (1 - ramp) + b * ramp).astype(np.float32) + np.zeros((h, w, 1), np.float32)
    coarse = rng.normal(0, 14, (h // 24 + 2, w // 24 + 2)).astype(np.float32)
    blotch = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    img += blotch[..., None] + 14 * (rng.random((h, w, 1), dtype=np.float32) - 0.5)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:  # conveyor belt with rollers: the storyline's second camera
        y0, bh = int(rng.uniform(0.3, 0.6) * h), int(rng.uniform(0.25, 0.4) * h)
        img[y0:y0 + bh] = (img[y0:y0 + bh] * 0.35).astype(np.uint8)
        for x in range(int(rng.integers(0, 20)), w, 20):
            cv2.line(img, (x, y0), (x, y0 + bh), (75, 75, 75), 1)
    for _ in range(int(rng.integers(2, 7))):  # unlabelled grey clutter, so "any shape" is not a detection
        g = int(rng.integers(40, 220))
        p = rng.integers(0, (w, h), size=(2, 2))
        if rng.random() < 0.5:
            cv2.line(img, tuple(map(int, p[0])), tuple(map(int, p[1])), (g, g, g), int(rng.integers(2, 8)))
        else:
            cv2.rectangle(img, tuple(map(int, p[0])), tuple(map(int, p[0] + rng.integers(8, 40, 2))), (g, g, g), -1)
    return img


def render_scene(
    seed: int, *, width: int = 320, height: int = 240, class_weights: Sequence[float] | None = None
) -> Scene:
    rng = np.random.default_rng(seed)
    weights = np.asarray(DEFAULT_CLASS_WEIGHTS if class_weights is None else class_weights, dtype=np.float64)
    if weights.shape != (len(CLASSES),) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"class_weights needs {len(CLASSES)} non-negative numbers with a positive sum")
    image = _background(rng, height, width)
    owner = np.full((height, width), -1, np.int16)  # which object each pixel shows, for visible boxes
    areas: list[int] = []
    visible = np.zeros(0, np.int64)  # pixels each placed object still shows
    classes: list[int] = []
    scale = min(width, height) / 240  # sizes are tuned for 320x240 and follow the frame
    for _ in range(int(rng.integers(0, 9))):
        cls = int(rng.choice(len(CLASSES), p=weights / weights.sum()))
        lo, hi = _SIZE_RANGE[cls]
        patch = _draw(rng, cls, max(8, int(rng.uniform(lo, hi) * scale)))
        side = patch.shape[0]
        m = cv2.getRotationMatrix2D((side / 2, side / 2), float(rng.uniform(-12, 12)), float(rng.uniform(0.9, 1.1)))
        patch = cv2.warpAffine(patch, m, (side, side), flags=cv2.INTER_LINEAR)
        alpha = patch[..., 3].astype(np.float32) / 255
        full = int((alpha > 0.5).sum())
        for _try in range(6):  # a few positions; an object that cannot fit is not drawn at all
            x0 = int(rng.integers(-side // 4, width - 3 * side // 4))
            y0 = int(rng.integers(-side // 4, height - 3 * side // 4))
            fy, fx = slice(max(y0, 0), min(y0 + side, height)), slice(max(x0, 0), min(x0 + side, width))
            py, px = slice(fy.start - y0, fy.stop - y0), slice(fx.start - x0, fx.stop - x0)
            mask = alpha[py, px] > 0.5
            if mask.sum() < _MIN_VISIBLE * full:
                continue  # mostly outside the frame
            under = np.bincount(owner[fy, fx][mask] + 1, minlength=len(areas) + 1)[1:]
            if (visible - under >= _MIN_VISIBLE * np.asarray(areas)).all():
                break
        else:
            continue
        a = alpha[py, px, None]
        # The warped colours are already premultiplied by alpha (the canvas is black and transparent).
        image[fy, fx] = np.clip(image[fy, fx] * (1 - a) + patch[py, px, :3], 0, 255).astype(np.uint8)
        owner[fy, fx][mask] = len(areas)
        visible = np.append(visible - under, int(mask.sum()))
        areas.append(full)
        classes.append(cls)
    # Lighting: a global gain and a sideways falloff, then sensor noise; boxes are unaffected.
    gain = rng.uniform(0.65, 1.2) * np.linspace(*rng.uniform(0.8, 1.2, 2), width, dtype=np.float32)
    # Uniform rather than Gaussian noise: it looks the same here and costs a fifth as much.
    noise = rng.uniform(6, 24) * (rng.random(image.shape, dtype=np.float32) - 0.5)
    lit = image * gain[None, :, None] + noise
    image = np.clip(lit, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:  # a little defocus, as cheap cameras have
        image = cv2.GaussianBlur(image, (3, 3), 0)
    boxes = np.zeros((len(areas), 4), np.float32)
    for i in range(len(areas)):
        ys, xs = np.nonzero(owner == i)
        boxes[i] = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    return Scene(image=image, boxes=boxes, class_ids=np.asarray(classes, np.int64), seed=seed)


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # a reader never sees half a file


def write_yolo_dataset(
    root: Path,
    seeds: Iterable[int],
    *,
    width: int = 320,
    height: int = 240,
    class_weights: Sequence[float] | None = None,
    image_format: str = "jpg",
) -> Path:
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        scene = render_scene(seed, width=width, height=height, class_weights=class_weights)
        name = f"scene_{seed:06d}"
        if image_format == "jpg":
            data = encode_jpeg(scene.image)
        else:
            ok, buf = cv2.imencode(f".{image_format}", scene.image)
            if not ok:
                raise ValueError(f"cannot encode images as {image_format!r}")
            data = buf.tobytes()
        # Image before label: a crash can leave an unlabelled image (a background frame), never an orphan label.
        _write_atomic(root / "images" / f"{name}.{image_format}", data)
        lines = []
        for (x1, y1, x2, y2), cls in zip(scene.boxes.tolist(), scene.class_ids.tolist()):
            cx, cy, bw, bh = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height
            lines.append(f"{cls} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}\n")
        _write_atomic(root / "labels" / f"{name}.txt", "".join(lines).encode())
    # JSON strings are valid YAML scalars, so no YAML library is needed to write this.
    names = "".join(f"  {i}: {json.dumps(n)}\n" for i, n in enumerate(CLASSES))
    yaml_text = f"path: {json.dumps(str(root.resolve()))}\ntrain: images\nval: images\nnames:\n{names}"
    _write_atomic(root / "data.yaml", yaml_text.encode())
    return root


def write_video(
    path: Path, seeds: Iterable[int], *, fps: int = 10, hold: int = 1, width: int = 320, height: int = 240,
    class_weights: Sequence[float] | None = None,
) -> list[Scene]:
    import imageio_ffmpeg  # dev/demo-only dependency: its bundled ffmpeg has libx264, OpenCV's writer does not

    if width % 2 or height % 2:
        raise ValueError("yuv420p needs even width and height")
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
        macro_block_size=2, quality=None, ffmpeg_log_level="error",
        # A keyframe every second, so an RTSP client that joins mid-loop sees a picture quickly.
        output_params=["-crf", "18", "-g", str(fps), "-bf", "0"],
    )
    writer.send(None)  # the generator must be primed before it accepts frames
    scenes = []
    try:
        for seed in seeds:
            scene = render_scene(seed, width=width, height=height, class_weights=class_weights)
            rgb = np.ascontiguousarray(scene.image[..., ::-1])
            for _ in range(hold):
                writer.send(rgb)
            scenes.append(scene)
    finally:
        writer.close()
    return scenes
