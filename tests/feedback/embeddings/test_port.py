"""Both embedder adapters share one port: whole images and box crops in, unit vectors out, named by weights.

Random weights throughout (nothing is downloaded); the detector adapter's detections match the edge's.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from feedback.embeddings.clip import ImageEmbedder
from feedback.embeddings.detector import DetectorEmbedder
from feedback.embeddings.port import Embedder, crop_with_context
from feedback.scenes import render_scene


@pytest.fixture(scope="module")
def detector(scene_pt) -> DetectorEmbedder:
    return DetectorEmbedder(scene_pt, imgsz=160)


@pytest.fixture(scope="module")
def clip() -> ImageEmbedder:
    return ImageEmbedder(batch_size=4)


def test_crop_with_context_grows_the_box_and_stays_inside():
    image = np.zeros((100, 200, 3), np.uint8)
    assert crop_with_context(image, np.array([40, 20, 80, 60]), 0.25).shape == (60, 60, 3)  # 40 px + 10 each side
    assert crop_with_context(image, np.array([0, 0, 20, 10]), 0.25).shape == (13, 25, 3)  # clipped at the corner
    assert crop_with_context(image, np.array([50, 50, 50, 50]), 0.25).shape == (1, 1, 3)  # degenerate: still a pixel


@pytest.mark.parametrize("which", ["detector", "clip"])
def test_adapters_share_the_port(which, request):
    embedder = request.getfixturevalue(which)
    assert isinstance(embedder, Embedder)
    scenes = [render_scene(seed) for seed in (1, 2, 3)]
    frames = embedder.embed([s.image for s in scenes])
    assert frames.shape == (3, embedder.dim) and frames.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(frames, axis=1), 1.0, atol=1e-5)
    boxes = embedder.embed_boxes(scenes[0].image, scenes[0].boxes)
    assert boxes.shape == (len(scenes[0].boxes), embedder.dim)
    assert embedder.embed_boxes(scenes[0].image, np.zeros((0, 4))).shape == (0, embedder.dim)
    # Deterministic: the same input gives the same vector, another input another one.
    np.testing.assert_allclose(embedder.embed([scenes[0].image])[0], frames[0], atol=1e-5)
    assert float(frames[0] @ frames[1]) < 0.99999


def test_detector_vectors_are_named_by_the_weights(scene_pt, tmp_path, detector):
    other = tmp_path / "other.pt"
    shutil.copyfile(scene_pt, other)
    assert DetectorEmbedder(other, imgsz=160).name == detector.name  # same bytes, same name
    import torch
    from ultralytics import YOLO

    changed = YOLO(str(scene_pt))
    with torch.no_grad():
        next(changed.model.parameters()).add_(0.01)
    changed.save(str(other))
    assert DetectorEmbedder(other, imgsz=160).name != detector.name
    assert detector.name.startswith("detector:") and detector.weights_sha256[:16] in detector.name


def test_detect_and_embed_finds_what_the_edge_finds(scene_onnx, detector):
    """The scan sees a frame as the device would: same letterbox and decoding as the ONNX detector."""
    from edge.detectors.load import load_detector

    edge = load_detector(scene_onnx, conf=0.001)  # random weights: only a very low threshold leaves boxes
    image = render_scene(7).image
    found, frame_vector, box_vectors = detector.detect_and_embed(image, conf=0.001)
    expected = edge.detect(image)
    assert len(found) == len(expected) > 0
    np.testing.assert_allclose(found.xyxy, expected.xyxy, atol=0.5)
    np.testing.assert_allclose(found.confidence, expected.confidence, atol=1e-3)
    np.testing.assert_array_equal(found.class_id, expected.class_id)
    assert frame_vector.shape == (detector.dim,) and box_vectors.shape == (len(found), detector.dim)
    np.testing.assert_allclose(box_vectors, detector.embed_boxes(image, found.xyxy), atol=1e-5)
