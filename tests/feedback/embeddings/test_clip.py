"""CLIP embeddings with randomly initialised weights (nothing is downloaded): shape, norm, idempotent storage.

Random weights carry no meaning, but they are deterministic, which is all these tests need.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import cv2
import numpy as np
import pytest

from edge.protocol import CaptureMeta, SourceRef
from feedback.embeddings.backfill import embed_captures
from feedback.embeddings.clip import ImageEmbedder, embedder_name, settings_embedder_name
from feedback.review.selection import SelectionConfig, select_captures
from store.inbox import CaptureRecord, load_inbox
from store.settings import Settings, Workspace


@pytest.fixture(scope="module")
def embedder() -> ImageEmbedder:
    return ImageEmbedder(batch_size=4)


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (96, 128, 3), dtype=np.uint8)


def add_capture(ws: Workspace, capture_id: str, img: np.ndarray | None) -> str:
    """A capture whose image is in the blob store (or, with None, missing from it)."""
    if img is None:
        sha = hashlib.sha256(capture_id.encode()).hexdigest()
    else:
        sha = ws.blobs.put(cv2.imencode(".png", img)[1].tobytes())  # lossless: one changed pixel survives
    meta = CaptureMeta(
        device="jetson-1", camera="cam0", captured_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
        frame_width=img.shape[1] if img is not None else 128, frame_height=96, model_version="m1",
        triggers=["random"], source=SourceRef(uri="rtsp://cam0/stream", frame_index=0),
    )
    ws.inbox.add_capture(CaptureRecord(id=capture_id, sha256=sha, media_type="image/png", bytes=1, meta=meta))
    return sha


def test_embed_gives_unit_vectors_and_is_deterministic(embedder):
    images = [image(0), image(1), image(0), image(2), image(3)]
    vectors = embedder.embed(images)
    assert vectors.shape == (5, embedder.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-5)  # same image, same vector
    assert not np.allclose(vectors[0], vectors[1], atol=1e-3)
    np.testing.assert_allclose(embedder.embed([image(0)])[0], vectors[0], atol=1e-5)  # batching does not matter
    assert embedder.embed([]).shape == (0, embedder.dim)


def test_names_say_which_weights(tmp_path, embedder):
    assert embedder.name == settings_embedder_name(Settings(workspace=tmp_path)) == "ViT-S-32-alt:random-init-0"
    assert embedder_name("ViT-B-32", pretrained="laion2b_s34b_b79k") == "ViT-B-32:laion2b_s34b_b79k"
    weights = tmp_path / "clip.pt"
    weights.write_bytes(b"one")
    first = embedder_name("ViT-S-32-alt", weights)
    weights.write_bytes(b"two")
    assert embedder_name("ViT-S-32-alt", weights) != first  # same path, other weights: other vectors
    with pytest.raises(FileNotFoundError):
        ImageEmbedder(weights=tmp_path / "absent.pt")


def test_embed_captures_adds_only_what_is_missing(tmp_path, embedder):
    ws = Workspace(Settings(workspace=tmp_path, fsync=False))
    shared = add_capture(ws, "a", image(0))
    add_capture(ws, "a-again", image(0))  # same bytes under another id: embedded once, stored for both
    add_capture(ws, "b", image(1))
    add_capture(ws, "lost", None)  # its blob never arrived
    load_inbox(ws.catalog, ws.inbox)

    assert embed_captures(ws, embedder, batch_size=2, progress=False) == 3
    assert embed_captures(ws, embedder, progress=False) == 0
    add_capture(ws, "c", image(2))
    load_inbox(ws.catalog, ws.inbox)
    assert embed_captures(ws, embedder, progress=False) == 1

    with ws.catalog.connect() as con:
        rows = dict(con.execute("SELECT ref, vector FROM embeddings WHERE kind = 'capture' AND model = ?",
                                [embedder.name]).fetchall())
    assert sorted(rows) == ["a", "a-again", "b", "c"]
    assert rows["a"] == rows["a-again"]
    expected = embedder.embed([cv2.imdecode(np.frombuffer(ws.blobs.get(shared), np.uint8), cv2.IMREAD_COLOR)])[0]
    np.testing.assert_allclose(rows["a"], expected, atol=1e-5)


def test_embedded_near_duplicates_are_picked_once(tmp_path, embedder):
    ws = Workspace(Settings(workspace=tmp_path, fsync=False))
    for i in range(4):  # one scene, a pixel different each time
        frame = image(0)
        frame[0, i] = 255 - frame[0, i]
        add_capture(ws, f"a-scene{i}", frame)  # first by id: they win every tie on priority
    for seed in (1, 2, 3):
        add_capture(ws, f"b-other{seed}", image(seed))
    load_inbox(ws.catalog, ws.inbox)
    embed_captures(ws, embedder, progress=False)
    picks = [p.capture_id for p in select_captures(ws, 4)]
    assert picks == ["a-scene0", "b-other1", "b-other2", "b-other3"]
    plain = [p.capture_id for p in select_captures(ws, 4, SelectionConfig(diversity=False))]
    assert plain == ["a-scene0", "a-scene1", "a-scene2", "a-scene3"]
