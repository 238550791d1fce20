"""Pre-label a folder of images (a new site's first frames) with a teacher, and send them for review.

Each image becomes a capture, exactly as a device's upload would (blob, inbox record, bulk load), with the teacher's
boxes as its detections; review then pushes it like any capture, so the annotator starts from those boxes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from edge.protocol import CaptureMeta, Detection, SourceRef
from feedback.review.workflow import Listed, PushReport, Reviewer, push_captures
from feedback.teachers.port import Teacher
from store.inbox import CaptureRecord, load_inbox
from store.labels import catalog_classes, ensure_classes
from store.settings import Workspace

MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
DEVICE = "autolabel"  # captures from a folder come from no device; this name says where they came from
STRATEGY = "autolabel"


@dataclass
class AutolabelReport:
    images: int = 0  # image files found
    new: int = 0  # captures created now
    known: int = 0  # images captured by an earlier run (same camera and content): not labelled again
    unreadable: list[str] = field(default_factory=list)
    boxes: int = 0  # teacher boxes on the new captures
    push: PushReport | None = None


def capture_id(camera: str, sha256: str) -> str:
    return f"{camera}-{sha256[:24]}"[-64:]


def camera_name(folder: Path) -> str:
    """The folder's name as a camera name (letters, digits, '_', '.', '-')."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", folder.resolve().name).lstrip(".")[:40]
    return name or "folder"


def autolabel_folder(ws: Workspace, folder: Path, teacher: Teacher, *, reviewer: Reviewer,
                     camera: str | None = None, public_url: str | None = None,
                     project_title: str = "edgeloop autolabel") -> AutolabelReport:
    """Label every image directly in `folder` with `teacher` and push them to `reviewer` as pre-annotated tasks.

    The teacher's classes must be the catalog's (adopted when the catalog has none yet). Re-running on the same
    folder pushes nothing twice: a capture id is its camera and content.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of images")
    with ws.catalog.connect() as con:
        classes = catalog_classes(con)
        if not classes:
            ensure_classes(con, list(teacher.classes))
        elif list(classes) != list(teacher.classes):
            raise ValueError(f"the teacher labels {list(teacher.classes)} but the catalog's classes are {classes}")
    camera = camera or camera_name(folder)
    report = AutolabelReport()
    picks: list[Listed] = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in MEDIA_TYPES and p.is_file()):
        report.images += 1
        data = path.read_bytes()
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            report.unreadable.append(path.name)
            continue
        sha = ws.blobs.put(data)
        cid = capture_id(camera, sha)
        if ws.inbox.has_capture(cid):
            report.known += 1
            continue
        found = teacher.predict(image)
        h, w = image.shape[:2]
        boxes = np.clip(np.asarray(found.xyxy, float).reshape(-1, 4), 0, [w, h, w, h])
        scores = found.confidence if found.confidence is not None else np.ones(len(found))
        detections = [Detection(xyxy=tuple(float(v) for v in box), confidence=float(np.clip(score, 0, 1)),
                                class_id=int(c), class_name=teacher.classes[int(c)])
                      for box, score, c in zip(boxes, scores, found.class_id, strict=True)
                      if box[2] > box[0] and box[3] > box[1]]
        meta = CaptureMeta(
            device=DEVICE, camera=camera, captured_at=datetime.fromtimestamp(path.stat().st_mtime, timezone.utc),
            frame_width=w, frame_height=h, model_version=teacher.name[:128], detections=detections,
            triggers=["operator"], source=SourceRef(uri=str(path.resolve())),
        )  # fmt: skip
        ws.inbox.add_capture(CaptureRecord(id=cid, sha256=sha, media_type=MEDIA_TYPES[path.suffix.lower()],
                                           bytes=len(data), meta=meta))
        report.new += 1
        report.boxes += len(detections)
        picks.append(Listed(cid, score=float(np.mean(scores)) if len(scores) else 0.0))
    load_inbox(ws.catalog, ws.inbox)
    if picks:
        report.push = push_captures(ws, picks, reviewer=reviewer, strategy=STRATEGY, public_url=public_url,
                                    project_title=project_title)
    return report


def teacher_classes(ws: Workspace, given: Sequence[str] | None) -> list[str]:
    """The classes to ask the teacher for: the catalog's, else `given`; both must agree when both exist."""
    with ws.catalog.connect() as con:
        known = catalog_classes(con)
    if known and given and list(given) != list(known):
        raise ValueError(f"--classes {','.join(given)} differ from the catalog's classes {','.join(known)}")
    if not (known or given):
        raise ValueError("the catalog has no class list yet: name the classes to look for with --classes a,b,c")
    return list(known or given or [])
