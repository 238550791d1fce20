"""The rare-class pass through a real Label Studio: one yes / no / not-sure question per box, answered in it.

Captures arrive the real way (upload, inbox); the scanned boxes and their vectors are planted, as a scan would
store them, so the probe's choice is known. Verdicts are submitted through Label Studio's own API.
"""

from __future__ import annotations

import json

import httpx
import numpy as np
from label_studio_sdk import LabelStudio

from edge.protocol import utc_now
from feedback.ingest.serving import BackgroundServer
from feedback.review.hunt import choose_questions, pull_hunt, push_hunt
from feedback.review.labelstudio import LabelStudioReviewer, xyxy_to_percent
from feedback.review.labelstudio_hunt import LabelStudioHunt
from feedback.scenes import CLASSES
from store.labels import add_image, add_label, ensure_classes
from store.review_tasks import add_box_scans
from store.settings import Settings, Workspace
from store.vectors import BOX, LABEL_BOX, box_ref, store_vectors
from tests.integration.labelstudio import LabelStudioServer
from tests.integration.test_labelstudio import H, W, upload_captures

MODEL = "planted-embedder"
RARE = 1  # the scenes' class 1
ASKED = {"accepted": "yes", "moved": "no", "deleted": "not sure"}  # three captures, one answer each
BOX_XYXY = (40.0, 40.0, 100.0, 120.0)


def plant(ws: Workspace, ids: dict[str, str]) -> None:
    """A scanned box per asked capture that looks like the rare class, and verified boxes teaching the probe."""
    rng = np.random.default_rng(1)
    head, hat = np.eye(8)[1], np.eye(8)[0]
    with ws.catalog.connect() as con:
        add_box_scans(con, [(ids[case], MODEL, 0, RARE, 0.2, *BOX_XYXY) for case in ASKED],
                      [(ids[case], MODEL, 1, utc_now()) for case in ASKED])
        verified = []
        for i, (vector, class_id) in enumerate([(head, RARE)] * 3 + [(hat, 0)] * 3):
            sha = f"{i:064x}"
            add_image(con, sha, W, H, "image/jpeg", "real", "import:test")
            label = add_label(con, sha, np.array([BOX_XYXY]), np.array([class_id]), source="import")
            verified.append((box_ref(label, 0), vector + rng.normal(0, 0.05, 8)))
    store_vectors(ws.catalog, LABEL_BOX, MODEL, verified)
    store_vectors(ws.catalog, BOX, MODEL, [(box_ref(ids[case], 0), head + rng.normal(0, 0.05, 8)) for case in ASKED])


def test_hunt_questions_round_trip_and_each_answer_lands_where_it_should(label_studio: LabelStudioServer,
                                                                         tmp_path) -> None:
    ws = Workspace(Settings(workspace=tmp_path / "ws", fsync=False))
    with ws.catalog.connect() as con:
        ensure_classes(con, CLASSES)
    ls = LabelStudio(base_url=label_studio.url, api_key=label_studio.token, timeout=30)
    reviewer = LabelStudioReviewer(label_studio.url, label_studio.token)
    hunter = LabelStudioHunt(reviewer)
    with BackgroundServer(ws.settings) as api:
        ids = upload_captures(ws, api)
        plant(ws, ids)
        questions = choose_questions(ws, RARE, MODEL, budget=10)
        assert {q.item.capture_id for q in questions} == {ids[c] for c in ASKED}
        assert push_hunt(ws, questions, reviewer=hunter, class_name=CLASSES[RARE], public_url=api) == 3
        with ws.catalog.connect() as con:
            project, = {p for (p,) in con.execute("SELECT DISTINCT project FROM hunt_tasks").fetchall()}
        tasks = {t["data"]["capture_id"]: t for t in
                 (t.model_dump(mode="json") for t in ls.tasks.list(project=int(project), fields="all"))}
        assert set(tasks) == {ids[c] for c in ASKED}
        for task in tasks.values():  # the frame behind a signed URL, the one box asked about drawn on it
            assert httpx.get(task["data"]["image"], timeout=10).status_code == 200
            [region] = task["predictions"][0]["result"]
            assert region["value"]["rectanglelabels"] == [CLASSES[RARE]]
            got = [region["value"][k] for k in ("x", "y", "width", "height")]
            assert np.abs(np.array(got) - xyxy_to_percent(np.array([BOX_XYXY]), W, H)[0]).max() < 1e-9
        for case, answer in ASKED.items():
            ls.annotations.create(tasks[ids[case]]["id"], lead_time=3.5, result=[
                {"from_name": "verdict", "to_name": "image", "type": "choices", "value": {"choices": [answer]}}])

        report = pull_hunt(ws, reviewer=hunter, full_review=reviewer, public_url=api)
    assert (report.yes, report.no, report.unsure, report.pending) == (1, 1, 1, 0)
    assert report.seconds == 3 * 3.5 and report.measured == 3
    with ws.catalog.connect() as con:
        hunts = {c: (s, json.loads(e)) for c, s, e in con.execute(
            "SELECT capture_id, status, effort FROM hunt_tasks").fetchall()}
        reviews = {c for (c,) in con.execute("SELECT capture_id FROM review_tasks WHERE strategy = 'hunt'").fetchall()}
    assert {c: s for c, (s, _) in hunts.items()} == {ids[c]: {"yes": "yes", "no": "no", "not sure": "unsure"}[a]
                                                     for c, a in ASKED.items()}
    assert all(e["source"] == "lead_time" and e["seconds"] == 3.5 for _, e in hunts.values())
    # A yes and a not-sure go to a full review; the no stays a hard negative, asked about nothing more.
    assert reviews == {ids["accepted"], ids["deleted"]}
    full = {t["data"]["capture_id"]: t for t in (t.model_dump(mode="json") for t in ls.tasks.list(
        project=int(report.to_review.project), fields="all"))}
    yes_regions = full[ids["accepted"]]["predictions"][0]["result"]
    unsure_regions = full[ids["deleted"]]["predictions"][0]["result"]
    # The yes frame starts from the device's two boxes plus the confirmed bare head; the not-sure from the two.
    assert [r["value"]["rectanglelabels"] for r in yes_regions][-1] == [CLASSES[RARE]]
    assert len(yes_regions) == len(unsure_regions) + 1

    again = pull_hunt(ws, reviewer=hunter, full_review=reviewer)
    assert (again.asked, again.yes, again.no, again.unsure, again.seconds) == (0, 0, 0, 0, 0.0)
