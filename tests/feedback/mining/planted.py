"""A camera site with planted blind spots, for the mining tests: the deployed model misses bare heads only when
the frame is dark, or only when they are small and far away; every other object it detects.

Captures go through the inbox, verdicts are verified labels, and failures come from the review's own matching.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from edge.protocol import CaptureMeta, Detection, SourceRef, utc_now
from feedback.review.failures import record_failures
from feedback.scenes import CLASSES, encode_jpeg, render_scene
from store.blobs import sha256_hex
from store.inbox import CaptureRecord, load_inbox
from store.labels import add_image, add_label, ensure_classes
from store.models import register_model
from store.settings import Settings, Workspace

BARE = 1  # no_helmet: the rare class
HEADS = (0.3, 0.5, 0.1, 0.1)  # many heads, half of them bare, so each frame holds a few
DARK_GAIN = 0.3
DAYLIGHT = 130.0  # mean grey of a far frame's scenes


def dark_frame(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A scene at night: the same objects, the light cut to DARK_GAIN."""
    s = render_scene(seed, class_weights=HEADS)
    return (s.image * DARK_GAIN).astype(np.uint8), s.boxes.astype(np.float64), s.class_ids


def far_frame(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A wide view in daylight: nine scenes side by side, seen from three times as far, so every object is
    small; each scene is lit to the same mid-grey, so that "far" never also means "dark"."""
    big = np.zeros((720, 960, 3), np.uint8)
    boxes, classes = [], []
    for i in range(9):
        s = render_scene(seed * 10 + i, class_weights=HEADS)
        r, c = divmod(i, 3)
        big[r * 240:(r + 1) * 240, c * 320:(c + 1) * 320] = np.clip(s.image * (DAYLIGHT / s.image.mean()), 0, 255)
        boxes.append(s.boxes + [c * 320, r * 240, c * 320, r * 240])
        classes.append(s.class_ids)
    return (cv2.resize(big, (320, 240), interpolation=cv2.INTER_AREA), np.concatenate(boxes).astype(np.float64) / 3,
            np.concatenate(classes))


def plain_frame(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = render_scene(seed, class_weights=HEADS)
    return s.image, s.boxes.astype(np.float64), s.class_ids


def make_site(root: Path, weights: Path) -> Workspace:
    """An empty workspace with the scene classes and `weights` as the champion (whose features embed crops)."""
    ws = Workspace(Settings(workspace=root, fsync=False))
    data = weights.read_bytes()
    ws.blobs.put(data)
    with ws.catalog.connect() as con:
        ensure_classes(con, list(CLASSES))
        model_id = register_model(con, sha256_hex(data), classes=list(CLASSES), imgsz=160)
        con.execute("UPDATE models SET status = 'champion' WHERE id = ?", [model_id])
    return ws


def review(ws: Workspace, frames: Iterable[tuple[str, tuple[np.ndarray, np.ndarray, np.ndarray]]], *,
           blind: bool, start: int = 0) -> dict[str, str]:
    """Upload each (group, frame) as a capture the model reported every object of, except bare heads when
    `blind` (the planted blind spot), and a spurious box on plain frames (where nothing is) and on "dup" frames
    (a second box on the first object, shifted by a tenth of its width); then verify each with its ground truth
    and record failures. Returns capture id -> group."""
    groups = {}
    captured = []
    for i, (group, (image, boxes, classes)) in enumerate(frames, start):
        data = encode_jpeg(image, 95)
        sha = ws.blobs.put(data)
        seen = [(b, c) for b, c in zip(boxes, classes, strict=True) if not (blind and c == BARE)]
        detections = [Detection(xyxy=tuple(map(float, b)), confidence=0.6, class_id=int(c)) for b, c in seen]
        if group == "plain":
            detections.append(Detection(xyxy=(2.0, 2.0, 30.0, 30.0), confidence=0.3, class_id=0))
        if group == "dup" and len(boxes):
            x1, y1, x2, y2 = map(float, boxes[0])
            shift = (x2 - x1) / 10
            detections.append(Detection(xyxy=(x1 + shift, y1, x2 + shift, y2), confidence=0.3,
                                        class_id=int(classes[0])))
        meta = CaptureMeta(device="dock-1", camera=f"cam-{group}", captured_at=utc_now(), frame_width=image.shape[1],
                           frame_height=image.shape[0], model_version="m1", triggers=["uncertainty"],
                           source=SourceRef(uri="site.mp4", frame_index=i), detections=detections)
        ws.inbox.add_capture(CaptureRecord(id=sha, sha256=sha, media_type="image/jpeg", bytes=len(data), meta=meta))
        captured.append((sha, image.shape, boxes, classes))
        groups[sha] = group
    load_inbox(ws.catalog, ws.inbox)
    with ws.catalog.connect() as con:
        con.begin()
        for sha, shape, boxes, classes in captured:
            add_image(con, sha, shape[1], shape[0], "image/jpeg", "real", f"capture:{sha}")
            label_id = add_label(con, sha, boxes, classes, source="review", annotator="oracle")
            record_failures(con, sha, label_id)
        con.commit()
    return groups


def planted_site(root: Path, weights: Path, *, dark: Iterable[int], far: Iterable[int],
                 plain: Iterable[int]) -> tuple[Workspace, dict[str, str]]:
    """The site: bare heads missed in the `dark` and `far` frames, seen in the `plain` ones."""
    ws = make_site(root, weights)
    frames = [("dark", dark_frame(s)) for s in dark] + [("far", far_frame(s)) for s in far]
    groups = review(ws, frames, blind=True)
    groups |= review(ws, [("plain", plain_frame(s)) for s in plain], blind=False, start=len(groups))
    return ws, groups


def missed_bare_heads(ws: Workspace, groups: dict[str, str]) -> dict[str, str]:
    """failure id -> planted group ("dark" or "far") of every missed bare head."""
    with ws.catalog.connect() as con:
        rows = con.execute("SELECT id, capture_id FROM failures WHERE kind = 'missed' AND true_class = ?",
                           [BARE]).fetchall()
    return {fid: groups[capture] for fid, capture in rows}
