"""The rare-class pass through the oracle: questions chosen by the probe, each verdict landing where it should."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.protocol import utc_now
from feedback.review.effort import CostModel
from feedback.review.hunt import OracleHunt, choose_questions, pull_hunt, push_hunt
from feedback.review.oracle import OracleReviewer
from feedback.review.selection import fit_catalog_probe
from feedback.review.workflow import pull_reviews
from store.labels import add_image, add_label, ensure_classes
from store.review_tasks import add_box_scans
from store.settings import Settings, Workspace
from store.vectors import BOX, LABEL_BOX, box_ref, read_vectors, store_vectors
from tests.feedback.review.test_workflow import W, H, add_captures, det, write_labels

MODEL = "planted-embedder"
HEAD, HAT = np.eye(8)[1], np.eye(8)[0]  # where the rare class's boxes and the common class's lie
CLASSES = ["helmet", "no_helmet", "vest", "package"]


@pytest.fixture
def site(tmp_path: Path) -> tuple[Workspace, list[str], OracleReviewer]:
    """Four waiting captures, each with one scanned box; verified boxes teach the probe heads (1) from hats (0).

    Truth (the oracle's files): frame 0's box is a bare head; frame 1's is a helmet that looks like a head to the
    embedder; frame 2's is a helmet that looks like one; frame 3 looks like a head, and its frame has no label
    file (nothing of the class is known there)."""
    ws = Workspace(Settings(workspace=tmp_path / "ws", fsync=False))
    with ws.catalog.connect() as con:
        ensure_classes(con, CLASSES)
    ids = add_captures(ws, [[det(40, 40, 100, 120, 0, 0.3)]] * 4)
    labels = tmp_path / "labels"
    write_labels(labels, 0, [(1, 40, 40, 100, 120)])
    write_labels(labels, 1, [(0, 40, 40, 100, 120)])
    write_labels(labels, 2, [(0, 40, 40, 100, 120)])
    rng = np.random.default_rng(0)
    box = [40.0, 40.0, 100.0, 120.0]
    with ws.catalog.connect() as con:
        add_box_scans(con, [(c, MODEL, 0, 1, 0.3, *box) for c in ids], [(c, MODEL, 1, utc_now()) for c in ids])
        verified = []
        for i, (vector, class_id) in enumerate([(HEAD, 1)] * 4 + [(HAT, 0)] * 4):
            sha = f"{i:064x}"
            add_image(con, sha, W, H, "image/jpeg", "real", "import:test")
            label = add_label(con, sha, np.array([box]), np.array([class_id]), source="import")
            verified.append((box_ref(label, 0), vector + rng.normal(0, 0.05, 8)))
    store_vectors(ws.catalog, LABEL_BOX, MODEL, verified)
    store_vectors(ws.catalog, BOX, MODEL, [(box_ref(c, 0), v + rng.normal(0, 0.05, 8)) for c, v in
                                          zip(ids, [HEAD, HEAD, HAT, HEAD], strict=True)])
    return ws, ids, OracleReviewer(labels)


def test_each_verdict_lands_where_it_should_and_a_no_teaches_the_probe(site) -> None:
    ws, ids, oracle = site
    hunter = OracleHunt(oracle)
    questions = choose_questions(ws, 1, MODEL, budget_seconds=6.0, cost=CostModel())  # 2 s a question: three
    assert {q.item.capture_id for q in questions} == {ids[0], ids[1], ids[3]}  # the hat-like box scores lowest
    assert all(q.score > 0.5 for q in questions)
    assert push_hunt(ws, questions, reviewer=hunter, class_name="no_helmet") == 3
    assert [q.item.capture_id for q in choose_questions(ws, 1, MODEL, budget=10)] == [ids[2]]  # never asked twice

    with ws.catalog.connect() as con:
        before = fit_catalog_probe(con, MODEL, [1])
    report = pull_hunt(ws, reviewer=hunter, full_review=oracle)
    assert (report.yes, report.no, report.unsure, report.pending) == (1, 2, 0, 0)
    assert report.seconds == 3 * 2.0 and report.to_review is not None and report.to_review.pushed == 1
    with ws.catalog.connect() as con:
        hunts = dict(con.execute("SELECT capture_id, status FROM hunt_tasks").fetchall())
        reviews = dict(con.execute("SELECT capture_id, strategy FROM review_tasks").fetchall())
        labels = con.execute("SELECT count(*) FROM labels WHERE source = 'review'").fetchall()[0][0]
        after = fit_catalog_probe(con, MODEL, [1])
    assert hunts == {ids[0]: "yes", ids[1]: "no", ids[3]: "no"}
    assert reviews == {ids[0]: "hunt"}  # the yes frame waits for its full review; the no frames for nothing
    assert labels == 0  # no verdict of the pass is a label: only the full review makes one
    # The two "no" boxes join the probe's negatives: it calls their vectors less likely the rare class now.
    with ws.catalog.connect() as con:
        refs, vectors = read_vectors(con, BOX, MODEL, [box_ref(ids[1], 0), box_ref(ids[3], 0)])
    assert (after.score(vectors)[:, 0] < before.score(vectors)[:, 0]).all()

    again = pull_hunt(ws, reviewer=hunter, full_review=oracle)
    assert (again.asked, again.yes, again.no, again.seconds) == (0, 0, 0, 0.0) and again.to_review is None

    # The full review of the yes frame started from the device's helmet box plus the confirmed bare head: the
    # head is kept (2 s), the helmet deleted (2 s); priced against the device's box alone it would be a fix (7 s).
    pulled = pull_reviews(ws, reviewer=oracle, holdout_share=0.0)
    with ws.catalog.connect() as con:
        effort = json.loads(con.execute("SELECT effort FROM review_tasks WHERE capture_id = ?",
                                        [ids[0]]).fetchall()[0][0])
    assert pulled.verified == 1 and effort["actions"] == {"kept": 1, "fixed": 0, "added": 0, "deleted": 1}
    assert effort["seconds"] == 4.0
