"""Box-level copy-paste: pasted training images carry a verified rare crop, drawn only from training frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from feedback.datasets.yolo_import import import_yolo
from feedback.scenes import CLASSES, write_yolo_dataset
from feedback.training.copy_paste import material, paste_rare
from store.datasets import build_dataset, yolo_items
from store.settings import Settings, Workspace

NO_HELMET = CLASSES.index("no_helmet")


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("paste")
    ws = Workspace(Settings(workspace=root / "ws", fsync=False))
    import_yolo(ws, write_yolo_dataset(root / "t", range(40), class_weights=(0.7, 0.06, 0.12, 0.12)), "train",
                progress=False)
    import_yolo(ws, write_yolo_dataset(root / "h", range(500, 520), class_weights=(0.3, 0.4, 0.15, 0.15)),
                "holdout", progress=False)
    return ws


def test_pasted_images_hold_one_more_rare_box_than_their_background(ws: Workspace) -> None:
    items = yolo_items(ws.catalog, build_dataset(ws.catalog).version)[1]
    training = [i for i in items if i.split == "train"]
    by_sha = {i.image_sha256: i for i in items}
    made = list(paste_rare(training, ws.blobs, [NO_HELMET], 6, seed=0))
    assert 3 <= len(made) <= 6  # a frame without a clear place is skipped, not forced
    for pasted in made:
        background, *donors = pasted.frames
        classes = [int(line.split()[0]) for line in pasted.label.splitlines()]
        assert classes.count(NO_HELMET) == by_sha[background].class_ids.count(NO_HELMET) + 1
        assert donors and all(NO_HELMET in by_sha[d].class_ids for d in donors)
        assert {background, *donors} <= {i.image_sha256 for i in training}  # never the holdout
        image = cv2.imdecode(np.frombuffer(pasted.image_jpeg, np.uint8), cv2.IMREAD_COLOR)
        original = cv2.imdecode(np.frombuffer(ws.blobs.get(background), np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == original.shape and np.abs(image.astype(int) - original).max() > 50  # pixels changed
    assert [p.label for p in paste_rare(training, ws.blobs, [NO_HELMET], 6, seed=0)] == [p.label for p in made]


def test_material_is_training_frames_only(ws: Workspace) -> None:
    items = yolo_items(ws.catalog, build_dataset(ws.catalog).version)[1]
    picked = material(items, [NO_HELMET], seed=0)
    assert picked and all(i.split == "train" and i.origin == "real" for i in picked)
