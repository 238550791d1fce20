"""Reading a YOLO folder into pixel ground truth: names, ids, boxes, and the odd label files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from feedback.evaluation.dataset import image_size, load_dataset, read_labels, read_names
from feedback.scenes import CLASSES, render_scene, write_yolo_dataset


def test_generated_scenes_come_back_in_pixels(scenes_dir: Path) -> None:
    names = read_names(scenes_dir)
    assert names == CLASSES
    dataset = load_dataset(scenes_dir, names)
    assert [image.image_id for image in dataset.images] == [f"scene_{seed:06d}" for seed in range(16)]
    for seed, image in enumerate(dataset.images):
        scene = render_scene(seed)
        assert (image.width, image.height) == (320, 240)
        # Labels are stored normalised to 6 decimals: well under a thousandth of a pixel lost.
        np.testing.assert_allclose(image.truth.xyxy, scene.boxes, atol=1e-3)
        assert image.truth.class_id.tolist() == scene.class_ids.tolist()
    assert dataset.instances().sum() == sum(len(render_scene(s).boxes) for s in range(16))


def test_names_from_a_list_or_a_mapping_and_none_without_yaml(tmp_path: Path) -> None:
    assert read_names(tmp_path) is None
    (tmp_path / "data.yaml").write_text("names: [a, b]\n")
    assert read_names(tmp_path) == ("a", "b")
    (tmp_path / "data.yaml").write_text("names:\n  1: b\n  0: a\n")
    assert read_names(tmp_path) == ("a", "b")


def test_missing_label_file_is_a_background_frame_and_polygons_become_boxes(tmp_path: Path) -> None:
    root = write_yolo_dataset(tmp_path / "d", [3, 4])
    (root / "labels" / "scene_000003.txt").unlink()
    (root / "labels" / "scene_000004.txt").write_text("1 0.1 0.2 0.5 0.2 0.3 0.6\n\n")
    dataset = load_dataset(root, CLASSES)
    assert len(dataset.images[0].truth) == 0
    np.testing.assert_allclose(dataset.images[1].truth.xyxy, [[32, 48, 160, 144]])
    assert dataset.images[1].truth.class_id.tolist() == [1]


def test_bad_labels_are_refused_with_the_file_named(tmp_path: Path) -> None:
    root = write_yolo_dataset(tmp_path / "d", [5])
    (root / "labels" / "scene_000005.txt").write_text("0 0.5 0.5 0.1\n")
    with pytest.raises(ValueError, match="scene_000005.txt:1"):
        load_dataset(root, CLASSES)
    (root / "labels" / "scene_000005.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(ValueError, match="class id 7"):
        load_dataset(root, CLASSES)


def test_size_follows_exif_orientation(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90°: decoders show it 40 wide, 60 high
    Image.new("RGB", (60, 40)).save(path, exif=exif)
    assert image_size(path) == (40, 60)
    xyxy, _ = read_labels(tmp_path / "absent.txt", 40, 60)
    assert xyxy.shape == (0, 4)
