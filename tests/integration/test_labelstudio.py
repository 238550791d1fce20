"""The review round trip against a real Label Studio: push pre-annotated tasks, annotate as people do, pull.

Captures reach the catalog the real way (device upload to the ingest API, inbox load); Label Studio is
read and written through its own API, never through our adapter, so the adapter is checked from outside.
"""

from __future__ import annotations

import copy
import json
import socket
from pathlib import Path

import httpx
import numpy as np
import pytest
from label_studio_sdk import LabelStudio

from edge.client import IngestClient
from edge.protocol import CaptureMeta, Detection, SourceRef, utc_now
from feedback.ingest.serving import BackgroundServer
from feedback.review.labelstudio import LabelStudioReviewer, label_config, xyxy_to_percent
from feedback.review.selection import SelectionConfig
from feedback.review.workflow import (
    Listed, ReviewConfigError, ReviewServiceError, pull_reviews, push_captures, push_for_review,
)
from feedback.scenes import CLASSES, encode_jpeg, render_scene
from store.devices import add_device
from store.inbox import load_inbox
from store.labels import current_labels, ensure_classes
from store.settings import Settings, Workspace
from tests.integration.labelstudio import LabelStudioServer

pytestmark = pytest.mark.integration

W, H = 320, 240
# Every capture's edge detections: a helmet (class 0) and a vest (class 2).
A = (40.0, 40.0, 100.0, 120.0)
B = (180.0, 60.0, 260.0, 160.0)
C = (250.0, 170.0, 300.0, 230.0)  # a bare head (class 1) the model missed, clear of B
DETECTIONS = [(A, 0, 0.91), (B, 2, 0.55)]
# What the annotator does to each capture's pre-annotation ("untouched" is never opened).
CASES = ["accepted", "moved", "deleted", "added", "relabelled", "skipped", "untouched"]


def snapshot(ws: Workspace) -> dict[str, list]:
    with ws.catalog.connect() as con:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()
                for t in ("images", "splits", "labels", "label_boxes", "review_tasks", "failures")}


def upload_captures(ws: Workspace, api: str) -> dict[str, str]:
    """Upload one generated frame per case as device jetson-1 would; case -> capture id."""
    token = add_device(ws.catalog, ws.objects, "jetson-1")
    ids = {}
    with IngestClient(api, token) as client:
        for i, case in enumerate(CASES):
            meta = CaptureMeta(
                device="jetson-1", camera="gate", captured_at=utc_now(), frame_width=W, frame_height=H,
                model_version="yolo-edge-3", triggers=["uncertainty"], source=SourceRef(uri="gate.mp4", frame_index=i),
                detections=[Detection(xyxy=box, confidence=conf, class_id=c, class_name=CLASSES[c])
                            for box, c, conf in DETECTIONS],
            )
            ids[case] = client.upload_capture(meta, encode_jpeg(render_scene(100 + i).image), "image/jpeg").id
    load_inbox(ws.catalog, ws.inbox)
    return ids


def px_to_region(box: tuple[float, ...], name: str, region_id: str) -> dict:
    x, y, w, h = map(float, xyxy_to_percent(np.array([box]), W, H)[0])
    return {"id": region_id, "from_name": "label", "to_name": "image", "type": "rectanglelabels",
            "original_width": W, "original_height": H, "image_rotation": 0,
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0, "rectanglelabels": [name]}}


def annotate(ls: LabelStudio, task: dict, case: str) -> int | None:
    """Do what an annotator would in the editor: start from the prediction, change it, submit (or skip)."""
    regions = [{k: v for k, v in r.items() if k != "score"} for r in copy.deepcopy(task["predictions"][0]["result"])]
    helmet, vest = regions  # the prediction's regions come in detection order: A then B
    if case == "untouched":
        return None
    if case == "skipped":
        return ls.annotations.create(task["id"], result=[], was_cancelled=True, lead_time=2.0).id
    if case == "moved":  # the helmet box was 30 px too far left
        helmet["value"]["x"] += 30 / W * 100
    elif case == "deleted":  # there is no vest
        regions = [helmet]
    elif case == "added":  # a bare head the model did not see
        regions.append(px_to_region(C, "no_helmet", "added1"))
    elif case == "relabelled":  # the "vest" is a package
        vest["value"]["rectanglelabels"] = ["package"]
    return ls.annotations.create(task["id"], result=regions, lead_time=7.5).id


def test_review_round_trip_through_label_studio(label_studio: LabelStudioServer, tmp_path: Path) -> None:
    ws = Workspace(Settings(workspace=tmp_path / "ws", fsync=False))
    with ws.catalog.connect() as con:
        ensure_classes(con, CLASSES)
    ls = LabelStudio(base_url=label_studio.url, api_key=label_studio.token, timeout=30)
    reviewer = LabelStudioReviewer(label_studio.url, label_studio.token)
    title = "edgeloop review round trip"

    with BackgroundServer(ws.settings) as api:
        ids = upload_captures(ws, api)
        case_of = {c: case for case, c in ids.items()}
        # The budget takes every capture, so the strategy does not matter; random needs no CLIP vectors.
        pushed = push_for_review(ws, len(CASES), reviewer=reviewer, selection=SelectionConfig(strategy="random"),
                                 public_url=api, project_title=title)
        assert pushed.pushed == len(CASES) and set(pushed.tasks) == set(ids.values())
        assert push_for_review(ws, len(CASES), reviewer=reviewer, public_url=api, project_title=title).pushed == 0

        # In Label Studio: one task per capture, the image behind a signed URL, the detections as a
        # prediction in percent of the frame, top-left corner first.
        tasks = {t["data"]["capture_id"]: t for t in
                 (t.model_dump(mode="json") for t in ls.tasks.list(project=int(pushed.project), fields="all"))}
        assert set(tasks) == set(ids.values())
        assert {c: str(t["id"]) for c, t in tasks.items()} == pushed.tasks
        for capture_id, task in tasks.items():
            image = httpx.get(task["data"]["image"], timeout=10)
            assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
            assert ws.blobs.get(capture_id) == image.content  # the capture id is the image's sha256
            [pred] = task["predictions"]
            assert pred["model_version"] == "yolo-edge-3"
            regions = pred["result"]
            assert [r["value"]["rectanglelabels"] for r in regions] == [["helmet"], ["vest"]]
            assert [r["score"] for r in regions] == [0.91, 0.55]
            assert all((r["original_width"], r["original_height"]) == (W, H) for r in regions)
            got = np.array([[r["value"][k] for k in ("x", "y", "width", "height")] for r in regions])
            assert np.abs(got - xyxy_to_percent(np.array([A, B]), W, H)).max() < 1e-9
        # Pushing them by name makes no second tasks either: those captures are under review.
        again = push_captures(ws, [Listed(c) for c in ids.values()], reviewer=reviewer, strategy="random",
                              public_url=api, project_title=title)
        assert (again.pushed, again.already_pushed) == (0, len(CASES))

    annotation_ids = {case_of[c]: annotate(ls, task, case_of[c]) for c, task in tasks.items()}

    report = pull_reviews(ws, reviewer=reviewer)
    assert (report.verified, report.skipped, report.pending, report.cancelled) == (5, 1, 1, 0)
    assert report.failures == 4 and report.boxes == 2 + 2 + 1 + 3 + 2

    with ws.catalog.connect() as con:
        statuses = dict(con.execute("SELECT capture_id, status FROM review_tasks").fetchall())
        labels = {x.image_sha256: x for x in current_labels(con)}
        provenance = con.execute(
            "SELECT t.capture_id, l.annotator, l.status, l.provenance->>'task', l.provenance->>'annotation' "
            "FROM review_tasks t JOIN labels l ON l.id = t.label_id").fetchall()
        failures = con.execute(
            "SELECT capture_id, kind, true_class, predicted_class, confidence, round(iou, 9), "
            "round(x1, 6), round(y1, 6), round(x2, 6), round(y2, 6), model_version FROM failures").fetchall()
        sources = con.execute("SELECT DISTINCT origin, source LIKE 'capture:%' FROM images").fetchall()
    assert {case_of[c]: s for c, s in statuses.items()} == {
        "accepted": "verified", "moved": "verified", "deleted": "verified", "added": "verified",
        "relabelled": "verified", "skipped": "skipped", "untouched": "pushed"}
    assert sorted((case_of[c], who, status, task, ann) for c, who, status, task, ann in provenance) == sorted(
        (case, label_studio.username, "skipped" if case == "skipped" else "verified", pushed.tasks[ids[case]],
         str(annotation_ids[case])) for case in CASES if case != "untouched")
    assert sources == [("real", True)]

    # The verified boxes, back in pixels with catalog class ids.
    moved_a = (70.0, 40.0, 130.0, 120.0)
    expected = {
        "accepted": ([A, B], [0, 2]),
        "moved": ([moved_a, B], [0, 2]),
        "deleted": ([A], [0]),
        "added": ([A, B, C], [0, 2, 1]),
        "relabelled": ([A, B], [0, 3]),
    }
    assert {case_of[s] for s in labels} == set(expected)
    for case, (boxes, class_ids) in expected.items():
        label = labels[ids[case]]
        assert label.class_ids.tolist() == class_ids, case
        assert np.abs(label.boxes - np.array(boxes)).max() < 1e-6, case
        assert label.origin == "real" and label.source == "review"

    # What the edge model got wrong, exactly.
    assert sorted((case_of[c], *rest) for c, *rest in failures) == sorted([
        ("moved", "localization", 0, 0, 0.91, round(1 / 3, 9), *moved_a, "yolo-edge-3"),
        ("deleted", "spurious", None, 2, 0.55, None, *B, "yolo-edge-3"),
        ("added", "missed", 1, None, None, None, *C, "yolo-edge-3"),
        ("relabelled", "confusion", 3, 2, 0.55, 1.0, *B, "yolo-edge-3"),
    ])

    # People's seconds: Label Studio's lead_time as the annotator submitted it (7.5 s; 2 s for the skip), stored
    # per task beside what the reviewer did to the pre-annotation and the cost model's price for the same actions.
    with ws.catalog.connect() as con:
        efforts = {case_of[c]: json.loads(e) for c, e in con.execute(
            "SELECT capture_id, effort FROM review_tasks WHERE effort IS NOT NULL").fetchall()}
    acted = {"accepted": (2, 0, 0, 0), "moved": (1, 1, 0, 0), "deleted": (1, 0, 0, 1), "added": (2, 0, 1, 0),
             "relabelled": (1, 1, 0, 0)}  # kept, fixed, added, deleted
    assert set(efforts) == {*acted, "skipped"}
    for case, (kept, fixed, added, deleted) in acted.items():
        assert efforts[case]["source"] == "lead_time" and efforts[case]["seconds"] == 7.5, case
        assert efforts[case]["actions"] == {"kept": kept, "fixed": fixed, "added": added, "deleted": deleted}, case
        assert efforts[case]["modelled_s"] == 2 * (kept + deleted) + 7 * (fixed + added), case
    assert efforts["added"]["by_class"]["1"] == {"kept": 0, "fixed": 0, "added": 1, "deleted": 0}  # the bare head
    assert (efforts["skipped"]["source"], efforts["skipped"]["seconds"]) == ("lead_time", 2.0)
    assert report.seconds == 5 * 7.5 + 2.0 and report.measured == 6
    assert report.effort_by_class["no_helmet"]["boxes"] == 1

    # Pulling again changes nothing.
    before = snapshot(ws)
    again = pull_reviews(ws, reviewer=reviewer)
    assert (again.verified, again.skipped, again.unchanged, again.pending) == (0, 0, 6, 1)
    assert snapshot(ws) == before
    assert again.seconds == 0 and again.efforts == []

    # An annotation changed later in Label Studio becomes a new label; the capture's failures follow it.
    accepted_task = tasks[ids["accepted"]]
    submitted = ls.annotations.get(annotation_ids["accepted"]).result
    fixed = [r for r in submitted if r["value"]["rectanglelabels"] == ["helmet"]]  # the vest was not one
    ls.annotations.update(annotation_ids["accepted"], result=fixed)
    later = pull_reviews(ws, reviewer=reviewer)
    assert (later.verified, later.unchanged, later.failures) == (1, 5, 1)
    with ws.catalog.connect() as con:
        history = con.execute("SELECT count(*) FROM labels WHERE image_sha256 = ?", [ids["accepted"]]).fetchone()[0]
        kinds = con.execute("SELECT kind, predicted_class FROM failures WHERE capture_id = ?",
                            [ids["accepted"]]).fetchall()
        label = next(x for x in current_labels(con) if x.image_sha256 == ids["accepted"])
    assert history == 2 and kinds == [("spurious", 2)] and label.class_ids.tolist() == [0]
    assert str(accepted_task["id"]) == pushed.tasks[ids["accepted"]]

    # Label Studio unreachable: a clear error naming the URL, and the catalog as it was.
    before = snapshot(ws)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(ReviewServiceError, match=f"Label Studio at {dead} is unreachable"):
        pull_reviews(ws, reviewer=LabelStudioReviewer(dead, label_studio.token, retries=0))
    assert snapshot(ws) == before


def test_a_project_labelled_in_other_classes_is_refused(label_studio: LabelStudioServer) -> None:
    ls = LabelStudio(base_url=label_studio.url, api_key=label_studio.token, timeout=30)
    ls.projects.create(title="edgeloop review other classes", label_config=label_config(["cat", "dog"]))
    reviewer = LabelStudioReviewer(label_studio.url, label_studio.token)
    with pytest.raises(ReviewConfigError, match=r"labels boxes \['cat', 'dog'\].*classes are \['helmet'"):
        reviewer.ensure_project("edgeloop review other classes", CLASSES)
    # The same title reused with the same classes is the same project.
    first = reviewer.ensure_project("edgeloop review same classes", CLASSES)
    assert reviewer.ensure_project("edgeloop review same classes", list(reversed(CLASSES))) == first
