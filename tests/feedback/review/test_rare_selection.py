"""Active selection finds a planted rare class the model never predicts, through the product's own path.

A site's camera sees heads; the deployed model calls every head a helmet. Bare heads are planted in a
few frames; the verified base set holds only a handful. `prepare_vectors` scans and embeds, the probe
learns from verified crops, and selection must bring the planted frames to the reviewers first.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge.protocol import CaptureMeta, Detection, SourceRef, utc_now
from feedback.datasets.yolo_import import import_yolo
from feedback.review.boxes import prepare_vectors
from feedback.review.selection import SelectionConfig, select_captures
from feedback.scenes import CLASSES, encode_jpeg, render_scene, write_yolo_dataset
from store.blobs import sha256_hex
from store.inbox import CaptureRecord, load_inbox
from store.models import register_model
from store.settings import Settings, Workspace
from store.vectors import BOX, LABEL_BOX

HELMETS_ONLY = (1.0, 0.0, 0.0, 0.0)
HALF_BARE = (0.5, 0.5, 0.0, 0.0)
PLANTED = set(range(0, 60, 6))  # 10 of 60 frames show bare heads


def add_frame(ws: Workspace, seed: int, weights: tuple[float, ...], index: int) -> tuple[str, int]:
    """One capture as the device uploads it: every head reported as a helmet at 0.4."""
    scene = render_scene(seed, class_weights=weights)
    data = encode_jpeg(scene.image)
    sha = ws.blobs.put(data)
    meta = CaptureMeta(
        device="cam", camera="c", captured_at=utc_now(), frame_width=320, frame_height=240, model_version="m1",
        triggers=["uncertainty"], source=SourceRef(uri="cam.mp4", frame_index=index),
        detections=[Detection(xyxy=tuple(map(float, b)), confidence=0.4, class_id=0) for b in scene.boxes],
    )
    ws.inbox.add_capture(CaptureRecord(id=sha, sha256=sha, media_type="image/jpeg", bytes=len(data), meta=meta))
    return sha, int((scene.class_ids == 1).sum())


@pytest.fixture(scope="module")
def site(tmp_path_factory, scene_pt) -> tuple[Workspace, dict[str, int]]:
    root = tmp_path_factory.mktemp("site")
    ws = Workspace(Settings(workspace=root / "ws", fsync=False))
    # The base set: heads, 8% of them bare.
    import_yolo(ws, write_yolo_dataset(root / "base", range(100, 220), class_weights=(0.92, 0.08, 0, 0)), "train",
                progress=False)
    data = scene_pt.read_bytes()
    ws.blobs.put(data)
    with ws.catalog.connect() as con:
        model_id = register_model(con, sha256_hex(data), classes=list(CLASSES), imgsz=160)
        con.execute("UPDATE models SET status = 'champion' WHERE id = ?", [model_id])
    bare = {}
    for i in range(60):
        sha, n = add_frame(ws, 5000 + i, HALF_BARE if i in PLANTED else HELMETS_ONLY, i)
        bare[sha] = n
    load_inbox(ws.catalog, ws.inbox)
    return ws, bare


def test_prepare_vectors_embeds_candidates_and_verified_boxes_once(site):
    ws, _ = site
    name = prepare_vectors(ws, progress=False)
    assert name.startswith("detector:")
    with ws.catalog.connect() as con:
        scans = con.execute("SELECT count(*) FROM box_scans WHERE model = ?", [name]).fetchone()[0]
        boxes = con.execute("SELECT count(*) FROM embeddings WHERE kind = ? AND model = ?", [BOX, name]).fetchone()[0]
        verified = con.execute("SELECT count(*) FROM label_boxes").fetchone()[0]
        label_vectors = con.execute("SELECT count(*) FROM embeddings WHERE kind = ? AND model = ?",
                                    [LABEL_BOX, name]).fetchone()[0]
        reported = con.execute("SELECT count(*) FROM detections").fetchone()[0]
    assert scans == 60 and boxes >= reported and label_vectors == verified
    # A second call finds nothing left to do.
    with ws.catalog.connect() as con:
        before = con.execute("SELECT count(*) FROM embeddings").fetchone()[0]
    assert prepare_vectors(ws, progress=False) == name
    with ws.catalog.connect() as con:
        assert con.execute("SELECT count(*) FROM embeddings").fetchone()[0] == before


def test_active_picks_the_planted_rare_frames_far_more_than_random(site):
    ws, bare = site
    name = prepare_vectors(ws, progress=False)
    planted = {sha for sha, n in bare.items() if n}
    assert len(planted) >= 8
    active = select_captures(ws, 10, SelectionConfig(embedder=name))
    found = sum(p.capture_id in planted for p in active)
    rare_scores = [p.parts["rare"] for p in active]
    random_found = [sum(p.capture_id in planted for p in select_captures(ws, 10, SelectionConfig("random", seed=s)))
                    for s in range(5)]
    assert found >= 6, f"active found {found} of {len(planted)} planted frames; parts {rare_scores}"
    assert found >= 2.5 * np.mean(random_found)
    # Without the probe (and what depends on it), the planted frames are no longer found.
    blind = select_captures(ws, 10, SelectionConfig(embedder=name, rare=False, class_balance=False))
    assert sum(p.capture_id in planted for p in blind) < found
    assert "rare" not in blind[0].parts and {"rare", "evidence", "failure", "uncertainty", "class_balance",
                                             "diversity", "operator"} <= set(active[0].parts)
