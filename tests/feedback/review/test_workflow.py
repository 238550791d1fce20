"""The review round trip with the oracle reviewer, Label Studio's box maths, and its failure modes.

Fast: no Label Studio here (tests/integration/test_labelstudio.py runs a real one).
"""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import supervision as sv

from edge.protocol import CaptureMeta, Detection, SourceRef
from feedback.review.labelstudio import (
    LabelStudioReviewer, annotation_boxes, deciding_annotation, label_config, percent_to_xyxy, prediction,
    xyxy_to_percent,
)
from feedback.review.oracle import OracleReviewer
from feedback.review.selection import SelectionConfig
from feedback.review.workflow import (
    Listed, ReviewConfigError, ReviewItem, ReviewServiceError, pull_reviews, push_captures, push_for_review,
)
from store.inbox import CaptureRecord, load_inbox
from store.labels import current_labels, ensure_classes, holdout_by_hash
from store.settings import Settings, Workspace

CLASSES = ["helmet", "no_helmet", "vest", "package"]
T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
W, H = 320, 240


# ----------------------------------------------------------------------------- box maths


def test_pixels_to_percent_and_back_round_trip() -> None:
    rng = np.random.default_rng(0)
    for width, height in [(320, 240), (1920, 1080), (7, 3), (4000, 3000)]:
        xy = rng.uniform(0, 1, (200, 2)) * [width, height]
        wh = rng.uniform(0, 1, (200, 2)) * ([width, height] - xy)
        boxes = np.concatenate([xy, xy + wh], 1)
        back = percent_to_xyxy(xyxy_to_percent(boxes, width, height), width, height)
        assert np.abs(back - boxes).max() < 1e-6


def test_percent_is_top_left_corner_and_size() -> None:
    percent = xyxy_to_percent(np.array([[32.0, 24.0, 96.0, 120.0]]), W, H)
    assert np.allclose(percent, [[10.0, 10.0, 20.0, 40.0]])
    assert np.allclose(percent_to_xyxy(percent, W, H), [[32, 24, 96, 120]])
    assert xyxy_to_percent(np.zeros((0, 4)), W, H).shape == (0, 4)


def test_a_turned_rectangle_becomes_the_box_around_its_corners() -> None:
    # 64 x 24 px at (160, 120), turned 90 degrees clockwise about its top-left corner: it now
    # hangs down and to the left of that corner.
    rect = xyxy_to_percent(np.array([[160.0, 120.0, 224.0, 144.0]]), W, H)
    assert np.allclose(percent_to_xyxy(rect, W, H, np.array([90.0])), [[136, 120, 160, 184]])
    assert np.allclose(percent_to_xyxy(rect, W, H, np.array([360.0])), [[160, 120, 224, 144]])


def test_label_config_escapes_class_names() -> None:
    config = label_config(["helmet", 'no "helmet" & <vest>'])
    assert '<Label value="helmet"/>' in config
    assert "&amp;" in config and "&lt;vest&gt;" in config and 'name="label" toName="image"' in config


def test_prediction_regions_are_percent_with_scores_and_model_version() -> None:
    item = ReviewItem("c1", "sha", W, H, "http://x/v1/blobs/sha", model_version="m7",
                      detections=sv.Detections(np.array([[32.0, 24.0, 96.0, 120.0], [0, 0, 10, 10]]),
                                               confidence=np.array([0.4, 0.8]), class_id=np.array([2, 9])))
    pred = prediction(item, CLASSES)
    assert pred["model_version"] == "m7" and pred["score"] == pytest.approx(0.6)
    [region] = pred["result"]  # class 9 is no catalog class: not shown
    assert region["type"] == "rectanglelabels" and region["score"] == 0.4
    assert (region["original_width"], region["original_height"]) == (W, H)
    assert region["value"]["rectanglelabels"] == ["vest"]
    assert [region["value"][k] for k in ("x", "y", "width", "height")] == pytest.approx([10, 10, 20, 40])


def region(x: float, y: float, w: float, h: float, name: str, **extra: object) -> dict:
    return {"id": "r", "from_name": "label", "to_name": "image", "type": "rectanglelabels",
            "original_width": W, "original_height": H,
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [name]}, **extra}


def test_annotation_boxes_come_back_in_pixels_clipped_with_class_ids() -> None:
    result = [region(10, 10, 20, 40, "vest"), region(90, 90, 20, 20, "no_helmet"),
              {"type": "relation", "from_id": "a", "to_id": "b"}]
    boxes, class_ids = annotation_boxes(result, CLASSES, W, H)
    assert np.allclose(boxes, [[32, 24, 96, 120], [288, 216, 320, 240]]) and class_ids.tolist() == [2, 1]
    with pytest.raises(ReviewConfigError, match="not one of the catalog's classes"):
        annotation_boxes([region(1, 1, 2, 2, "cat")], CLASSES, W, H)


def test_the_latest_submitted_annotation_decides() -> None:
    a = {"id": 1, "updated_at": "2026-03-01T10:00:00Z", "was_cancelled": False}
    b = {"id": 2, "updated_at": "2026-03-01T11:00:00Z", "was_cancelled": False}
    skip = {"id": 3, "updated_at": "2026-03-01T12:00:00Z", "was_cancelled": True}
    assert deciding_annotation([b, a, skip])["id"] == 2  # a later skip does not undo a submitted verdict
    assert deciding_annotation([skip])["id"] == 3
    assert deciding_annotation([]) is None


# ----------------------------------------------------------------------------- workspace with captures


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    ws = Workspace(Settings(workspace=tmp_path / "ws", fsync=False))
    with ws.catalog.connect() as con:
        ensure_classes(con, CLASSES)
    return ws


def add_captures(ws: Workspace, detections: list[list[Detection]]) -> list[str]:
    """Captures of frames 0..n-1 of 'gate.mp4', loaded through the inbox as the API writes them."""
    ids = []
    for i, dets in enumerate(detections):
        sha = hashlib.sha256(f"frame {i}".encode()).hexdigest()
        meta = CaptureMeta(device="jetson-1", camera="gate", captured_at=T0 + timedelta(seconds=i), frame_width=W,
                           frame_height=H, model_version="m1", detections=dets, triggers=["uncertainty"],
                           source=SourceRef(uri="/videos/gate.mp4", frame_index=i))
        ws.inbox.add_capture(CaptureRecord(id=sha, sha256=sha, media_type="image/jpeg", bytes=100, meta=meta))
        ids.append(sha)
    load_inbox(ws.catalog, ws.inbox)
    return ids


def write_labels(labels: Path, frame: int, rows: list[tuple[int, float, float, float, float]]) -> None:
    """A YOLO label file for frame `frame` from pixel xyxy rows."""
    labels.mkdir(exist_ok=True)
    lines = [f"{c} {(x1 + x2) / 2 / W} {(y1 + y2) / 2 / H} {(x2 - x1) / W} {(y2 - y1) / H}"
             for c, x1, y1, x2, y2 in rows]
    (labels / f"gate_{frame:06d}.txt").write_text("".join(line + "\n" for line in lines))


def snapshot(ws: Workspace) -> dict[str, list]:
    with ws.catalog.connect() as con:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()
                for t in ("images", "splits", "labels", "label_boxes", "review_tasks", "failures")}


def det(x1: float, y1: float, x2: float, y2: float, class_id: int, conf: float) -> Detection:
    return Detection(xyxy=(x1, y1, x2, y2), confidence=conf, class_id=class_id)


def test_oracle_round_trip_stores_labels_splits_statuses_and_failures(ws: Workspace, tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    ids = add_captures(ws, [
        [det(40, 40, 100, 120, 0, 0.9)],  # right
        [det(40, 40, 100, 120, 0, 0.9)],  # a helmet that is really a bare head: confusion
        [],  # a vest the model missed
        [det(10, 10, 30, 30, 3, 0.3)],  # no label file: skipped, so its detection is no failure
    ])
    write_labels(labels, 0, [(0, 40, 40, 100, 120)])
    write_labels(labels, 1, [(1, 40, 40, 100, 120)])
    write_labels(labels, 2, [(2, 150, 60, 230, 200)])
    reviewer = OracleReviewer(labels)

    picks = [Listed(c, 0.5, {"uncertainty": 0.5}) for c in ids]
    pushed = push_captures(ws, picks, reviewer=reviewer, strategy="active")
    assert pushed.pushed == 4 and pushed.project is None and pushed.tasks == {c: c for c in ids}
    with ws.catalog.connect() as con:
        assert con.execute("SELECT count(*) FROM review_tasks WHERE status = 'pushed' AND reviewer = 'oracle' "
                           "AND strategy = 'active' AND score = 0.5").fetchone() == (4,)

    report = pull_reviews(ws, reviewer=reviewer)
    assert (report.verified, report.skipped, report.boxes, report.pending) == (3, 1, 3, 0)
    assert report.failures == 2 and report.holdout == sum(holdout_by_hash(c, 0.2) for c in ids[:3])
    with ws.catalog.connect() as con:
        tasks = dict(con.execute("SELECT capture_id, status FROM review_tasks").fetchall())
        failures = con.execute("SELECT capture_id, kind, true_class, predicted_class, confidence, iou, "
                               "round(x1, 6), round(y1, 6), round(x2, 6), round(y2, 6) FROM failures").fetchall()
        splits = dict(con.execute("SELECT image_sha256, split FROM splits").fetchall())
        source = con.execute("SELECT DISTINCT source, annotator FROM labels").fetchall()
        skipped = con.execute("SELECT status, label_id IS NOT NULL FROM review_tasks WHERE capture_id = ?",
                              [ids[3]]).fetchone()
        current = {x.image_sha256: x for x in current_labels(con)}
    assert tasks == {ids[0]: "verified", ids[1]: "verified", ids[2]: "verified", ids[3]: "skipped"}
    assert skipped == ("skipped", True)
    assert sorted(failures) == sorted([
        (ids[1], "confusion", 1, 0, 0.9, 1.0, 40, 40, 100, 120),
        (ids[2], "missed", 2, None, None, None, 150, 60, 230, 200),
    ])
    assert splits == {c: "holdout" if holdout_by_hash(c, 0.2) else "train" for c in ids[:3]}
    assert source == [("review", "oracle")]
    assert set(current) == set(ids[:3])  # a skip is recorded, but is not a label to train on
    assert np.allclose(current[ids[2]].boxes, [[150, 60, 230, 200]]) and current[ids[2]].class_ids.tolist() == [2]
    assert current[ids[2]].origin == "real"


def test_the_oracle_is_priced_by_the_cost_model_per_task_and_per_class(tmp_path: Path) -> None:
    """No lead_time from the oracle: each task's seconds are the cost model's (here the settings' own rates)."""
    ws = Workspace(Settings(workspace=tmp_path / "ws", fsync=False, review_seconds={"kept": 1.0, "added": 10.0}))
    with ws.catalog.connect() as con:
        ensure_classes(con, CLASSES)
    labels = tmp_path / "labels"
    ids = add_captures(ws, [[det(40, 40, 100, 120, 0, 0.9)], [det(40, 40, 100, 120, 0, 0.9)], []])
    write_labels(labels, 0, [(0, 40, 40, 100, 120)])  # kept: 1 s
    write_labels(labels, 1, [(1, 40, 40, 100, 120)])  # fixed (a bare head, not a helmet): the default 7 s
    write_labels(labels, 2, [(1, 150, 60, 230, 200), (2, 10, 10, 40, 40)])  # two drawn: 2 x 10 s
    reviewer = OracleReviewer(labels)
    push_captures(ws, [Listed(c) for c in ids], reviewer=reviewer, strategy="random")
    report = pull_reviews(ws, reviewer=reviewer)
    with ws.catalog.connect() as con:
        stored = dict(con.execute("SELECT capture_id, effort_s FROM review_tasks").fetchall())
    assert stored == {ids[0]: 1.0, ids[1]: 7.0, ids[2]: 20.0}
    assert report.seconds == 28.0 and report.measured == 0
    assert report.effort_by_class[CLASSES[1]] == {"boxes": 2, "seconds": 17.0, "boxes_per_hour": round(2 / (28 / 3600), 1)}


def test_pulling_again_changes_nothing_and_a_changed_verdict_is_a_new_label(ws: Workspace, tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    ids = add_captures(ws, [[det(40, 40, 100, 120, 0, 0.9)], [det(40, 40, 100, 120, 0, 0.9)]])
    write_labels(labels, 0, [(0, 40, 40, 100, 120)])
    reviewer = OracleReviewer(labels)
    push_captures(ws, [Listed(c) for c in ids], reviewer=reviewer, strategy="random")
    pull_reviews(ws, reviewer=reviewer)
    before = snapshot(ws)

    again = pull_reviews(ws, reviewer=reviewer)
    assert (again.verified, again.skipped, again.unchanged) == (0, 0, 2)
    assert snapshot(ws) == before
    # Pushing the same captures again does not make second tasks.
    assert push_captures(ws, [Listed(c) for c in ids], reviewer=reviewer, strategy="random").already_pushed == 2

    write_labels(labels, 0, [(0, 40, 40, 100, 120), (2, 150, 60, 230, 200)])  # the annotator added a vest
    write_labels(labels, 1, [(1, 40, 40, 100, 120)])  # the skipped one got answered after all
    changed = pull_reviews(ws, reviewer=reviewer)
    assert (changed.verified, changed.unchanged, changed.failures) == (2, 0, 2)
    with ws.catalog.connect() as con:
        n_labels = con.execute("SELECT image_sha256, count(*) FROM labels GROUP BY ALL").fetchall()
        kinds = con.execute("SELECT capture_id, kind FROM failures ORDER BY ALL").fetchall()
        statuses = con.execute("SELECT DISTINCT status FROM review_tasks").fetchall()
        current = {x.image_sha256: x for x in current_labels(con)}
    assert sorted(n_labels) == sorted([(ids[0], 2), (ids[1], 2)])  # the first verdicts stay as history
    assert kinds == sorted([(ids[0], "missed"), (ids[1], "confusion")])  # the capture's records were replaced
    assert statuses == [("verified",)]
    assert current[ids[0]].class_ids.tolist() == [0, 2]


def test_a_reviewer_failing_mid_pull_writes_nothing_and_the_next_pull_resumes(ws: Workspace, tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    ids = add_captures(ws, [[], [], []])
    for i in range(3):
        write_labels(labels, i, [(3, 10, 10, 50, 50)])
    (labels / "gate_000002.txt").write_text("3 0.5 0.5\n")  # the last answer is unreadable
    reviewer = OracleReviewer(labels)
    push_captures(ws, [Listed(c) for c in ids], reviewer=reviewer, strategy="random")
    before = snapshot(ws)
    with pytest.raises(ValueError):
        pull_reviews(ws, reviewer=reviewer)
    assert snapshot(ws) == before

    write_labels(labels, 2, [(3, 10, 10, 50, 50)])
    assert pull_reviews(ws, reviewer=reviewer).verified == 3


def test_listed_captures_go_to_the_oracle_and_come_back_verified(ws: Workspace, tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    ids = add_captures(ws, [[det(40, 40, 100, 120, 0, 0.9)]] * 2)
    write_labels(labels, 0, [(0, 40, 40, 100, 120)])
    write_labels(labels, 1, [])
    reviewer = OracleReviewer(labels)
    push_captures(ws, [Listed(c) for c in ids], reviewer=reviewer, strategy="listed")
    report = pull_reviews(ws, reviewer=reviewer)
    assert (report.verified, report.boxes, report.skipped) == (2, 1, 0)
    with ws.catalog.connect() as con:
        assert con.execute("SELECT DISTINCT strategy, status FROM review_tasks").fetchall() == [("listed", "verified")]


def test_push_for_review_sends_the_selected_captures_once(ws: Workspace, tmp_path: Path) -> None:
    ids = add_captures(ws, [[det(40, 40, 100, 120, 0, 0.5)]] * 3)
    reviewer = OracleReviewer(tmp_path)
    first = push_for_review(ws, 2, reviewer=reviewer, selection=SelectionConfig(strategy="random", seed=1))
    second = push_for_review(ws, 2, reviewer=reviewer, selection=SelectionConfig(strategy="random", seed=1))
    assert (first.pushed, second.pushed) == (2, 1) and set(first.tasks) | set(second.tasks) == set(ids)
    with ws.catalog.connect() as con:
        rows = con.execute("SELECT DISTINCT strategy, score_parts->>'operator' FROM review_tasks").fetchall()
    assert rows == [("random", "0.0")]
    assert push_for_review(ws, 2, reviewer=reviewer).pushed == 0  # nothing left to review


def test_pushing_needs_a_class_list(tmp_path: Path) -> None:
    ws = Workspace(Settings(workspace=tmp_path / "ws", fsync=False))
    ids = add_captures(ws, [[]])
    with pytest.raises(ReviewConfigError, match="no class list"):
        push_captures(ws, [Listed(ids[0])], reviewer=OracleReviewer(tmp_path), strategy="random")


# ----------------------------------------------------------------------------- Label Studio unavailable


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: connections are refused


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts connections and never answers: a hung Label Studio."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_push_names_the_missing_public_url_before_calling_label_studio(ws: Workspace) -> None:
    ids = add_captures(ws, [[]])
    reviewer = LabelStudioReviewer(f"http://127.0.0.1:{dead_port()}", "t" * 40, retries=0)
    with pytest.raises(ReviewConfigError, match="EDGELOOP_PUBLIC_URL"):
        push_captures(ws, [Listed(ids[0])], reviewer=reviewer, strategy="random")


def test_label_studio_down_or_hung_is_a_review_service_error_and_writes_nothing(
    ws: Workspace, silent_server: str
) -> None:
    ids = add_captures(ws, [[det(40, 40, 100, 120, 0, 0.9)]])
    before = snapshot(ws)
    down = f"http://127.0.0.1:{dead_port()}"
    for url, says in [(down, "is unreachable"), (silent_server, "did not answer within 0.5 s")]:
        reviewer = LabelStudioReviewer(url, "t" * 40, timeout_s=0.5, retries=0)
        with pytest.raises(ReviewServiceError, match=f"Label Studio at {url} {says}"):
            push_captures(ws, [Listed(ids[0])], reviewer=reviewer, strategy="random", public_url="http://api:8000")
        assert snapshot(ws) == before


def test_label_studio_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGELOOP_LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("EDGELOOP_LABEL_STUDIO_TOKEN", raising=False)
    with pytest.raises(ReviewConfigError, match="EDGELOOP_LABEL_STUDIO_URL"):
        LabelStudioReviewer.from_settings(Settings())
    monkeypatch.setenv("EDGELOOP_LABEL_STUDIO_URL", "http://ls.example:8080/")
    monkeypatch.setenv("EDGELOOP_LABEL_STUDIO_TOKEN", "a" * 40)
    assert LabelStudioReviewer.from_settings(Settings()).url == "http://ls.example:8080"
