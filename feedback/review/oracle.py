"""The oracle reviewer: simulated annotators answering from ground-truth YOLO label files.

For benchmarks and the offline demo only, never the default. A capture is matched to its label
file by its source reference: `<stem>.txt` for a frame from an image folder, `<stem>_<frame:06d>.txt`
for frame N of a video or stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import supervision as sv

from feedback.review.workflow import PushedTask, ReviewItem, ReviewResult


def label_file(labels_dir: Path, source_uri: str, frame_index: int | None) -> Path:
    stem = Path(source_uri).stem
    return labels_dir / (f"{stem}_{frame_index:06d}.txt" if frame_index is not None else f"{stem}.txt")


def read_yolo_labels(path: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(boxes xyxy pixels, class ids) from a YOLO label file."""
    rows = np.loadtxt(path, ndmin=2) if path.stat().st_size else np.zeros((0, 5))
    cls, cx, cy, w, h = rows.T if len(rows) else (np.zeros(0),) * 5
    boxes = np.stack([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height], 1)
    return np.clip(boxes, 0, [width, height, width, height]), cls.astype(np.int64)


class OracleReviewer:
    """Answers every task at once from `labels_dir`; a capture without a label file is skipped."""

    name = "oracle"
    shows_images = False

    def __init__(self, labels_dir: Path) -> None:
        self.labels_dir = Path(labels_dir)

    def ensure_project(self, title: str, classes: Sequence[str]) -> None:
        return None  # the label files are the whole project

    def push(self, project: str | None, items: Sequence[ReviewItem], classes: Sequence[str]) -> list[str]:
        return [item.capture_id for item in items]  # nothing to hand over: the oracle looks at pull time

    def pull(self, project: str | None, classes: Sequence[str],
             tasks: Sequence[PushedTask] | None = None) -> list[ReviewResult]:
        if tasks is None:
            raise ValueError("the oracle answers only for tasks it is shown (it keeps no project)")
        return [self._answer(task) for task in tasks]

    def _answer(self, task: PushedTask) -> ReviewResult:
        item = task.item
        path = label_file(self.labels_dir, item.source_uri or item.capture_id, item.source_frame)
        if not path.is_file():
            return ReviewResult(task.task_id, item.capture_id, "skipped", annotator="oracle")
        boxes, class_ids = read_yolo_labels(path, item.width, item.height)
        return ReviewResult(task.task_id, item.capture_id, "verified", sv.Detections(boxes, class_id=class_ids),
                            annotator="oracle",
                            annotation_id=str(path),
                            updated_at=datetime.fromtimestamp(path.stat().st_mtime, timezone.utc))

