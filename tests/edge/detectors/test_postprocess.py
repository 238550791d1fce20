"""Decoding a detection head: thresholds, class-aware NMS, letterbox undone; as ultralytics does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import torch
from ultralytics.utils import nms as ultralytics_nms
from ultralytics.utils import ops

from edge.detectors.postprocess import (
    apply_class_thresholds,
    class_evidence,
    class_threshold_mask,
    decode,
    decode_end2end,
    empty_detections,
    nms,
    postprocess,
)
from edge.detectors.preprocess import Letterbox, preprocess

NAMES = {0: "helmet", 1: "no_helmet", 2: "no_wear"}
IDENTITY = Letterbox.fit((320, 320), (320, 320))  # frame already at input size: no mapping


def head(rows: list[tuple[float, float, float, float, int, float]], nc: int = 3) -> np.ndarray:
    """A (1, 4 + nc, anchors) output from (cx, cy, w, h, class, score) rows, other scores 0."""
    out = np.zeros((1, 4 + nc, len(rows)), dtype=np.float32)
    for a, (cx, cy, w, h, cls, score) in enumerate(rows):
        out[0, :4, a] = cx, cy, w, h
        out[0, 4 + cls, a] = score
    return out


def test_nms_drops_the_weaker_overlapping_box_of_a_class_and_keeps_other_classes():
    output = head(
        [
            (100, 100, 50, 50, 0, 0.90),  # kept
            (102, 101, 50, 50, 0, 0.80),  # same class, IoU ~0.9 with the first: suppressed
            (100, 100, 50, 50, 1, 0.70),  # same place, another class: kept
            (250, 250, 20, 20, 2, 0.25),  # exactly at the threshold: below it (ultralytics uses >)
            (250, 250, 20, 20, 2, 0.30),  # kept
        ]
    )
    dets = decode(output, IDENTITY, NAMES, conf=0.25, iou=0.7)
    assert isinstance(dets, sv.Detections)
    np.testing.assert_array_equal(dets.class_id, [0, 1, 2])
    np.testing.assert_allclose(dets.confidence, [0.9, 0.7, 0.3])
    np.testing.assert_allclose(dets.xyxy, [[75, 75, 125, 125], [75, 75, 125, 125], [240, 240, 260, 260]])
    assert list(dets.data["class_name"]) == ["helmet", "no_helmet", "no_wear"]


def test_each_box_keeps_only_its_best_class():
    output = head([(100, 100, 40, 40, 0, 0.6)])
    output[0, 4 + 2, 0] = 0.8
    dets = decode(output, IDENTITY, NAMES)
    np.testing.assert_array_equal(dets.class_id, [2])
    np.testing.assert_allclose(dets.confidence, [0.8])


def test_agnostic_nms_and_max_det():
    rows = [(100, 100, 50, 50, 0, 0.9), (100, 100, 50, 50, 1, 0.7)] + [(20 * i, 300, 10, 10, 2, 0.5) for i in range(5)]
    output = head(rows)
    assert len(decode(output, IDENTITY, NAMES, agnostic=True)) == 6
    top = decode(output, IDENTITY, NAMES, max_det=2)
    np.testing.assert_allclose(top.confidence, [0.9, 0.7])


def test_boxes_are_mapped_back_to_the_frame_and_clipped():
    box = Letterbox.fit((480, 640), (320, 320))  # half size, 40 px grey bands above and below
    output = head([(160, 160, 100, 50, 0, 0.9), (10, 60, 40, 40, 1, 0.9)])
    dets = decode(output, box, NAMES)
    np.testing.assert_allclose(dets.xyxy, [[220, 190, 420, 290], [0, 0, 60, 80]], atol=1e-4)


def test_no_box_above_threshold_gives_empty_detections_with_the_same_fields():
    for output in (head([(100, 100, 50, 50, 0, 0.1)]), np.zeros((1, 7, 0), dtype=np.float32)):
        dets = decode(output, IDENTITY, NAMES)
        assert len(dets) == 0
        assert dets.xyxy.shape == (0, 4) and dets.confidence.shape == (0,) and dets.class_id.shape == (0,)
        assert "class_name" in dets.data
    assert len(empty_detections()) == 0


def test_extra_channels_after_the_classes_are_ignored():
    output = head([(100, 100, 50, 50, 1, 0.9)], nc=3)
    with_masks = np.concatenate([output, np.full((1, 32, 1), 5.0, dtype=np.float32)], axis=1)
    np.testing.assert_array_equal(decode(with_masks, IDENTITY, NAMES).class_id, [1])


def test_end_to_end_heads_are_only_thresholded():
    rows = np.array([[[10, 10, 50, 50, 0.9, 2], [12, 12, 50, 50, 0.8, 2], [0, 0, 5, 5, 0.1, 0]]], dtype=np.float32)
    dets = decode_end2end(rows, IDENTITY, NAMES)
    np.testing.assert_array_equal(dets.class_id, [2, 2])  # NMS already happened inside the model
    assert len(postprocess(rows, IDENTITY, NAMES)) == 2  # recognised by its (1, N, 6) shape


def test_nms_keeps_highest_first():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=np.float32)
    keep = nms(boxes, np.array([0.5, 0.9, 0.7], dtype=np.float32), 0.5)
    np.testing.assert_array_equal(keep, [1, 2])
    assert nms(np.empty((0, 4), np.float32), np.empty(0, np.float32), 0.5).size == 0


@pytest.mark.parametrize("seed", range(5))
def test_matches_ultralytics_non_max_suppression_on_crowded_random_heads(seed):
    """Clusters of jittered boxes so that many suppressions are borderline."""
    rng = np.random.default_rng(seed)
    nc, anchors = 4, 2100
    centres = rng.uniform(20, 300, (30, 2))
    pick = rng.integers(0, len(centres), anchors)
    xy = centres[pick] + rng.normal(0, 4, (anchors, 2))
    wh = rng.uniform(15, 60, (len(centres), 2))[pick] * rng.uniform(0.85, 1.15, (anchors, 2))
    scores = rng.uniform(0, 1, (anchors, nc)) ** 3
    output = np.concatenate([xy, wh, scores], axis=1).T[None].astype(np.float32)
    box = Letterbox.fit((480, 640), (320, 320))

    ours = decode(output, box, {i: str(i) for i in range(nc)}, conf=0.25, iou=0.7)
    theirs = ultralytics_nms.non_max_suppression(torch.from_numpy(output), 0.25, 0.7, max_det=300)[0]
    theirs[:, :4] = ops.scale_boxes((320, 320), theirs[:, :4], (480, 640))
    theirs = theirs.numpy()
    assert len(ours) == len(theirs) > 20
    np.testing.assert_array_equal(ours.class_id, theirs[:, 5].astype(int))
    np.testing.assert_allclose(ours.confidence, theirs[:, 4], atol=1e-6)
    np.testing.assert_allclose(ours.xyxy, theirs[:, :4], atol=1e-3)


# -- class evidence: what the model almost saw ----------------------------------------------------


def brute_force_evidence(output: np.ndarray, nc: int) -> np.ndarray:
    """Per-class maximum over every anchor, one anchor at a time."""
    best = np.zeros(nc, dtype=np.float32)
    for anchor in range(output.shape[2]):
        for c in range(nc):
            best[c] = max(best[c], output[0, 4 + c, anchor])
    return best


@pytest.mark.parametrize("conf", [0.0, 0.25, 0.9, 1.0])
def test_class_evidence_is_the_per_class_maximum_over_every_anchor_whatever_the_threshold(conf):
    rng = np.random.default_rng(7)
    output = np.zeros((1, 7, 400), dtype=np.float32)
    output[0, 0:2] = rng.uniform(20, 300, (2, 400))
    output[0, 2:4] = 30
    output[0, 4:] = rng.random((3, 400), dtype=np.float32) ** 4  # mostly small scores, as real heads give
    output[0, 4 + 1] *= 0.01  # one class the model almost never sees
    dets = decode(output, IDENTITY, NAMES, conf=conf)
    evidence = class_evidence(dets)
    assert evidence is not None and evidence.dtype == np.float32 and evidence.shape == (3,)
    np.testing.assert_array_equal(evidence, brute_force_evidence(output, 3))
    assert evidence[1] < 0.01  # far below any threshold, yet known


def test_a_frame_without_boxes_still_carries_its_evidence():
    output = head([(100, 100, 50, 50, 0, 0.1), (200, 200, 50, 50, 2, 0.004)])
    dets = decode(output, IDENTITY, NAMES, conf=0.25)
    assert len(dets) == 0
    np.testing.assert_allclose(class_evidence(dets), [0.1, 0.0, 0.004])
    np.testing.assert_array_equal(class_evidence(decode(np.zeros((1, 7, 0), np.float32), IDENTITY, NAMES)), [0, 0, 0])
    assert class_evidence(empty_detections()) is None  # unknown stays unknown
    assert class_evidence(sv.Detections.empty()) is None


def test_class_evidence_survives_filtering_the_detections():
    dets = decode(head([(100, 100, 50, 50, 0, 0.9), (200, 200, 50, 50, 2, 0.3)]), IDENTITY, NAMES)
    np.testing.assert_allclose(class_evidence(dets[dets.class_id == 2]), [0.9, 0.0, 0.3])


def test_end_to_end_evidence_is_the_per_class_maximum_over_rows_and_zero_without_a_row():
    rows = np.array(
        [[[10, 10, 50, 50, 0.9, 2], [12, 12, 50, 50, 0.05, 0], [0, 0, 5, 5, 0.1, 0], [0, 0, 5, 5, 0.02, 2]]],
        dtype=np.float32,
    )
    for conf in (0.0, 0.25, 0.95):
        np.testing.assert_allclose(class_evidence(decode_end2end(rows, IDENTITY, NAMES, conf=conf)), [0.1, 0.0, 0.9])


def test_an_onnx_export_reports_evidence_unchanged_by_its_threshold(ppe_onnx: Path, val_frames: list[np.ndarray]):
    from edge.detectors.onnx_runtime import OnnxDetector

    usual, strict = OnnxDetector(ppe_onnx, conf=0.25), OnnxDetector(ppe_onnx, conf=0.99)
    almost_seen = 0
    for frame in val_frames:
        tensor, _ = preprocess(frame, usual.input_size)
        raw = usual.infer(tensor)
        expected = raw[0, 4 : 4 + len(usual.names)].max(axis=1)
        evidence = class_evidence(usual.detect(frame))
        np.testing.assert_array_equal(evidence, expected)
        np.testing.assert_array_equal(class_evidence(strict.detect(frame)), evidence)
        almost_seen += int(((evidence > 0) & (evidence < usual.conf)).any())
    assert almost_seen > 0  # real frames have classes the threshold hides


def test_a_batch_gives_each_frame_its_own_evidence(ppe_dynamic_onnx: Path, val_frames: list[np.ndarray]):
    from edge.detectors.onnx_runtime import OnnxDetector

    detector = OnnxDetector(ppe_dynamic_onnx)
    frames = val_frames[:3]
    batch = detector.detect_batch(frames)
    singles = [class_evidence(detector.detect(f)) for f in frames]
    for got, want in zip(batch, singles, strict=True):
        np.testing.assert_allclose(class_evidence(got), want, atol=1e-5)
    assert not np.allclose(singles[0], singles[1])  # frames differ, so a shared array would show


# -- per-class thresholds ---------------------------------------------------------------------------

PPE = {0: "helmet", 1: "no_helmet", 2: "no_wear", 3: "wear"}


def planted(*items: tuple[int, float]) -> sv.Detections:
    """Detections from (class_id, confidence) pairs, side by side, with the frame's class evidence."""
    n = len(items)
    return sv.Detections(
        xyxy=np.array([[10.0 + 40 * i, 10.0, 40.0 + 40 * i, 40.0] for i in range(n)], dtype=np.float32),
        confidence=np.array([c for _, c in items], dtype=np.float32),
        class_id=np.array([k for k, _ in items], dtype=np.int64),
        data={"class_name": np.array([PPE[k] for k, _ in items])},
        metadata={"class_evidence": np.array([0.2, 0.1, 0.3, 0.0], dtype=np.float32)},
    )


def test_each_class_is_kept_at_its_own_threshold_and_the_others_at_the_default():
    dets = planted((0, 0.2), (1, 0.1), (2, 0.3), (2, 0.2))
    kept = apply_class_thresholds(dets, {0: 0.3, 1: 0.08}, default=0.25)
    # no_helmet at 0.1 stays (its threshold is 0.08), helmet at 0.2 goes (0.3), no_wear has none: 0.25.
    assert [(PPE[int(c)], round(float(s), 2)) for c, s in zip(kept.class_id, kept.confidence)] == [
        ("no_helmet", 0.1), ("no_wear", 0.3)]
    assert list(kept.data["class_name"]) == ["no_helmet", "no_wear"]
    np.testing.assert_array_equal(class_evidence(kept), class_evidence(dets))  # the evidence is the frame's
    assert len(apply_class_thresholds(dets, {}, default=0.25)) == 4  # no thresholds: nothing filtered here


def test_a_class_threshold_keeps_a_score_equal_to_it_and_the_default_stays_strict():
    dets = planted((1, 0.08), (2, 0.25), (3, 0.3))
    kept = apply_class_thresholds(dets, {1: 0.08, 3: 0.3}, default=0.25)
    np.testing.assert_array_equal(kept.class_id, [1, 3])  # >= its own; > the global 0.25, as ultralytics
    mask = class_threshold_mask(np.float32([0.3]), np.array([3]), {3: 0.3}, 0.25)
    assert mask.tolist() == [True]  # compared in float32, where the decoder kept it


def test_the_decoder_keeps_boxes_below_the_global_threshold_for_a_class_whose_own_is_lower():
    rows = [
        (100, 100, 50, 50, 0, 0.27),  # helmet above 0.25 but under its 0.3: dropped
        (200, 100, 50, 50, 1, 0.10),  # no_helmet under 0.25 but over its 0.08: kept
        (300, 100, 50, 50, 1, 0.05),  # no_helmet under its 0.08: dropped
        (100, 250, 50, 50, 2, 0.26),  # no_wear has no threshold of its own: the global 0.25
        (200, 250, 50, 50, 2, 0.20),
    ]
    output = head(rows, nc=4)
    plain = decode(output, IDENTITY, PPE, conf=0.25)
    per_class = decode(output, IDENTITY, PPE, conf=0.25, thresholds={0: 0.3, 1: 0.08})
    assert sorted(plain.class_id.tolist()) == [0, 2]
    assert sorted((int(c), round(float(s), 2)) for c, s in zip(per_class.class_id, per_class.confidence)) == [
        (1, 0.1), (2, 0.26)]
    np.testing.assert_array_equal(class_evidence(per_class), class_evidence(plain))
    np.testing.assert_allclose(class_evidence(per_class), [0.27, 0.10, 0.26, 0.0])
    # max_det counts kept boxes only: the boxes under their thresholds never take a place.
    np.testing.assert_allclose(decode(output, IDENTITY, PPE, conf=0.25, max_det=2, thresholds={0: 0.3, 1: 0.08}).confidence,
                               [0.26, 0.10])
    assert len(postprocess(output, IDENTITY, PPE, conf=0.25, thresholds={0: 0.3, 1: 0.08})) == 2


def test_the_end_to_end_decoder_applies_class_thresholds_too():
    rows = np.array([[[10, 10, 50, 50, 0.27, 0], [60, 10, 90, 50, 0.1, 1], [10, 60, 50, 90, 0.26, 2]]], dtype=np.float32)
    plain = decode_end2end(rows, IDENTITY, PPE, conf=0.25)
    per_class = postprocess(rows, IDENTITY, PPE, conf=0.25, thresholds={0: 0.3, 1: 0.08})
    assert plain.class_id.tolist() == [0, 2] and per_class.class_id.tolist() == [1, 2]
    np.testing.assert_array_equal(class_evidence(per_class), class_evidence(plain))
