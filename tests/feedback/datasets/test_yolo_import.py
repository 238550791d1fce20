"""`import_yolo` and dataset versions on generated scenes: provenance, idempotence, the holdout wall."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from feedback.datasets.yolo_import import ImportProblem, import_yolo
from feedback.scenes import CLASSES, render_scene, write_yolo_dataset
from store.blobs import sha256_hex
from store.datasets import DatasetError, build_dataset, materialise
from store.labels import ClassMismatch, add_image, add_label, assign_split, current_labels
from store.settings import Settings, Workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(Settings(workspace=tmp_path / "ws"))


def test_import_round_trips_boxes_and_is_idempotent(ws: Workspace, tmp_path: Path) -> None:
    data = write_yolo_dataset(tmp_path / "d", range(8))
    report = import_yolo(ws, data, "train", progress=False)
    assert report.images == 8 and report.labels_added == 8
    again = import_yolo(ws, data, "train", progress=False)
    assert again.labels_added == 0 and again.unchanged == 8
    with ws.catalog.connect() as con:
        labels = current_labels(con)
        provenance = con.execute("SELECT DISTINCT source FROM labels").fetchall()
    assert len(labels) == 8 and provenance == [("import",)]
    # Boxes come back in pixels, equal to the generated scene's to within the files' rounding.
    sha = sha256_hex((data / "images" / "scene_000005.jpg").read_bytes())
    label = next(x for x in labels if x.image_sha256 == sha)
    scene = render_scene(5)
    assert len(scene.boxes) == 6 and np.array_equal(label.class_ids, scene.class_ids)
    assert np.abs(label.boxes - scene.boxes).max() < 0.01
    assert sum(len(x.boxes) for x in labels) == report.boxes


def test_class_list_must_agree(ws: Workspace, tmp_path: Path) -> None:
    import_yolo(ws, write_yolo_dataset(tmp_path / "a", range(2)), "train", progress=False)
    other = write_yolo_dataset(tmp_path / "b", range(2, 4))
    with pytest.raises(ClassMismatch, match="do not match"):
        import_yolo(ws, other, "train", names=["helmet", "vest", "no_helmet", "package"], progress=False)
    with ws.catalog.connect() as con:  # nothing of the refused import was written
        assert con.execute("SELECT count(*) FROM labels").fetchone() == (2,)


def test_bad_label_line_stops_the_import_naming_it(ws: Workspace, tmp_path: Path) -> None:
    data = write_yolo_dataset(tmp_path / "d", range(3))
    label = sorted((data / "labels").glob("*.txt"))[1]
    label.write_text(label.read_text() + "7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(ImportProblem, match=f"{label.name}:.*class 7"):
        import_yolo(ws, data, "train", progress=False)
    with ws.catalog.connect() as con:
        assert con.execute("SELECT count(*) FROM labels").fetchone() == (0,)


def test_holdout_is_sticky_and_datasets_version_only_on_change(ws: Workspace, tmp_path: Path) -> None:
    train = write_yolo_dataset(tmp_path / "t", range(10))
    hold = write_yolo_dataset(tmp_path / "h", range(100, 104))
    import_yolo(ws, train, "train", progress=False)
    import_yolo(ws, hold, "holdout", progress=False)
    v1 = build_dataset(ws.catalog)
    assert (v1.version, v1.n_train, v1.n_holdout, v1.created) == (1, 10, 4, True)
    assert not build_dataset(ws.catalog).created  # same labels, same version
    # Importing the holdout images again "as train" cannot pull them out of the holdout.
    report = import_yolo(ws, hold, "train", progress=False)
    assert report.kept_in_holdout == 4
    assert build_dataset(ws.catalog).version == 1

    root = materialise(ws.catalog, ws.blobs, 1, tmp_path / "yolo")
    assert len(list((root.parent / "val" / "images").iterdir())) == 4
    assert len(list((root.parent / "train" / "labels").iterdir())) == 10
    import yaml

    assert yaml.safe_load(root.read_text())["names"] == list(CLASSES)


def test_synthetic_share_is_capped_and_never_validates(ws: Workspace, tmp_path: Path) -> None:
    import_yolo(ws, write_yolo_dataset(tmp_path / "t", range(7)), "train", progress=False)
    import_yolo(ws, write_yolo_dataset(tmp_path / "h", range(50, 52)), "holdout", progress=False)
    with ws.catalog.connect() as con:
        for i in range(10):
            sha = f"{i:064x}"
            add_image(con, sha, 10, 10, "image/jpeg", "synthetic", "synthetic:test")
            assign_split(con, sha, "train")
            add_label(con, sha, np.array([[1, 1, 5, 5]]), np.array([1]), source="synthetic")
    v = build_dataset(ws.catalog, cap=0.3)
    # 7 real: at most 3 synthetic keeps the share at 3/10 = 30%.
    assert (v.n_synthetic, v.n_train, v.n_holdout) == (3, 10, 2)
    with ws.catalog.connect() as con:
        origins = con.execute("SELECT split, origin, count(*) FROM dataset_items WHERE version = ? GROUP BY ALL "
                              "ORDER BY ALL", [v.version]).fetchall()
    assert origins == [("train", "real", 7), ("train", "synthetic", 3), ("val", "real", 2)]
    assert build_dataset(ws.catalog, cap=[0.3, 0.5]).n_synthetic == 7  # the schedule's second step
    with pytest.raises(DatasetError, match="must lie in"):
        build_dataset(ws.catalog, cap=1.0)


def test_a_dataset_needs_real_train_and_holdout(ws: Workspace, tmp_path: Path) -> None:
    import_yolo(ws, write_yolo_dataset(tmp_path / "t", range(3)), "train", progress=False)
    with pytest.raises(DatasetError, match="holdout"):
        build_dataset(ws.catalog)


def test_an_image_the_api_would_refuse_is_refused_here_too(ws: Workspace, tmp_path: Path) -> None:
    data = write_yolo_dataset(tmp_path / "d", range(3))
    truncated = sorted((data / "images").glob("*.jpg"))[1]
    whole = truncated.read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])  # Pillow's verify() passes it; the strict decoder does not
    with pytest.raises(ImportProblem, match=f"1 of 3 images .*{truncated.name}: .*Premature end of JPEG file"):
        import_yolo(ws, data, "train", progress=False)
    with ws.catalog.connect() as con:
        assert con.execute("SELECT count(*) FROM labels").fetchone() == (0,)
    report = import_yolo(ws, data, "train", progress=False, skip_bad=True)
    assert report.images == report.labels_added == 2 and [s.split(": ")[0] for s in report.skipped] == [str(truncated)]
    assert not ws.blobs.exists(sha256_hex(truncated.read_bytes()))  # not even its bytes were stored
