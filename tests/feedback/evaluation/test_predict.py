"""predict.py (a .pt through ultralytics) against the edge's own ONNX Runtime detector on the export.

The gate scores checkpoints; devices run their ONNX export. Both must see the same boxes on an image,
whatever other images it is predicted with. Tolerance: PyTorch and ONNX Runtime round float32
differently, so scores may differ by 1e-4 and box corners by 0.05 px; classes must be equal.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import supervision as sv
from PIL import Image

from edge.detectors.onnx_runtime import OnnxDetector
from feedback.evaluation.predict import VAL_CONF, VAL_MAX_DET, VAL_NMS_IOU, load_detector, predict_images

SCORE_TOL, BOX_TOL_PX = 1e-4, 0.05
COMPARED_FROM = 0.01  # scores this low and up; lower ones sit at VAL_CONF's edge, where rounding decides


def ppe_images(ppe_dir: Path, group: str) -> list[Path]:
    paths = sorted((ppe_dir / "val" / "images").glob("*.jpg"))
    if group == "mixed sizes":
        return paths[:4]
    if group == "alone":
        return paths[:1]
    sizes = {p: Image.open(p).size for p in paths}
    common = max(set(sizes.values()), key=list(sizes.values()).count)
    return [p for p in paths if sizes[p] == common][:4]  # as a fixed camera's holdout would be


def unmatched(source: sv.Detections, target: sv.Detections) -> list[tuple[int, float, list[float]]]:
    """Detections of `source` scoring COMPARED_FROM or more with no partner in `target` (one-to-one)."""
    free = np.ones(len(target), bool)
    missing = []
    for i in np.argsort(-source.confidence, kind="stable"):
        if source.confidence[i] < COMPARED_FROM:
            break
        near = (
            free
            & (target.class_id == source.class_id[i])
            & (np.abs(target.confidence - source.confidence[i]) <= SCORE_TOL)
            & (np.abs(target.xyxy - source.xyxy[i]).max(axis=1) <= BOX_TOL_PX)
        )
        if near.any():
            free[np.flatnonzero(near)[0]] = False
        else:
            missing.append((int(source.class_id[i]), float(source.confidence[i]), source.xyxy[i].round(1).tolist()))
    return missing


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the export's tracing notes, not ours
@pytest.mark.parametrize("group", ["mixed sizes", "one size", "alone"])
def test_predict_gives_the_boxes_onnx_runtime_gives_on_the_export(
    ppe_dir: Path, ppe_pt: Path, ppe_onnx: Path, group: str
) -> None:
    paths = ppe_images(ppe_dir, group)
    predicted, imgsz = predict_images(load_detector(ppe_pt), paths, progress=False)
    edge = OnnxDetector(ppe_onnx, conf=VAL_CONF, iou=VAL_NMS_IOU, max_det=VAL_MAX_DET,
                        providers=["CPUExecutionProvider"])  # fmt: skip
    assert imgsz == edge.input_size == (320, 320)
    assert sorted(predicted) == [p.stem for p in paths]
    confident = 0
    for path in paths:
        mine, theirs = predicted[path.stem], edge.detect(cv2.imread(str(path)))
        confident += int((theirs.confidence >= 0.25).sum())
        assert unmatched(theirs, mine) == [], f"{path.name}: ONNX Runtime boxes predict.py lacks"
        assert unmatched(mine, theirs) == [], f"{path.name}: predict.py boxes ONNX Runtime lacks"
    assert confident > 0  # the comparison covers real detections, not only noise
