"""Batched `DetectorEmbedder.detect_frames` and `embed_boxes_of` (synthesis filters) match one image at a time."""

from __future__ import annotations

import numpy as np

from feedback.embeddings.detector import DetectorEmbedder
from feedback.scenes import render_scene


def test_batched_detections_and_frame_vectors_match_one_frame_at_a_time(scene_pt):
    embedder = DetectorEmbedder(scene_pt, imgsz=160, batch_size=2)
    frames = [render_scene(s).image for s in (7, 8, 9)]  # three frames: a full batch and a partial one
    found, vectors = embedder.detect_frames(frames, conf=0.001)
    assert len(found) == 3 and vectors.shape == (3, embedder.dim)
    for image, detections, vector in zip(frames, found, vectors, strict=True):
        alone, frame_vector, _ = embedder.detect_and_embed(image, conf=0.001)
        assert len(detections) == len(alone) > 0
        np.testing.assert_allclose(detections.xyxy, alone.xyxy, atol=1e-3)
        np.testing.assert_allclose(detections.confidence, alone.confidence, atol=1e-4)
        np.testing.assert_array_equal(detections.class_id, alone.class_id)
        np.testing.assert_allclose(vector, frame_vector, atol=1e-5)
    assert embedder.detect_frames([])[1].shape == (0, embedder.dim)


def test_boxes_of_several_images_embed_as_they_do_one_image_at_a_time(scene_pt):
    embedder = DetectorEmbedder(scene_pt, imgsz=160, batch_size=3)
    scenes = [render_scene(s) for s in (7, 8, 9)]
    boxes = [scenes[0].boxes[:2], np.zeros((0, 4)), scenes[2].boxes[:3]]
    together = embedder.embed_boxes_of([s.image for s in scenes], boxes)
    assert [v.shape for v in together] == [(len(b), embedder.dim) for b in boxes] and len(boxes[2]) > 1
    for scene, b, vectors in zip(scenes, boxes, together, strict=True):
        np.testing.assert_allclose(vectors, embedder.embed_boxes(scene.image, b), atol=1e-5)
    assert embedder.embed_boxes_of([], []) == []
