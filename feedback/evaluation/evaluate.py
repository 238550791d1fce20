"""`edgeloop eval`: a model (.pt/.onnx) on a labelled YOLO folder, to the metrics JSON the gate reads.

mAP is pycocotools' own; precision/recall are at the deployed operating point (IoU 0.5): each class's own
threshold where the model has them, else one confidence (0.25).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import supervision as sv

from feedback.evaluation.artifacts import confusion_json, format_table, write_report
from feedback.evaluation.coco import coco_ground_truth, coco_map, coco_results
from feedback.evaluation.dataset import YoloDataset, load_dataset, read_names
from feedback.evaluation.operating_point import operating_point
from feedback.evaluation.predict import load_detector, predict_images
from feedback.evaluation.thresholds import by_class_id

__all__ = ["evaluate", "evaluate_predictions", "format_table", "resolve_names"]

log = logging.getLogger(__name__)


def evaluate(
    model_path: Path | str,
    data_dir: Path | str,
    *,
    names: Sequence[str] | None = None,
    conf: float = 0.25,
    iou: float = 0.5,
    thresholds: Mapping[str, float] | None = None,
    report_dir: Path | str | None = None,
    coco_predictions: Path | str | None = None,
    batch: int = 16,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict over DATA_DIR/images and score against DATA_DIR/labels.

    Class names: `names` if given, else DATA_DIR/data.yaml, else the model's own. conf/iou are the
    operating point for precision, recall and the confusion matrix; `thresholds` (class name -> confidence)
    replace `conf` for the classes they name. mAP never depends on them.
    """
    started = time.perf_counter()
    detector = load_detector(Path(model_path))
    class_names = resolve_names(names, read_names(Path(data_dir)), detector.names)
    dataset = load_dataset(Path(data_dir), class_names)
    predictions, imgsz = predict_images(
        detector, [image.path for image in dataset.images], batch=batch, device=device, progress=progress
    )
    predicted = time.perf_counter()
    result = evaluate_predictions(dataset, predictions, conf=conf, iou=iou, thresholds=thresholds,
                                  report_dir=report_dir, coco_predictions=coco_predictions)
    result.update(
        model=str(model_path),
        data=str(data_dir),
        imgsz=list(imgsz),
        seconds={"predict": round(predicted - started, 2), "total": round(time.perf_counter() - started, 2)},
    )
    return result


def evaluate_predictions(
    dataset: YoloDataset,
    predictions: Mapping[str, sv.Detections],
    *,
    conf: float = 0.25,
    iou: float = 0.5,
    thresholds: Mapping[str, float] | None = None,
    report_dir: Path | str | None = None,
    coco_predictions: Path | str | None = None,
) -> dict[str, Any]:
    """Score predictions (image stem -> detections with confidence, at mAP's low threshold) made anywhere."""
    results = coco_results(predictions)
    if coco_predictions is not None:
        path = Path(coco_predictions)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, separators=(",", ":")))
    coco = coco_map(coco_ground_truth(dataset), results)
    truths = {image.image_id: image.truth for image in dataset.images}
    own = by_class_id(thresholds, dataset.names)
    confidence = {c: own.get(c, conf) for c in range(len(dataset.names))} if own else conf
    point = operating_point(truths, predictions, len(dataset.names), confidence=confidence, iou=iou)
    per_class = {}
    for cls, name in enumerate(dataset.names):
        per_class[name] = {
            "map50": coco.per_class[cls].map50,
            "map50_95": coco.per_class[cls].map50_95,
            "threshold": own.get(cls, conf),  # the confidence its precision and recall below are at
            "precision": point.class_precision(cls),
            "recall": point.class_recall(cls),
            "instances": int(point.instances[cls]),
            "true_positives": int(point.true_positives[cls]),
            "false_positives": int(point.predicted[cls] - point.true_positives[cls]),
            "false_negatives": int(point.instances[cls] - point.true_positives[cls]),
        }
    result: dict[str, Any] = {
        "map50": coco.map50,
        "map50_95": coco.map50_95,
        "precision": point.precision,
        "recall": point.recall,
        "per_class": per_class,
        # `confidence` holds for the classes without a threshold of their own.
        "operating_point": {"confidence": conf, "iou": iou,
                            **({"thresholds": {dataset.names[c]: t for c, t in sorted(own.items())}} if own else {})},
        "images": len(dataset.images),
        "instances": int(point.instances.sum()),
        "confusion_matrix": confusion_json(point, dataset.names),
    }
    if report_dir is not None:
        write_report(Path(report_dir), result, dataset, point, coco=coco)
    return result


def resolve_names(
    given: Sequence[str] | None, from_data: Sequence[str] | None, from_model: Sequence[str]
) -> tuple[str, ...]:
    """The first of given / data.yaml / model names; refuses a class count the model does not have."""
    names = tuple(given or from_data or from_model)
    if len(names) != len(from_model):
        raise ValueError(
            f"the data has {len(names)} classes {list(names)}, the model {len(from_model)} {list(from_model)}"
        )
    if names != tuple(from_model):
        # Classes are matched by index; different names usually mean a different class order.
        log.warning("data class names %s differ from the model's %s; matching by index", list(names), list(from_model))
    return names
