"""Material is the latest verified label of each real training image: never holdout, synthetic or unverified."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from feedback.datasets.yolo_import import import_yolo
from feedback.scenes import CLASSES, encode_jpeg, render_scene, write_yolo_dataset
from feedback.synthesis.material import load_material
from store.labels import add_image, add_label, assign_split
from store.settings import Settings, Workspace


def test_only_the_latest_verified_labels_of_real_training_images(tmp_path: Path):
    ws = Workspace(Settings(workspace=tmp_path / "ws", fsync=False))
    import_yolo(ws, write_yolo_dataset(tmp_path / "train", range(3), class_weights=(1, 0, 1, 1)), "train",
                progress=False)
    import_yolo(ws, write_yolo_dataset(tmp_path / "bare", range(3, 5), class_weights=(0, 1, 0, 0)), "train",
                progress=False)
    import_yolo(ws, write_yolo_dataset(tmp_path / "holdout", range(10, 13)), "holdout", progress=False)
    extra = {}
    for name, seed in (("synthetic", 20), ("unverified", 21)):
        data = encode_jpeg(render_scene(seed).image)
        extra[name] = ws.blobs.put(data)
    with ws.catalog.connect() as con:
        add_image(con, extra["synthetic"], 320, 240, "image/jpeg", "synthetic", "synthetic:swap")
        assign_split(con, extra["synthetic"], "train")
        add_label(con, extra["synthetic"], np.array([[1, 1, 30, 30]]), np.array([1]), source="synthetic")
        add_image(con, extra["unverified"], 320, 240, "image/jpeg", "real", "capture:x")
        add_label(con, extra["unverified"], np.array([[1, 1, 30, 30]]), np.array([1]), source="review",
                  status="skipped")
        train = [sha for (sha,) in con.execute("SELECT image_sha256 FROM splits WHERE split = 'train' AND "
                                               "image_sha256 <> ? ORDER BY 1", [extra["synthetic"]]).fetchall()]
        # A reviewer corrects one image; a later skip on it changes nothing.
        add_label(con, train[0], np.array([[5, 5, 50, 60]]), np.array([3]), source="review")
        add_label(con, train[0], np.zeros((0, 4)), np.zeros(0), source="review", status="skipped")
    frames = load_material(ws)
    assert [f.image_sha256 for f in frames] == train
    corrected = frames[0]
    np.testing.assert_array_equal(corrected.boxes, [[5, 5, 50, 60]])
    assert corrected.class_ids.tolist() == [3]
    assert all(f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8 for f in frames)
    # Only frames showing a class, when asked; and a sample that keeps every frame with the preferred class.
    bare = CLASSES.index("no_helmet")
    with_bare = load_material(ws, with_classes=[bare])
    assert 0 < len(with_bare) < len(frames) and all((f.class_ids == bare).any() for f in with_bare)
    assert {f.image_sha256 for f in with_bare} == {f.image_sha256 for f in frames if (f.class_ids == bare).any()}
    sampled = load_material(ws, max_frames=len(with_bare) + 1, prefer=[bare], seed=3)
    assert len(sampled) == len(with_bare) + 1
    assert {f.image_sha256 for f in with_bare} <= {f.image_sha256 for f in sampled}
