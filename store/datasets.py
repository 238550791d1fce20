"""Dataset versions: a manifest of (image, label, split, origin) frozen in the catalog,
materialised on demand as a YOLO folder of links to the blobs.

Validation is the real holdout only and only grows; synthetic images are capped in training.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

from edge.protocol import utc_now
from store.blobs import BlobStore
from store.catalog import Catalog
from store.labels import Label, catalog_classes, current_labels

_EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png"}


class DatasetError(ValueError):
    pass


@dataclass(frozen=True)
class DatasetVersion:
    version: int
    manifest_sha256: str
    n_train: int
    n_holdout: int
    n_synthetic: int
    created: bool  # False when the labels had not changed and the latest version was reused


def synthetic_cap(schedule: float | Sequence[float], version_index: int) -> float:
    """Cap on the synthetic share of training images for the n-th dataset version (0-based).

    A schedule ramps the cap up as versions accumulate (e.g. 0.1, 0.2, 0.3); its last value holds.
    """
    caps = [schedule] if isinstance(schedule, int | float) else list(schedule)
    if not caps or any(not 0.0 <= c < 1.0 for c in caps):
        raise DatasetError(f"synthetic cap(s) {caps} must lie in [0, 1)")
    return float(caps[min(version_index, len(caps) - 1)])


def _pick_synthetic(synthetic: list[Label], n_real_train: int, cap: float) -> list[Label]:
    # n_s / (n_real + n_s) <= cap  <=>  n_s <= cap * n_real / (1 - cap)
    allowed = int(cap * n_real_train / (1.0 - cap) + 1e-9)
    return sorted(synthetic, key=lambda label: label.image_sha256)[:allowed]


def build_dataset(catalog: Catalog, *, cap: float | Sequence[float] = 0.3) -> DatasetVersion:
    """Freeze the current verified labels into a new dataset version (or reuse an identical one)."""
    with catalog.connect() as con:
        con.begin()
        labels = current_labels(con)
        previous = con.execute("SELECT max(version), count(*) FROM datasets").fetchone()
        latest, n_versions = previous[0], previous[1]
        real_train = [x for x in labels if x.origin == "real" and x.split == "train"]
        holdout = [x for x in labels if x.origin == "real" and x.split == "holdout"]
        synthetic = _pick_synthetic([x for x in labels if x.origin == "synthetic"], len(real_train),
                                    synthetic_cap(cap, n_versions))
        if not real_train or not holdout:
            raise DatasetError(f"a dataset needs real training and holdout images; have {len(real_train)} "
                               f"train and {len(holdout)} holdout (import some with `edgeloop import`)")
        items = [(x, "train") for x in real_train + synthetic] + [(x, "val") for x in holdout]
        manifest = "\n".join(sorted(f"{x.image_sha256} {split} {x.origin} {x.label_hash}" for x, split in items))
        manifest_sha = hashlib.sha256(manifest.encode()).hexdigest()
        if latest is not None:
            _check_holdout_grows(con, latest, {x.image_sha256 for x in holdout})
            same = con.execute("SELECT manifest_sha256 FROM datasets WHERE version = ?", [latest]).fetchone()[0]
            if same == manifest_sha:
                con.rollback()
                return DatasetVersion(latest, manifest_sha, len(real_train) + len(synthetic), len(holdout),
                                      len(synthetic), created=False)
        version = (latest or 0) + 1
        params = {"synthetic_cap": synthetic_cap(cap, n_versions), "synthetic_available": sum(
            x.origin == "synthetic" for x in labels), "classes": catalog_classes(con)}
        con.execute(
            "INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?, ?)",
            [version, utc_now(), manifest_sha, len(real_train) + len(synthetic), len(holdout), len(synthetic),
             json.dumps(params)],
        )
        con.executemany(
            "INSERT INTO dataset_items VALUES (?, ?, ?, ?, ?, ?)",
            [[version, x.image_sha256, split, x.origin, x.id, x.label_hash] for x, split in items],
        )
        con.commit()
    return DatasetVersion(version, manifest_sha, len(real_train) + len(synthetic), len(holdout), len(synthetic),
                          created=True)


def _check_holdout_grows(con: duckdb.DuckDBPyConnection, latest: int, holdout: set[str]) -> None:
    before = {s for (s,) in con.execute(
        "SELECT image_sha256 FROM dataset_items WHERE version = ? AND split = 'val'", [latest]).fetchall()}
    if lost := before - holdout:
        raise DatasetError(f"{len(lost)} holdout image(s) of dataset v{latest} have no verified label any more; "
                           "the holdout may only grow")


@dataclass(frozen=True)
class YoloItem:
    """One image of a dataset version as YOLO reads it: the blob, its split folder and its label file."""

    image_sha256: str
    split: str  # train | val
    suffix: str  # the image file's extension, from its media type
    label: str  # the label file's text: one "class cx cy w h" line per box, normalised
    origin: str = "real"  # real | synthetic
    width: int = 0  # pixels
    height: int = 0

    @property
    def class_ids(self) -> list[int]:
        return [int(line.split()[0]) for line in self.label.splitlines() if line.strip()]


def yolo_items(catalog: Catalog, version: int) -> tuple[list[str], list[YoloItem]]:
    """Dataset `version`'s class names and items; DatasetError if there is no such version."""
    with catalog.connect() as con:
        names = catalog_classes(con)
        rows = con.execute(
            """
            SELECT d.image_sha256, d.split, d.origin, i.media_type, i.width, i.height,
                   list([b.class_id, b.x1, b.y1, b.x2, b.y2] ORDER BY b.idx) FILTER (WHERE b.idx IS NOT NULL)
            FROM dataset_items d
            JOIN images i ON i.sha256 = d.image_sha256
            LEFT JOIN label_boxes b ON b.label_id = d.label_id
            WHERE d.version = ?
            GROUP BY ALL ORDER BY d.image_sha256
            """,
            [version],
        ).fetchall()
    if not rows:
        raise DatasetError(f"dataset v{version} does not exist")
    items = []
    for sha, split, origin, media_type, width, height, boxes in rows:
        lines = [
            f"{int(c)} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} {(x2 - x1) / width:.6f} "
            f"{(y2 - y1) / height:.6f}"
            for c, x1, y1, x2, y2 in boxes or []
        ]
        label = "\n".join(lines) + ("\n" if lines else "")
        items.append(YoloItem(sha, split, _EXTENSIONS.get(media_type, ".jpg"), label, origin, width, height))
    return names, items


def materialise(catalog: Catalog, blobs: BlobStore, version: int, root: Path, *,
                repeats: Mapping[str, int] | None = None, calibration: Collection[str] = ()) -> Path:
    """Write dataset `version` as a YOLO folder (train/ and val/ of images + labels, data.yaml).

    `repeats` (image sha256 -> times, default 1) writes a training image that many times, as repeat-factor
    sampling asks; `calibration` names training images moved to a calib/ split (data.yaml's "calib") that
    training never sees. Images are symlinks to the blobs where the store is local (copies otherwise). The
    folder is built beside `root` and renamed into place, so a crash never leaves half a data set.
    """
    names, items = yolo_items(catalog, version)
    root = Path(root)
    tmp = root.with_name(f".{root.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    splits = ("train", "val", "calib") if calibration else ("train", "val")
    for split in splits:
        (tmp / split / "images").mkdir(parents=True)
        (tmp / split / "labels").mkdir(parents=True)
    calibration, repeats = set(calibration), repeats or {}
    for item in items:
        split = "calib" if item.split == "train" and item.image_sha256 in calibration else item.split
        times = repeats.get(item.image_sha256, 1) if split == "train" else 1
        source = blobs.local_path(item.image_sha256)
        for k in range(times):  # a copy's own file name: ultralytics keys its label cache by image path
            stem = item.image_sha256 if k == 0 else f"{item.image_sha256}_r{k}"
            image = tmp / split / "images" / f"{stem}{item.suffix}"
            if source is not None:
                os.symlink(source.resolve(), image)
            elif k == 0:
                image.write_bytes(blobs.get(item.image_sha256))
            else:
                os.symlink(f"{item.image_sha256}{item.suffix}", image)
            (tmp / split / "labels" / f"{stem}.txt").write_text(item.label)
    data = {"path": str(root.resolve()), "train": "train/images", "val": "val/images",
            **({"calib": "calib/images"} if calibration else {}),
            "names": names, "edgeloop_dataset_version": version}
    # JSON is valid YAML: no yaml dependency in the store.
    (tmp / "data.yaml").write_text(json.dumps(data, indent=1) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    return root / "data.yaml"
