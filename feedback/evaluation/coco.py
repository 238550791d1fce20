"""COCO-style mAP computed by pycocotools itself, overall and per class (DESIGN decision 6).

Ground truth and detections become COCO json (image id = file stem, category id = class index).
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import supervision as sv
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from feedback.evaluation.dataset import YoloDataset


@dataclass(frozen=True)
class ClassAP:
    map50: float | None  # None: the class has no ground truth, so AP is undefined (COCOeval's -1)
    map50_95: float | None
    # Interpolated precision at RECALL_POINTS, IoU 0.5 (AP@0.5 is its mean); None: no ground truth.
    precision50: tuple[float, ...] | None = None


RECALL_POINTS = tuple(round(0.01 * i, 2) for i in range(101))  # COCOeval's recThrs


@dataclass(frozen=True)
class CocoMetrics:
    map50: float | None  # COCOeval stats[1]: mean over classes that have ground truth
    map50_95: float | None  # stats[0]
    per_class: tuple[ClassAP, ...]  # indexed by class id


def coco_ground_truth(dataset: YoloDataset) -> dict[str, Any]:
    images, annotations = [], []
    for image in dataset.images:
        images.append(
            {"id": image.image_id, "file_name": image.path.name, "width": image.width, "height": image.height}
        )
        for (x1, y1, x2, y2), cls in zip(image.truth.xyxy.tolist(), image.truth.class_id.tolist()):
            w, h = x2 - x1, y2 - y1
            # Ids start at 1: COCOeval records a match as the gt id, and 0 reads as "unmatched".
            annotations.append({
                "id": len(annotations) + 1, "image_id": image.image_id, "category_id": int(cls),
                "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0,
            })  # fmt: skip
    categories = [{"id": i, "name": name} for i, name in enumerate(dataset.names)]
    return {"info": {}, "images": images, "annotations": annotations, "categories": categories}


def coco_results(predictions: Mapping[str, sv.Detections]) -> list[dict[str, Any]]:
    """The COCO results list, rounded as written to disk, so the file and our numbers agree exactly."""
    results = []
    for image_id in sorted(predictions):
        detections = predictions[image_id]
        for (x1, y1, x2, y2), score, cls in zip(
            detections.xyxy.tolist(), detections.confidence.tolist(), detections.class_id.tolist()
        ):
            bbox = [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]
            results.append({"image_id": image_id, "category_id": int(cls), "bbox": bbox, "score": round(score, 5)})
    return results


def coco_map(ground_truth: dict[str, Any], results: Sequence[dict[str, Any]]) -> CocoMetrics:
    """pycocotools' bbox evaluation; per class from eval['precision'] exactly as summarize() averages it."""
    # pycocotools prints progress on stdout, which would corrupt a CLI's JSON output.
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(ground_truth)
        coco_gt.createIndex()
        coco_dt = _load_results(coco_gt, results)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    params = evaluator.params
    # precision is [iou thresholds T, recall points R, categories K, area ranges A, max dets M].
    precision = evaluator.eval["precision"][:, :, :, params.areaRngLbl.index("all"), params.maxDets.index(100)]
    at50 = int(np.flatnonzero(np.isclose(params.iouThrs, 0.5))[0])
    by_category = {cat: k for k, cat in enumerate(params.catIds)}
    per_class = []
    for cls in range(len(ground_truth["categories"])):
        k = by_category[cls]
        curve = precision[at50, :, k]
        per_class.append(ClassAP(map50=_mean_valid(curve), map50_95=_mean_valid(precision[:, :, k]),
                                 precision50=tuple(curve.tolist()) if (curve > -1).all() else None))
    stats = evaluator.stats
    return CocoMetrics(map50=_valid(stats[1]), map50_95=_valid(stats[0]), per_class=tuple(per_class))


def _load_results(coco_gt: COCO, results: Sequence[dict[str, Any]]) -> COCO:
    if results:
        return coco_gt.loadRes(copy.deepcopy(list(results)))  # loadRes writes ids and areas into what it is given
    # loadRes cannot take an empty list (it inspects the first result): an empty result set, built directly.
    coco_dt = COCO()
    gt = coco_gt.dataset
    coco_dt.dataset = {"images": list(gt["images"]), "categories": gt["categories"], "annotations": []}
    coco_dt.createIndex()
    return coco_dt


def _mean_valid(values: np.ndarray) -> float | None:
    """Mean of the entries COCOeval filled in; -1 marks 'no ground truth here', as in summarize()."""
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else None


def _valid(stat: float) -> float | None:
    return None if stat == -1 else float(stat)
