"""Failure matching on hand-built boxes, and failure records in a real DuckDB workspace."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

import numpy as np
import pytest

from edge.protocol import CaptureMeta, Detection, SourceRef
from feedback.review.failures import Failure, box_iou, failure_summary, format_failures, match_failures, record_failures
from store.inbox import CaptureRecord, load_inbox
from store.labels import add_image, add_label, ensure_classes
from store.settings import Settings, Workspace

TRUE = (0.0, 0.0, 100.0, 100.0)  # area 10 000: a prediction (0, 0, 100, h) has IoU h / 100


def match(truths: list[tuple[tuple, int]], preds: list[tuple[tuple, int, float]], **kw) -> list[Failure]:
    """match_failures on (box, class) truths and (box, class, confidence) predictions."""
    return match_failures(
        np.array([b for b, _ in truths]).reshape(-1, 4), np.array([c for _, c in truths]),
        np.array([b for b, _, _ in preds]).reshape(-1, 4), np.array([c for _, c, _ in preds]),
        np.array([s for _, _, s in preds]), **kw,
    )


def test_box_iou_is_pairwise():
    a = np.array([TRUE, (0, 0, 0, 0)])
    b = np.array([TRUE, (0, 0, 100, 60), (200, 200, 300, 300)])
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 0.6, 0.0], [0.0, 0.0, 0.0]])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 3)


def test_a_correct_detection_leaves_no_record():
    assert match([(TRUE, 0)], [(TRUE, 0, 0.9)]) == []


def test_iou_06_same_class_is_correct():
    assert match([(TRUE, 0)], [((0, 0, 100, 60), 0, 0.9)]) == []


def test_iou_06_other_class_is_a_confusion():
    assert match([(TRUE, 0)], [((0, 0, 100, 60), 2, 0.8)]) == [
        Failure("confusion", true_class=0, predicted_class=2, confidence=0.8, iou=0.6, box=TRUE)
    ]


def test_iou_03_same_class_is_poor_localization():
    assert match([(TRUE, 1)], [((0, 0, 100, 30), 1, 0.7)]) == [
        Failure("localization", true_class=1, predicted_class=1, confidence=0.7, iou=0.3, box=TRUE)
    ]


def test_iou_03_other_class_is_missed_and_spurious():
    # Poor localisation is only for the right class; otherwise the model simply got both wrong.
    assert [f.kind for f in match([(TRUE, 1)], [((0, 0, 100, 30), 2, 0.7)])] == ["missed", "spurious"]


def test_iou_005_is_missed_and_spurious():
    assert match([(TRUE, 0)], [((0, 0, 100, 5), 0, 0.4)]) == [
        Failure("missed", true_class=0, predicted_class=None, confidence=None, iou=None, box=TRUE),
        Failure("spurious", true_class=None, predicted_class=0, confidence=0.4, iou=None, box=(0, 0, 100, 5)),
    ]


def test_thresholds_are_parameters():
    assert [f.kind for f in match([(TRUE, 0)], [((0, 0, 100, 60), 0, 0.9)], iou=0.7)] == ["localization"]
    assert [f.kind for f in match([(TRUE, 0)], [((0, 0, 100, 5), 0, 0.9)], localisation_iou=0.01)] == ["localization"]


def test_one_prediction_covering_two_true_boxes_matches_only_one():
    left, right = (0, 0, 100, 100), (100, 0, 200, 100)
    # IoU 10 000 / 18 000 with the left box, 8 000 / 20 000 with the right: the left one wins.
    failures = match([(left, 0), (right, 0)], [((0, 0, 180, 100), 0, 0.9)])
    assert failures == [Failure("missed", 0, None, None, None, right)]


def test_class_aware_matching_comes_first():
    # The other-class prediction overlaps more, but the same-class one is the correct detection.
    failures = match([(TRUE, 0)], [((0, 0, 100, 90), 1, 0.9), ((0, 0, 100, 60), 0, 0.5)])
    assert failures == [Failure("spurious", None, 1, 0.9, None, (0, 0, 100, 90))]


def test_equal_iou_goes_to_the_more_confident_prediction():
    failures = match([(TRUE, 0)], [(TRUE, 0, 0.3), (TRUE, 0, 0.8)])
    assert failures == [Failure("spurious", None, 0, 0.3, 1.0, TRUE)]  # the other is a duplicate of the object


def test_a_second_box_on_a_found_object_is_spurious_with_its_overlap():
    failures = match([(TRUE, 0)], [(TRUE, 0, 0.9), ((0, 0, 100, 60), 0, 0.4), ((0, 0, 100, 30), 0, 0.3),
                                   ((0, 0, 100, 70), 2, 0.2)])
    # IoU 0.6 with a found object of its class: a duplicate. IoU 0.3 is too little to say so, and a box of
    # another class is a wrong object, not a second box on this one.
    assert failures == [Failure("spurious", None, 0, 0.4, pytest.approx(0.6), (0, 0, 100, 60)),
                        Failure("spurious", None, 0, 0.3, None, (0, 0, 100, 30)),
                        Failure("spurious", None, 2, 0.2, None, (0, 0, 100, 70))]


def test_empty_inputs():
    empty = np.zeros((0, 4))
    none = np.zeros(0)
    assert match_failures(empty, none, empty, none, none) == []
    assert match_failures(np.array([TRUE]), np.array([3]), empty, none, none) == [
        Failure("missed", 3, None, None, None, TRUE)
    ]
    assert match_failures(empty, none, np.array([TRUE]), np.array([3]), np.array([0.5])) == [
        Failure("spurious", None, 3, 0.5, None, TRUE)
    ]


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="one entry per box"):
        match_failures(np.array([TRUE]), np.zeros(0), np.zeros((0, 4)), np.zeros(0), np.zeros(0))


# ----------------------------------------------------------------------------- in the catalog

SHA = hashlib.sha256(b"frame 1").hexdigest()
DETECTIONS = [
    Detection(xyxy=(10, 10, 50, 60), confidence=0.9, class_id=0),  # correct
    Detection(xyxy=(100, 100, 200, 200), confidence=0.7, class_id=1),  # a vest called a helmet
    Detection(xyxy=(500, 300, 600, 330), confidence=0.6, class_id=0),  # IoU 0.3 with its person
    Detection(xyxy=(300, 300, 340, 340), confidence=0.3, class_id=5),  # nothing there; no such class
]
TRUTH_BOXES = [(10, 10, 50, 60), (100, 100, 200, 200), (500, 300, 600, 400), (400, 50, 450, 120)]
TRUTH_CLASSES = [0, 2, 0, 1]
EXPECTED = [  # (kind, true, predicted, confidence, iou, x1, y1, x2, y2), ordered by kind then x1
    ("confusion", 2, 1, 0.7, 1.0, 100.0, 100.0, 200.0, 200.0),
    ("localization", 0, 0, 0.6, pytest.approx(0.3), 500.0, 300.0, 600.0, 400.0),
    ("missed", 1, None, None, None, 400.0, 50.0, 450.0, 120.0),
    ("spurious", None, 5, 0.3, None, 300.0, 300.0, 340.0, 340.0),
]


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace(Settings(workspace=tmp_path, fsync=False))
    meta = CaptureMeta(
        device="jetson-1", camera="cam0", captured_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
        frame_width=640, frame_height=480, model_version="m1", detections=DETECTIONS,
        triggers=["uncertainty"], source=SourceRef(uri="rtsp://cam0/stream", frame_index=1),
    )
    ws.inbox.add_capture(CaptureRecord(id="cap1", sha256=SHA, media_type="image/jpeg", bytes=1000, meta=meta))
    load_inbox(ws.catalog, ws.inbox)
    with ws.catalog.connect() as con:
        ensure_classes(con, ["person", "helmet", "vest"])
        add_image(con, SHA, 640, 480, "image/jpeg", "real", "capture:cap1")
    return ws


def _review(ws: Workspace, boxes: list[tuple], classes: list[int]) -> tuple[str, int]:
    """Verify the capture with these boxes and record its failures, in one transaction."""
    with ws.catalog.connect() as con:
        con.begin()
        label_id = add_label(con, SHA, np.array(boxes).reshape(-1, 4), np.array(classes), source="review")
        n = record_failures(con, "cap1", label_id)
        con.commit()
    return label_id, n


def _rows(ws: Workspace) -> list[tuple]:
    with ws.catalog.connect() as con:
        return con.execute(
            "SELECT kind, true_class, predicted_class, confidence, iou, x1, y1, x2, y2 FROM failures ORDER BY kind, x1"
        ).fetchall()


def test_record_failures_writes_one_row_per_failure(ws):
    label_id, n = _review(ws, TRUTH_BOXES, TRUTH_CLASSES)

    assert n == 4
    assert _rows(ws) == EXPECTED
    with ws.catalog.connect() as con:
        assert con.execute("SELECT DISTINCT capture_id, label_id, model_version FROM failures").fetchall() == [
            ("cap1", label_id, "m1")
        ]
        assert con.execute("SELECT count(DISTINCT id) FROM failures").fetchone()[0] == 4


def test_recording_twice_replaces_the_rows(ws):
    _review(ws, TRUTH_BOXES, TRUTH_CLASSES)
    with ws.catalog.connect() as con:
        first_ids = {i for (i,) in con.execute("SELECT id FROM failures").fetchall()}
        label_id = con.execute("SELECT DISTINCT label_id FROM failures").fetchone()[0]
        assert record_failures(con, "cap1", label_id) == 4
        second_ids = {i for (i,) in con.execute("SELECT id FROM failures").fetchall()}
    assert _rows(ws) == EXPECTED
    assert len(second_ids) == 4 and not first_ids & second_ids

    # A re-review that agrees with the model on everything but the unknown class leaves one record.
    _review(ws, [d.xyxy for d in DETECTIONS[:3]], [0, 1, 0])
    assert [r[0] for r in _rows(ws)] == ["spurious"]


def test_record_failures_refuses_a_label_of_another_image(ws):
    other = hashlib.sha256(b"frame 2").hexdigest()
    with ws.catalog.connect() as con:
        add_image(con, other, 640, 480, "image/jpeg", "real", "import:x")
        label_id = add_label(con, other, np.zeros((0, 4)), np.zeros(0), source="import")
        with pytest.raises(ValueError, match="not of capture"):
            record_failures(con, "cap1", label_id)
        with pytest.raises(LookupError):
            record_failures(con, "no-such-capture", label_id)


def test_failure_summary_counts_by_class_and_kind(ws):
    _review(ws, TRUTH_BOXES, TRUTH_CLASSES)

    summary = failure_summary(ws.catalog)

    zero = {"missed": 0, "spurious": 0, "confusion": 0, "localization": 0}
    assert summary == {
        "model_version": None,
        "totals": {"missed": 1, "spurious": 1, "confusion": 1, "localization": 1, "total": 4, "captures": 1},
        "by_class": {
            "person": {**zero, "localization": 1, "total": 1},
            "helmet": {**zero, "missed": 1, "total": 1},
            "vest": {**zero, "confusion": 1, "total": 1},
            "5": {**zero, "spurious": 1, "total": 1},  # not a catalog class: shown by id
        },
        "confusions": {"vest → helmet": 1},
    }
    assert json.loads(json.dumps(summary)) == summary
    assert failure_summary(ws.catalog, model_version="m1")["totals"]["total"] == 4
    assert failure_summary(ws.catalog, model_version="m2")["totals"] == {**zero, "total": 0, "captures": 0}
    assert format_failures(summary).row_count == 5  # four classes and the totals
