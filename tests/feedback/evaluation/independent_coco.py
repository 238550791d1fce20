"""pycocotools run by the tests themselves, apart from the code under test, as the reference."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def coco_stats(gt: dict[str, Any], predictions: Path, category: int | None = None) -> list[float]:
    """COCOeval's 12 summary numbers (stats[0] mAP@0.5:0.95, stats[1] mAP@0.5), for one category if given."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(str(predictions)), "bbox")
        if category is not None:
            evaluator.params.catIds = [category]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [float(s) for s in evaluator.stats]
