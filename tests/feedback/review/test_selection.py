"""Review selection on a real catalog: operator flags, near-duplicates, rare classes, uncertainty, random.

Captures go in through the inbox as devices send them; vectors are written straight to `embeddings`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest

from edge.protocol import CaptureMeta, Detection, SourceRef, utc_now
from feedback.embeddings.clip import settings_embedder_name
from feedback.review.selection import Candidate, SelectionConfig, select_captures, select_indices
from store.inbox import CaptureRecord, load_inbox
from store.labels import add_image, add_label, ensure_classes
from store.settings import Settings, Workspace
from store.vectors import CAPTURE as KIND

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
DIM = 16


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace(Settings(workspace=tmp_path, fsync=False))
    with ws.catalog.connect() as con:
        ensure_classes(con, ["person", "helmet", "vest"])
    return ws


def sha_of(capture_id: str) -> str:
    return hashlib.sha256(capture_id.encode()).hexdigest()


def add_capture(
    ws: Workspace, capture_id: str, confidences: Sequence[float] = (0.9,), classes: Sequence[int] | None = None,
    triggers: Sequence[str] = ("uncertainty",), sha: str | None = None,
) -> None:
    classes = classes if classes is not None else [0] * len(confidences)
    meta = CaptureMeta(
        device="jetson-1", camera="cam0", captured_at=T0 + timedelta(seconds=len(capture_id)),
        frame_width=640, frame_height=480, model_version="m1",
        detections=[Detection(xyxy=(10, 10, 50, 60), confidence=c, class_id=k) for c, k in zip(confidences, classes)],
        triggers=list(triggers), source=SourceRef(uri="rtsp://cam0/stream", frame_index=0),
    )
    sha = sha or sha_of(capture_id)
    ws.inbox.add_capture(CaptureRecord(id=capture_id, sha256=sha, media_type="image/jpeg", bytes=1000, meta=meta))


def add_vectors(ws: Workspace, vectors: dict[str, np.ndarray]) -> None:
    """Vectors under the configured model's name, as `embed_captures` would store them."""
    model = settings_embedder_name(ws.settings)
    table = pa.table({
        "kind": [KIND] * len(vectors), "ref": list(vectors), "model": [model] * len(vectors),
        "vector": [np.asarray(v, np.float32) / np.linalg.norm(v) for v in vectors.values()],
        "created_at": pa.array([utc_now()] * len(vectors), pa.timestamp("us", tz="UTC")),
    })
    with ws.catalog.connect() as con:
        con.register("batch", table)
        con.execute("INSERT INTO embeddings BY NAME SELECT * FROM batch")


def verify(ws: Workspace, sha: str, class_ids: Sequence[int]) -> None:
    with ws.catalog.connect() as con:
        add_image(con, sha, 640, 480, "image/jpeg", "real", "import:test")
        add_label(con, sha, np.tile([1.0, 1.0, 20.0, 20.0], (len(class_ids), 1)), np.array(class_ids), source="import")


def ids(picks: list[Candidate]) -> list[str]:
    return [p.capture_id for p in picks]


def test_operator_flagged_go_first_then_the_budget_fills(ws):
    for i in range(5):
        add_capture(ws, f"sure{i}", confidences=[0.5], triggers=["flicker", "uncertainty"])
    add_capture(ws, "flagged", confidences=[0.99], triggers=["operator"])
    load_inbox(ws.catalog, ws.inbox)
    for config in (SelectionConfig(), SelectionConfig(diversity=False), SelectionConfig(strategy="random")):
        picks = select_captures(ws, 3, config)
        assert ids(picks)[0] == "flagged" and len(picks) == 3
        assert picks[0].parts["operator"] == 1.0 and picks[1].parts["operator"] == 0.0


def test_near_duplicates_count_once_with_diversity(ws):
    rng = np.random.default_rng(0)
    scene = rng.standard_normal(DIM)
    vectors = {}
    for i in range(10):  # ten frames of one scene, the most uncertain of all
        add_capture(ws, f"dup{i}", confidences=[0.5], triggers=["flicker"])
        vectors[f"dup{i}"] = scene + 0.01 * rng.standard_normal(DIM)
    for i in range(10):
        add_capture(ws, f"other{i}", confidences=[0.8])
        vectors[f"other{i}"] = rng.standard_normal(DIM)
    load_inbox(ws.catalog, ws.inbox)
    add_vectors(ws, vectors)

    diverse = ids(select_captures(ws, 6))
    assert sum(c.startswith("dup") for c in diverse) == 1
    assert diverse[0].startswith("dup")  # the scene is still the first choice, once
    plain = ids(select_captures(ws, 6, SelectionConfig(diversity=False)))
    assert sum(c.startswith("dup") for c in plain) == 6


def test_captures_without_vectors_are_still_selectable(ws):
    add_capture(ws, "a", confidences=[0.5])
    add_capture(ws, "b", confidences=[0.6])
    add_capture(ws, "c", confidences=[0.7])
    load_inbox(ws.catalog, ws.inbox)
    add_vectors(ws, {"a": np.ones(DIM), "b": np.ones(DIM)})  # b duplicates a; c has no vector
    picks = select_captures(ws, 2)
    assert ids(picks) == ["a", "c"]
    assert picks[1].parts["diversity"] == pytest.approx(2.0)


def test_class_balance_favours_a_rare_predicted_class(ws):
    for i in range(20):  # plenty of verified persons, no verified helmet
        verify(ws, sha_of(f"labelled{i}"), [0, 0])
    add_capture(ws, "a_person", confidences=[0.7], classes=[0])
    add_capture(ws, "b_helmet", confidences=[0.7], classes=[1])
    load_inbox(ws.catalog, ws.inbox)
    picks = select_captures(ws, 2)
    assert ids(picks) == ["b_helmet", "a_person"]
    assert picks[0].parts["class_balance"] == pytest.approx(1.0)
    assert picks[1].parts["class_balance"] == pytest.approx(1 / np.sqrt(41))
    # Switched off, the tie falls back to capture id order.
    assert ids(select_captures(ws, 2, SelectionConfig(class_balance=False))) == ["a_person", "b_helmet"]


def test_uncertainty_favours_half_confidence(ws):
    add_capture(ws, "a_sure", confidences=[0.95])
    add_capture(ws, "b_unsure", confidences=[0.5])
    load_inbox(ws.catalog, ws.inbox)
    picks = select_captures(ws, 2)
    assert ids(picks) == ["b_unsure", "a_sure"]
    assert picks[0].parts["uncertainty"] == pytest.approx((1.0 + 0.25) / 2)
    assert picks[1].parts["uncertainty"] == pytest.approx((0.1 + 0.25) / 2)


def test_random_is_seeded_and_ignores_scores(ws):
    for i in range(30):
        add_capture(ws, f"c{i:02d}", confidences=[0.5 + i / 70])
    load_inbox(ws.catalog, ws.inbox)
    first = select_captures(ws, 10, SelectionConfig(strategy="random", seed=7))
    assert ids(first) == ids(select_captures(ws, 10, SelectionConfig(strategy="random", seed=7)))
    assert ids(first) == ids(select_captures(ws, 10, SelectionConfig(strategy="random", seed=7, uncertainty=False)))
    assert ids(first) != ids(select_captures(ws, 10, SelectionConfig(strategy="random", seed=8)))
    assert all(p.score == 0.0 for p in first)


def test_budget_beyond_the_candidates_returns_them_all(ws):
    for i in range(4):
        add_capture(ws, f"c{i}")
    load_inbox(ws.catalog, ws.inbox)
    assert sorted(ids(select_captures(ws, 100))) == ["c0", "c1", "c2", "c3"]
    assert sorted(ids(select_captures(ws, 100, SelectionConfig(strategy="random")))) == ["c0", "c1", "c2", "c3"]
    assert select_captures(ws, 0) == []


def test_reviewed_and_verified_images_are_not_candidates(ws):
    for name in ("pushed", "verified", "twin", "fresh"):
        add_capture(ws, name, sha=sha_of("twin-image") if name == "twin" else None)
    add_capture(ws, "twin-of-pushed", sha=sha_of("pushed"))  # the same bytes as a capture already pushed
    load_inbox(ws.catalog, ws.inbox)
    verify(ws, sha_of("verified"), [0])
    with ws.catalog.connect() as con:
        con.execute("INSERT INTO review_tasks (capture_id, reviewer, strategy, status, pushed_at) "
                    "VALUES ('pushed', 'oracle', 'active', 'pushed', now())")
    assert sorted(ids(select_captures(ws, 10))) == ["fresh", "twin"]


def test_select_indices_core():
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((50, DIM)).astype(np.float32)
    vectors[:10] = vectors[0]  # a cluster of ten
    priority = np.full(50, 0.1, np.float32)
    priority[:10] = 1.0
    flagged = np.zeros(50, bool)
    flagged[42] = True
    picks = select_indices(vectors, priority, flagged, 5)
    assert picks[0] == 42 and picks[1] == 0 and not set(picks[2:]) & set(range(10))
    assert list(select_indices(vectors, priority, flagged, 5, diversity=False)) == [42, 0, 1, 2, 3]
    assert list(select_indices(None, priority, flagged, 3)) == [42, 0, 1]
    assert len(select_indices(vectors, priority, flagged, 500)) == 50


def test_expected_seconds_come_from_the_boxes_a_task_will_show(ws):
    """A glance (2 s), a check per shown box (2 s) and a fix per doubted one (1 - conf of the 5 s a fix adds)."""
    add_capture(ws, "a_empty", confidences=[])
    add_capture(ws, "b_one_sure", confidences=[1.0])
    add_capture(ws, "c_crowd", confidences=[0.5, 0.5, 1.0, 1.0])
    load_inbox(ws.catalog, ws.inbox)
    picks = {p.capture_id: p for p in select_captures(ws, 3, SelectionConfig(strategy="random"))}
    assert {k: p.expected_s for k, p in picks.items()} == {"a_empty": 2.0, "b_one_sure": 4.0,
                                                           "c_crowd": 2.0 + 4 * 2.0 + 2 * 0.5 * 5.0}


def test_a_seconds_budget_takes_picks_in_order_while_they_fit(ws):
    for i in range(12):
        add_capture(ws, f"c{i:02d}", confidences=[0.9] * (i % 4))  # 2, 4.5, 7, 9.5 s
    load_inbox(ws.catalog, ws.inbox)
    config = SelectionConfig(strategy="random", seed=3)
    every = select_captures(ws, 12, config)
    spent = np.cumsum([p.expected_s for p in every])
    within = select_captures(ws, 12, config, budget_seconds=20.0)
    assert ids(within) == ids(every)[: int((spent <= 20.0).sum())]
    assert sum(p.expected_s for p in within) <= 20.0 < sum(p.expected_s for p in every[: len(within) + 1])


def test_per_second_prefers_the_cheaper_of_two_equally_uncertain_frames(ws):
    """Same uncertainty (max margin); one frame shows one box to check, the other five: per image the tie goes to
    the crowded one (its id sorts first), per second to the one a person clears in a third of the time."""
    add_capture(ws, "a_crowded", confidences=[0.5, 0.99, 0.99, 0.99, 0.99])
    add_capture(ws, "b_single", confidences=[0.5])
    load_inbox(ws.catalog, ws.inbox)
    plain = SelectionConfig(diversity=False, class_balance=False, rare=False, evidence=False, failure=False)
    assert ids(select_captures(ws, 1, plain)) == ["a_crowded"]
    per_second = SelectionConfig(diversity=False, class_balance=False, rare=False, evidence=False, failure=False,
                                 per_second=True)
    [pick] = select_captures(ws, 1, per_second)
    assert pick.capture_id == "b_single" and pick.expected_s == 2.0 + 2.0 + 0.5 * 5.0  # vs 2 + 5 x 2 + 0.5 x 5
