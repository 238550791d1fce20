"""The oracle reviewer: simulated annotators answering from ground-truth YOLO label files.

For benchmarks and the offline demo only, never the default. A capture is matched to its label
file by its source reference: `<stem>.txt` for a frame from an image folder, `<stem>_<frame:06d>.txt`
for frame N of a video or stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from store.labels import add_image, add_label, assign_split, holdout_by_hash
from store.settings import Workspace


@dataclass
class ReviewReport:
    reviewed: int = 0
    boxes: int = 0
    skipped: int = 0  # no ground truth for the capture: an annotator would skip it
    holdout: int = 0


def label_file(labels_dir: Path, source_uri: str, frame_index: int | None) -> Path:
    stem = Path(source_uri).stem
    return labels_dir / (f"{stem}_{frame_index:06d}.txt" if frame_index is not None else f"{stem}.txt")


def read_yolo_labels(path: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(boxes xyxy pixels, class ids) from a YOLO label file."""
    rows = np.loadtxt(path, ndmin=2) if path.stat().st_size else np.zeros((0, 5))
    cls, cx, cy, w, h = rows.T if len(rows) else (np.zeros(0),) * 5
    boxes = np.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], 1)
    return np.clip(boxes, 0, [width, height, width, height]), cls.astype(np.int64)


def review_with_oracle(ws: Workspace, labels_dir: Path, capture_ids: list[str], *, holdout_share: float = 0.2) -> ReviewReport:
    """Verify each capture from the ground truth; a share of them (by hash) join the real holdout."""
    report = ReviewReport()
    with ws.catalog.connect() as con:
        con.begin()
        rows = con.execute(
            "SELECT id, sha256, media_type, frame_width, frame_height, source_uri, source_frame FROM captures "
            "WHERE list_contains(?, id)", [capture_ids]).fetchall()
        for capture_id, sha, media_type, width, height, uri, frame in rows:
            path = label_file(labels_dir, uri, frame)
            if not path.is_file():
                report.skipped += 1
                continue
            boxes, class_ids = read_yolo_labels(path, width, height)
            add_image(con, sha, width, height, media_type, "real", f"capture:{capture_id}")
            wanted = "holdout" if holdout_by_hash(sha, holdout_share) else "train"
            report.holdout += assign_split(con, sha, wanted) == "holdout"
            add_label(con, sha, boxes, class_ids, source="review", annotator="oracle",
                      provenance={"capture": capture_id, "labels": str(path)})
            report.reviewed += 1
            report.boxes += len(boxes)
        con.commit()
    return report
