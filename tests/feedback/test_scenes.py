"""Tests for the procedural scene generator behind `edgeloop demo`."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from feedback.scenes import CLASSES, Scene, encode_jpeg, render_scene, write_video, write_yolo_dataset


@pytest.fixture(scope="module")
def many_scenes() -> list[Scene]:
    return [render_scene(seed) for seed in range(300)]


def test_same_seed_gives_identical_bytes_and_different_seeds_differ() -> None:
    a, b = render_scene(42), render_scene(42)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.boxes.tobytes() == b.boxes.tobytes()
    assert a.class_ids.tolist() == b.class_ids.tolist()
    assert a.seed == 42
    assert render_scene(43).image.tobytes() != a.image.tobytes()


def test_scene_types_and_shapes() -> None:
    scene = render_scene(7, width=256, height=192)
    assert scene.image.shape == (192, 256, 3) and scene.image.dtype == np.uint8
    assert scene.boxes.dtype == np.float32 and scene.boxes.shape == (len(scene.class_ids), 4)
    assert scene.class_ids.dtype == np.int64


@pytest.mark.parametrize(("width", "height", "n"), [(320, 240, 40), (640, 480, 12), (128, 128, 40)])
def test_boxes_are_inside_the_frame_and_not_degenerate(width: int, height: int, n: int) -> None:
    counts = []
    for seed in range(n):
        scene = render_scene(seed, width=width, height=height)
        counts.append(len(scene.boxes))
        if len(scene.boxes):
            x1, y1, x2, y2 = scene.boxes.T
            assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= width).all() and (y2 <= height).all()
            assert ((x2 - x1) >= 4).all() and ((y2 - y1) >= 4).all()
        assert set(scene.class_ids.tolist()) <= set(range(len(CLASSES)))
    assert 0 <= min(counts) and max(counts) <= 8 and np.mean(counts) > 2


def test_the_rare_class_is_rare_but_present(many_scenes: list[Scene]) -> None:
    ids = np.concatenate([s.class_ids for s in many_scenes])
    share = np.bincount(ids, minlength=len(CLASSES)) / len(ids)
    assert 0.01 <= share[1] <= 0.06
    assert (share[[0, 2, 3]] > 0.2).all()


def test_class_weights_steer_the_mix() -> None:
    ids = np.concatenate([render_scene(s, class_weights=[0, 1, 0, 0]).class_ids for s in range(20)])
    assert len(ids) and (ids == 1).all()
    with pytest.raises(ValueError):
        render_scene(0, class_weights=[1, 1])


def _read_labels(path: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.array([line.split() for line in path.read_text().splitlines()], dtype=np.float64).reshape(-1, 5)
    cx, cy, w, h = rows[:, 1] * width, rows[:, 2] * height, rows[:, 3] * width, rows[:, 4] * height
    return rows[:, 0].astype(np.int64), np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def test_yolo_dataset_round_trips(tmp_path: Path) -> None:
    seeds = [3, 42, 1001]
    root = write_yolo_dataset(tmp_path / "ds", seeds, width=320, height=240)
    assert root == tmp_path / "ds"
    assert sorted(p.name for p in (root / "images").iterdir()) == [f"scene_{s:06d}.jpg" for s in sorted(seeds)]
    assert not list(root.rglob("*.tmp"))
    for seed in seeds:
        scene = render_scene(seed)
        image = cv2.imread(str(root / "images" / f"scene_{seed:06d}.jpg"))
        assert image.shape == scene.image.shape
        cls, boxes = _read_labels(root / "labels" / f"scene_{seed:06d}.txt", 320, 240)
        assert cls.tolist() == scene.class_ids.tolist()
        np.testing.assert_allclose(boxes, scene.boxes, atol=1.0)


def test_data_yaml_is_ultralytics_shaped(tmp_path: Path) -> None:
    root = write_yolo_dataset(tmp_path / "ds", [1], image_format="png")
    data = yaml.safe_load((root / "data.yaml").read_text())
    assert Path(data["path"]) == root.resolve()
    assert (root / data["train"]).is_dir() and (root / data["val"]).is_dir()
    assert data["names"] == dict(enumerate(CLASSES))
    assert (root / "images" / "scene_000001.png").exists()


def test_encode_jpeg_decodes_to_the_same_picture() -> None:
    scene = render_scene(5)
    data = encode_jpeg(scene.image)
    assert data[:2] == b"\xff\xd8"
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(decoded.astype(int) - scene.image).mean() < 6


def test_video_is_h264_with_the_expected_frames(tmp_path: Path) -> None:
    path = tmp_path / "site.mp4"
    scenes = write_video(path, [10, 11, 12, 13], fps=10, hold=2, width=320, height=240)
    assert [s.seed for s in scenes] == [10, 11, 12, 13]
    assert b"avc1" in path.read_bytes()  # the H.264 sample entry, which an RTSP payloader needs
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == 8
    assert frames[0].shape == (240, 320, 3)
    assert np.abs(frames[0].astype(int) - scenes[0].image).mean() < 8
    assert np.abs(frames[2].astype(int) - scenes[1].image).mean() < 8


def test_video_refuses_odd_sizes(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_video(tmp_path / "odd.mp4", [1], width=321, height=240)
