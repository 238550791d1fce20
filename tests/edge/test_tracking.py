"""Tests for the ByteTrack wrapper: stable ids for moving boxes, unique ids across resets."""

from __future__ import annotations

import numpy as np
import supervision as sv

from edge.tracking import Tracker


def boxes(*xyxy: tuple[float, float, float, float], confidence: float = 0.9, class_id: int = 0) -> sv.Detections:
    n = len(xyxy)
    return sv.Detections(
        xyxy=np.array(xyxy, dtype=float).reshape(n, 4),
        confidence=np.full(n, confidence),
        class_id=np.full(n, class_id),
        data={"class_name": np.array(["person"] * n)},
    )


def test_a_box_moving_a_few_pixels_per_frame_keeps_its_id() -> None:
    tracker = Tracker()
    ids = []
    for frame in range(40):
        x = 100 + 3 * frame
        out = tracker.update(boxes((x, 50, x + 60, 170), (500 - 2 * frame, 300, 560 - 2 * frame, 420)))
        assert len(out) == 2 and out.tracker_id is not None
        ids.append(tuple(sorted(out.tracker_id.tolist())))
    confirmed = ids[2:]  # ByteTrack confirms a track on its second hit
    assert len(set(confirmed)) == 1 and -1 not in confirmed[0]
    assert len(set(confirmed[0])) == 2
    assert out.data["class_name"].tolist() == ["person", "person"]


def test_ids_stay_unique_across_a_reset() -> None:
    tracker = Tracker()
    for _ in range(3):
        first = tracker.update(boxes((10, 10, 50, 50)))
    tracker.reset()
    for _ in range(3):
        second = tracker.update(boxes((10, 10, 50, 50)))
    assert first.tracker_id.tolist() != second.tracker_id.tolist()
    assert second.tracker_id[0] > first.tracker_id[0]


def test_empty_frames_give_empty_tracked_detections() -> None:
    tracker = Tracker()
    out = tracker.update(sv.Detections.empty())
    assert len(out) == 0 and out.tracker_id is not None
