"""The challenger's worst mistakes on the holdout: its most confident false alarms and its least-seen misses, as
crops of the holdout images, from the evaluation's mistakes.json.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2

from feedback.evaluation.dataset import IMAGE_SUFFIXES, read_labels
from feedback.report.images import GREEN, RED, ReportImages, crop

WORST = 8  # false positives and negatives shown


def _find_image(folder: Path, stem: str) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        if (path := folder / f"{stem}{suffix}").is_file():
            return path
    return None


def worst_mistakes(evaluation: Path, gate: Mapping[str, Any] | None, images: ReportImages) -> dict[str, Any]:
    """The challenger's worst false positives (most confident) and negatives (least seen), as crops."""
    path = evaluation / "mistakes.json"
    if gate is None or not path.is_file():
        return {"status": "no evaluation report in this cycle", "false_positives": [], "false_negatives": []}
    written = json.loads(path.read_text())
    data = Path(gate["challenger_metrics"].get("data") or "")
    out: dict[str, Any] = {"status": None, "definition": written.get("definition"), "model": gate["challenger"]}
    for kind, colour in (("false_positives", RED), ("false_negatives", GREEN)):
        rows = []
        for m in written.get(kind, [])[:WORST]:
            image_path = _find_image(data / "images", m["image_id"])
            frame = cv2.imread(str(image_path)) if image_path else None
            context: list[list[float]] = []
            if frame is not None and kind == "false_positives":
                # The ground truth nearby shows what the false alarm was confused with.
                xyxy, _ = read_labels(data / "labels" / f"{m['image_id']}.txt", frame.shape[1], frame.shape[0])
                context = xyxy.tolist()
            against = None
            if kind == "false_positives":
                against = (f"IoU {m['best_iou']:.2f} with a {m['best_iou_class_name']}"
                           if m.get("best_iou_class_name") else "on background")
            rows.append({
                "image": images.save(crop(frame, m["box"], colour, context), kind[:2]) if frame is not None else None,
                "image_id": m["image_id"], "class": m["class"],
                "score": m.get("score") if kind == "false_positives" else m.get("best_score"),
                "against": against,
            })
        out[kind] = rows
    return out
