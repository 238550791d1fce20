"""The trained PPE checkpoint on the real PPE val split: numbers agree with pycocotools, files are there.

Skipped, with the reason, where the data set or the checkpoint is absent.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from feedback.evaluation.evaluate import evaluate
from tests.feedback.evaluation.independent_coco import coco_stats

PPE_NAMES = ["helmet", "no_helmet", "no_wear", "wear"]


@pytest.fixture(scope="module")
def evaluated(ppe_dir: Path, models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """The whole val split, evaluated once for the tests below; how long it takes is bench/evaluate.py's."""
    out = tmp_path_factory.mktemp("ppe_eval")
    result = evaluate(
        models_dir / "ppe_base.pt", ppe_dir / "val", names=PPE_NAMES,
        report_dir=out / "report", coco_predictions=out / "pred.json", progress=False,
    )  # fmt: skip
    return result, out


def coco_gt_from_labels(split: Path) -> dict[str, Any]:
    """Ground truth straight from the YOLO label files, independent of the evaluator's reader."""
    images, annotations = [], []
    for image_path in sorted((split / "images").glob("*.jpg")):
        with Image.open(image_path) as img:
            width, height = img.size
        images.append({"id": image_path.stem, "width": width, "height": height})
        for line in (split / "labels" / f"{image_path.stem}.txt").read_text().split("\n"):
            if line.strip():
                c, cx, cy, w, h = map(float, line.split())
                bbox = [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]
                annotations.append({"id": len(annotations) + 1, "image_id": image_path.stem, "category_id": int(c),
                                    "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0})  # fmt: skip
    return {"images": images, "annotations": annotations, "categories": [{"id": i} for i in range(len(PPE_NAMES))]}


def test_map_equals_pycocotools_on_the_written_predictions(
    evaluated: tuple[dict[str, Any], Path], ppe_dir: Path
) -> None:
    result, out = evaluated
    gt = coco_gt_from_labels(ppe_dir / "val")
    stats = coco_stats(gt, out / "pred.json")
    assert result["map50"] == pytest.approx(stats[1], abs=1e-4)
    assert result["map50_95"] == pytest.approx(stats[0], abs=1e-4)
    for cls, name in enumerate(PPE_NAMES):
        stats = coco_stats(gt, out / "pred.json", category=cls)
        assert result["per_class"][name]["map50"] == pytest.approx(stats[1], abs=1e-4)
        assert result["per_class"][name]["map50_95"] == pytest.approx(stats[0], abs=1e-4)


def test_result_json_shape_and_plausible_numbers(evaluated: tuple[dict[str, Any], Path]) -> None:
    result, _ = evaluated
    json.dumps(result)
    assert result["operating_point"] == {"confidence": 0.25, "iou": 0.5}
    assert result["images"] == 250 and result["imgsz"] == [320, 320]
    # The counts from the data set's README.
    instances = {n: c["instances"] for n, c in result["per_class"].items()}
    assert instances == {"helmet": 626, "no_helmet": 67, "no_wear": 246, "wear": 221}
    for metrics in result["per_class"].values():
        assert set(metrics) >= {"map50", "map50_95", "precision", "recall", "instances"}
    # The models README: ultralytics' val says mAP50 0.427, mAP50-95 0.217; COCO interpolation differs a little.
    assert abs(result["map50"] - 0.427) < 0.03 and abs(result["map50_95"] - 0.217) < 0.02
    assert 0 < result["precision"] < 1 and 0 < result["recall"] < 1


def test_report_is_written(evaluated: tuple[dict[str, Any], Path]) -> None:
    _, out = evaluated
    names = ("table.txt", "confusion_matrix.png", "confusion_matrix.json", "false_positives.png", "false_negatives.png")
    for name in names:
        assert (out / "report" / name).stat().st_size > 0, name
    table = (out / "report" / "table.txt").read_text()
    assert "class  mAP@0.5  mAP@0.5:0.95  Precision  Recall" in table
    assert [line.split()[0] for line in table.splitlines()[1:]] == ["all", *PPE_NAMES]


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # export's tracing notes, not ours
def test_onnx_export_scores_like_the_checkpoint(ppe_dir: Path, models_dir: Path, tmp_path: Path) -> None:
    from ultralytics import YOLO

    subset = tmp_path / "subset"  # 40 images keep this quick; the names come from the model
    for sub in ("images", "labels"):
        (subset / sub).mkdir(parents=True)
    for image in sorted((ppe_dir / "val" / "images").glob("*.jpg"))[:40]:
        shutil.copy(image, subset / "images")
        shutil.copy(ppe_dir / "val" / "labels" / f"{image.stem}.txt", subset / "labels")
    checkpoint = shutil.copy(models_dir / "ppe_base.pt", tmp_path)  # export writes beside the checkpoint
    onnx = YOLO(checkpoint).export(format="onnx", imgsz=320, verbose=False)
    from_pt = evaluate(checkpoint, subset, progress=False)
    from_onnx = evaluate(onnx, subset, progress=False)
    assert from_onnx["imgsz"] == [320, 320] and list(from_onnx["per_class"]) == PPE_NAMES
    # Same weights, same 320×320 letterbox (test_predict.py compares the boxes themselves): equal up to
    # float32 rounding, which may reorder a few near-tied low scores.
    assert from_onnx["map50"] == pytest.approx(from_pt["map50"], abs=1e-3)
    assert from_onnx["map50_95"] == pytest.approx(from_pt["map50_95"], abs=1e-3)
