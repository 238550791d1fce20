"""`edgeloop import`: an existing YOLO-format data set becomes verified labels with provenance.

Everything is read and checked first (images as strictly as the ingest API checks uploads); the catalog is
written in one transaction or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import track

from feedback.ingest.images import check_image
from feedback.ingest.problems import Rejected
from store.blobs import sha256_hex
from store.labels import Split, add_image, add_label, assign_split, current_labels, ensure_classes, label_hash
from store.settings import Workspace

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# What the bytes say, not the name: a text file called .jpg is not a JPEG.
_SIGNATURES = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png"}
_LISTED = 10  # bad images named in a refusal; the rest are counted


class ImportProblem(ValueError):
    """The folder is not a usable YOLO data set; the message names the file and line."""


@dataclass
class ImportReport:
    images: int = 0
    boxes: int = 0
    labels_added: int = 0
    unchanged: int = 0  # same image, same label as already in the catalog
    kept_in_holdout: int = 0  # asked for train, but the image is holdout for good
    skipped: list[str] = field(default_factory=list)  # "path: why" of each bad image left out (skip_bad)


@dataclass(frozen=True)
class _Item:
    path: Path
    data: bytes
    sha: str
    media_type: str
    width: int
    height: int
    boxes: np.ndarray
    class_ids: np.ndarray


def class_names(directory: Path, names: Sequence[str] | None = None) -> list[str]:
    """Class names from the caller, else DIR/data.yaml (`names`), else DIR/classes.txt."""
    if names:
        return list(names)
    if (directory / "data.yaml").is_file():
        import yaml

        found = yaml.safe_load((directory / "data.yaml").read_text()).get("names")
        if isinstance(found, dict):
            return [found[k] for k in sorted(found)]
        if isinstance(found, list):
            return found
    if (directory / "classes.txt").is_file():
        return [line.strip() for line in (directory / "classes.txt").read_text().splitlines() if line.strip()]
    raise ImportProblem(f"{directory} has no data.yaml or classes.txt: pass the class names with --names")


class BadImage(ValueError):
    """One image the import cannot take (not a JPEG or PNG, or not wholly decodable); the message says why."""


def check_file(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """(media type, width, height) of an image the ingest API would accept, else BadImage: the same strict
    decode as an upload, so a truncated JPEG is refused here as `edgeloop upload` refuses it."""
    media_type = next((m for magic, m in _SIGNATURES.items() if data.startswith(magic)), None)
    if media_type is None:
        raise BadImage("not a JPEG or PNG image" + (" (empty file)" if not data else ""))
    try:
        width, height = check_image(data, media_type, max_pixels)
    except Rejected as exc:
        raise BadImage(str(exc.detail)) from None
    return media_type, width, height


def _read_item(image_path: Path, labels_dir: Path, n_classes: int, max_pixels: int) -> _Item:
    data = image_path.read_bytes()
    media_type, width, height = check_file(data, max_pixels)
    rows = []
    label_path = labels_dir / f"{image_path.stem}.txt"
    if label_path.is_file():  # no label file: an image with no objects (background)
        for n, line in enumerate(label_path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.split()
            try:
                cls, cx, cy, w, h = int(parts[0]), *map(float, parts[1:5])
                if len(parts) != 5:
                    raise ValueError
            except (ValueError, IndexError):
                raise ImportProblem(f"{label_path}:{n}: expected 'class cx cy w h', got {line!r}") from None
            if not 0 <= cls < n_classes:
                raise ImportProblem(f"{label_path}:{n}: class {cls} is outside 0..{n_classes - 1}")
            if not (0 <= cx <= 1 and 0 <= cy <= 1 and 0 < w <= 1 and 0 < h <= 1):
                raise ImportProblem(f"{label_path}:{n}: coordinates must be normalised to [0, 1], got {line!r}")
            x1, y1 = max(0.0, (cx - w / 2) * width), max(0.0, (cy - h / 2) * height)
            x2, y2 = min(float(width), (cx + w / 2) * width), min(float(height), (cy + h / 2) * height)
            rows.append((cls, x1, y1, x2, y2))
    table = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
    return _Item(image_path, data, sha256_hex(data), media_type, width, height, table[:, 1:],
                 table[:, 0].astype(np.int64))


def import_yolo(
    workspace: Workspace,
    directory: Path,
    split: Split,
    *,
    names: Sequence[str] | None = None,
    progress: bool = True,
    skip_bad: bool = False,
) -> ImportReport:
    """Import DIR's images and labels. A bad image (see `check_file`) refuses the whole import, naming every
    bad one, unless `skip_bad`: then the rest are imported and the report lists those left out."""
    directory = Path(directory)
    images_dir, labels_dir = directory / "images", directory / "labels"
    if not images_dir.is_dir():
        raise ImportProblem(f"{directory} has no images/ folder (expected images/ and labels/)")
    classes = class_names(directory, names)
    paths = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ImportProblem(f"{images_dir} holds no .jpg/.jpeg/.png images")
    items, bad = [], []
    # On stderr, and only on a terminal: stdout keeps only the result, and a finished bar leaves no line behind.
    screen = Console(stderr=True)
    for path in track(paths, "reading", disable=not progress or not screen.is_terminal, transient=True, console=screen):
        try:
            items.append(_read_item(path, labels_dir, len(classes), workspace.settings.max_image_pixels))
        except BadImage as exc:
            bad.append(f"{path}: {exc}")
    if bad and not skip_bad:
        named = "; ".join(bad[:_LISTED]) + (f"; and {len(bad) - _LISTED} more" if len(bad) > _LISTED else "")
        raise ImportProblem(f"{len(bad)} of {len(paths)} images cannot be imported, so nothing was: {named} "
                            "(fix or remove them, or pass --skip-bad to import the rest)")
    if not items:
        raise ImportProblem(f"none of the {len(paths)} images in {images_dir} can be imported: "
                            f"{'; '.join(bad[:_LISTED])}")

    for item in items:  # blobs are content-addressed: writing them early can't do harm
        workspace.blobs.put(item.data)
    report = ImportReport(images=len(items), boxes=sum(len(i.boxes) for i in items), skipped=bad)
    with workspace.catalog.connect() as con:
        con.begin()
        ensure_classes(con, classes)
        latest = {label.image_sha256: label.label_hash for label in current_labels(con)}
        for item in items:
            add_image(con, item.sha, item.width, item.height, item.media_type, "real", f"import:{item.path.name}")
            if assign_split(con, item.sha, split) != split:
                report.kept_in_holdout += 1
            if latest.get(item.sha) == label_hash(item.sha, item.boxes, item.class_ids):
                report.unchanged += 1
                continue
            add_label(con, item.sha, item.boxes, item.class_ids, source="import",
                      provenance={"import": str(directory.resolve()), "file": item.path.name})
            report.labels_added += 1
        con.commit()
    return report
