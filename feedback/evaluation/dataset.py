"""Reads a YOLO-format folder (images/ + labels/) into ground truth per image, in pixels.

The image id everywhere in evaluation (COCO json, galleries) is the image file's stem.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import supervision as sv
import yaml
from PIL import Image

# What ultralytics itself reads as images (its IMG_FORMATS, minus the exotic ones).
IMAGE_SUFFIXES = frozenset({".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"})
_EXIF_ORIENTATION = 0x0112
_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


@dataclass(frozen=True)
class LabelledImage:
    image_id: str  # the file stem
    path: Path
    width: int  # as displayed, EXIF orientation applied: the frame the labels are normalised to
    height: int
    truth: sv.Detections  # xyxy pixels and class_id; no confidence


@dataclass(frozen=True)
class YoloDataset:
    root: Path
    names: tuple[str, ...]
    images: tuple[LabelledImage, ...]

    def instances(self) -> np.ndarray:
        """Ground-truth boxes per class, indexed by class id."""
        counts = np.zeros(len(self.names), np.int64)
        for image in self.images:
            counts += np.bincount(image.truth.class_id, minlength=len(self.names))
        return counts


def read_names(root: Path) -> tuple[str, ...] | None:
    """Class names from ROOT/data.yaml (a list or an {index: name} mapping), or None without one."""
    path = Path(root) / "data.yaml"
    if not path.is_file():
        return None
    names = (yaml.safe_load(path.read_text()) or {}).get("names")
    if names is None:
        return None
    if isinstance(names, dict):
        ids = sorted(int(k) for k in names)
        if ids != list(range(len(ids))):
            raise ValueError(f"{path}: class ids must run 0..n-1, got {ids}")
        return tuple(str(names[k] if k in names else names[str(k)]) for k in ids)
    return tuple(str(n) for n in names)


def load_dataset(root: Path, names: Sequence[str]) -> YoloDataset:
    """Every image under ROOT/images with its boxes from ROOT/labels/<stem>.txt (none if absent)."""
    root = Path(root)
    image_dir = root / "images"
    if not image_dir.is_dir():
        raise FileNotFoundError(f"no images/ folder in {root}")
    paths = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        # Stems are the image ids: a.jpg and a.png would collide in the COCO json.
        dupes = sorted({s for s in stems if stems.count(s) > 1})
        raise ValueError(f"image stems must be unique in {image_dir}, repeated: {dupes[:5]}")
    images = []
    for path in paths:
        width, height = image_size(path)
        xyxy, class_id = read_labels(root / "labels" / f"{path.stem}.txt", width, height)
        if len(class_id) and class_id.max() >= len(names):
            raise ValueError(f"{path.stem}: class id {class_id.max()} but only {len(names)} names {list(names)}")
        truth = sv.Detections(xyxy=xyxy, class_id=class_id)
        images.append(LabelledImage(path.stem, path, width, height, truth))
    return YoloDataset(root=root, names=tuple(names), images=tuple(images))


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) as decoders that honour EXIF orientation (OpenCV, ultralytics) see it."""
    with Image.open(path) as img:  # reads the header only
        width, height = img.size
        if img.getexif().get(_EXIF_ORIENTATION) in _ROTATED:
            return height, width
    return width, height


def read_labels(path: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """YOLO label lines to (N×4 float64 xyxy pixels, N int64 class ids); a missing file is an empty frame."""
    rows: list[tuple[float, float, float, float]] = []
    classes: list[int] = []
    text = path.read_text() if path.is_file() else ""
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        values = [float(v) for v in parts[1:]]
        if len(values) == 4:
            cx, cy, w, h = values
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        elif len(values) >= 6 and len(values) % 2 == 0:
            # A segmentation polygon: ultralytics trains and validates on its bounding box.
            xs, ys = values[0::2], values[1::2]
            x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
        else:
            raise ValueError(f"{path}:{number}: expected 'class cx cy w h' or a polygon, got {line!r}")
        rows.append((x1 * width, y1 * height, x2 * width, y2 * height))
        classes.append(int(parts[0]))
    xyxy = np.asarray(rows, np.float64).reshape(-1, 4)
    return xyxy, np.asarray(classes, np.int64)
