"""What an operator reads after an evaluation: the metrics table, the confusion matrix, galleries.

Drawn with matplotlib's bundled font and OpenCV's Hershey fonts, so nothing is ever downloaded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from feedback.evaluation.coco import RECALL_POINTS, CocoMetrics
from feedback.evaluation.dataset import YoloDataset
from feedback.evaluation.operating_point import Box, Confidence, FalseNegative, FalsePositive, OperatingPoint

TABLE_COLUMNS = ("mAP@0.5", "mAP@0.5:0.95", "Precision", "Recall", "Instances")
_METRIC_KEYS = ("map50", "map50_95", "precision", "recall")
_TILE = 200  # pixels a crop is scaled into
_CAPTION = 46  # three lines of Hershey text under each tile
_COLUMNS = 5
_RED, _GREEN, _WHITE, _BLACK = (40, 40, 230), (60, 200, 60), (255, 255, 255), (0, 0, 0)


def format_table(result: Mapping[str, Any]) -> str:
    """`class  mAP@0.5  mAP@0.5:0.95  Precision  Recall  Instances`, an `all` row, then one row per class.

    Class names are right-aligned (as ultralytics prints them) so the header reads exactly as above.
    """
    per_class = result["per_class"]
    rows = [("all", result, sum(int(c["instances"]) for c in per_class.values()))]
    rows += [(name, metrics, int(metrics["instances"])) for name, metrics in per_class.items()]
    width = max(len("class"), *(len(name) for name, _, _ in rows))
    lines = ["  ".join(["class".rjust(width), *TABLE_COLUMNS])]
    for name, metrics, instances in rows:
        cells = [_number(metrics[key]).rjust(len(col)) for key, col in zip(_METRIC_KEYS, TABLE_COLUMNS)]
        lines.append("  ".join([name.rjust(width), *cells, str(instances).rjust(len(TABLE_COLUMNS[-1]))]))
    return "\n".join(lines) + "\n"


def write_report(
    directory: Path, result: Mapping[str, Any], dataset: YoloDataset, point: OperatingPoint, *, worst: int = 10,
    coco: CocoMetrics | None = None,
) -> dict[str, Path]:
    """Writes table.txt, confusion_matrix.{png,json}, the galleries, mistakes.json and, given `coco`,
    pr_curves.json; returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "table": directory / "table.txt",
        "confusion_matrix_png": directory / "confusion_matrix.png",
        "confusion_matrix_json": directory / "confusion_matrix.json",
        "false_positives_png": directory / "false_positives.png",
        "false_negatives_png": directory / "false_negatives.png",
        "mistakes_json": directory / "mistakes.json",
    }
    paths["table"].write_text(format_table(result))
    labels = [*dataset.names, "background"]
    paths["confusion_matrix_json"].write_text(json.dumps(confusion_json(point, dataset.names), indent=2) + "\n")
    plot_confusion_matrix(point.confusion, labels, paths["confusion_matrix_png"])
    images = {image.image_id: image for image in dataset.images}
    fps, fns = point.false_positives[:worst], point.false_negatives[:worst]
    tiles = [_fp_tile(fp, images[fp.image_id].path, images[fp.image_id].truth.xyxy, dataset.names) for fp in fps]
    _write_grid(paths["false_positives_png"], tiles, "no false positives")
    tiles = [_fn_tile(fn, images[fn.image_id].path, dataset.names) for fn in fns]
    _write_grid(paths["false_negatives_png"], tiles, "no false negatives")
    mistakes = {
        "false_positives": [_named(fp.__dict__, dataset.names) for fp in fps],
        "false_negatives": [_named(fn.__dict__, dataset.names) for fn in fns],
        "definition": "false positives by score, highest first; false negatives by the best score of any "
        "same-class prediction overlapping them at the IoU threshold, lowest first (0: never seen)",
    }
    paths["mistakes_json"].write_text(json.dumps(mistakes, indent=2) + "\n")
    if coco is not None:
        paths["pr_curves_json"] = directory / "pr_curves.json"
        paths["pr_curves_json"].write_text(json.dumps(pr_curves_json(coco, dataset.names)) + "\n")
    return paths


def pr_curves_json(coco: CocoMetrics, names: Sequence[str]) -> dict[str, Any]:
    """pycocotools' own precision-recall curves at IoU 0.5, one per class (null: no ground truth)."""
    return {
        "iou": 0.5,
        "recall": list(RECALL_POINTS),
        "definition": "interpolated precision (the best at this recall or beyond) at COCO's 101 recall points; "
        "0 past the highest recall reached; AP@0.5 is its mean",
        "precision": {name: None if ap.precision50 is None else [round(p, 5) for p in ap.precision50]
                      for name, ap in zip(names, coco.per_class, strict=True)},
    }


def confusion_json(point: OperatingPoint, names: Sequence[str]) -> dict[str, Any]:
    return {
        "labels": [*names, "background"],
        "rows": "predicted",
        "columns": "true",
        "confidence": _thresholds_by_name(point.confidence, names),
        "iou": point.iou,
        "matrix": point.confusion.tolist(),
    }


def _thresholds_by_name(confidence: Confidence, names: Sequence[str]) -> float | dict[str, float]:
    """JSON keys are strings: per-class thresholds are shown by class name."""
    if isinstance(confidence, Mapping):
        return {names[c]: t for c, t in sorted(confidence.items())}
    return confidence


def plot_confusion_matrix(matrix: np.ndarray, labels: Sequence[str], path: Path) -> None:
    """Counts in every cell; colour is the share of each true class (column), so rare classes show."""
    totals = matrix.sum(axis=0, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    size = 2.0 + 0.9 * len(labels)
    # A bare Figure with the Agg canvas: no pyplot, so no global backend switch and no GUI.
    fig = Figure(figsize=(size, size * 0.9))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(labels))
    ax.set_xticks(ticks, labels, rotation=45, ha="right")
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    for (row, col), count in np.ndenumerate(matrix):
        if count:
            colour = "white" if shares[row, col] > 0.5 else "black"
            ax.text(col, row, str(count), ha="center", va="center", color=colour)
    ax.set_title("confusion matrix (colour: share of the true class)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _fp_tile(fp: FalsePositive, image_path: Path, truth: np.ndarray, names: Sequence[str]) -> np.ndarray:
    if fp.best_iou_class is None:
        against = "on background"
    else:
        against = f"IoU {fp.best_iou:.2f} vs {names[fp.best_iou_class]}"
    caption = [f"{names[fp.class_id]} {fp.score:.2f}", against, fp.image_id]
    # The ground truth nearby (green) shows what the false alarm was confused with.
    return _tile(image_path, fp.box, _RED, caption, context=[tuple(b) for b in truth.tolist()])


def _fn_tile(fn: FalseNegative, image_path: Path, names: Sequence[str]) -> np.ndarray:
    caption = [f"missed {names[fn.class_id]}", f"best score {fn.best_score:.3f}", fn.image_id]
    return _tile(image_path, fn.box, _GREEN, caption, context=[])


def _tile(
    image_path: Path, box: Box, colour: tuple[int, int, int], caption: Sequence[str], context: Sequence[Box]
) -> np.ndarray:
    image = cv2.imread(str(image_path))
    tile = np.full((_TILE + _CAPTION, _TILE, 3), 255, np.uint8)
    if image is None:
        caption = [*caption[:2], "image unreadable"]
    else:
        height, width = image.shape[:2]
        x1, y1, x2, y2 = box
        # Half the box again on every side (at least 24 px) so there is context to judge by.
        pad = max(24.0, 0.5 * max(x2 - x1, y2 - y1))
        cx1, cy1 = int(max(0, x1 - pad)), int(max(0, y1 - pad))
        cx2, cy2 = int(min(width, x2 + pad)), int(min(height, y2 + pad))
        crop = image[cy1:cy2, cx1:cx2]
        if crop.size:
            scale = _TILE / max(crop.shape[:2])
            crop = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))))
            tile[: crop.shape[0], : crop.shape[1]] = crop

            def to_tile(b: Box) -> tuple[tuple[int, int], tuple[int, int]]:
                left, top, right, bottom = (round((v - o) * scale) for v, o in zip(b, (cx1, cy1, cx1, cy1)))
                return (left, top), (right, bottom)

            for other in context:
                cv2.rectangle(tile[:_TILE], *to_tile(other), _GREEN, 1)
            cv2.rectangle(tile[:_TILE], *to_tile(box), colour, 2)
    for line, text in enumerate(caption):
        cv2.putText(tile, text[:30], (4, _TILE + 13 + 14 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.4, _BLACK, 1, cv2.LINE_AA)
    return tile


def _write_grid(path: Path, tiles: Sequence[np.ndarray], empty: str) -> None:
    if not tiles:
        blank = np.full((60, 2 * _TILE, 3), 255, np.uint8)
        cv2.putText(blank, empty, (8, 36), cv2.FONT_HERSHEY_SIMPLEX, 0.6, _BLACK, 1, cv2.LINE_AA)
        tiles = [blank]
    rows = -(-len(tiles) // _COLUMNS)
    cols = min(len(tiles), _COLUMNS)
    gap = 4
    tile_h, tile_w = tiles[0].shape[:2]
    grid = np.full((rows * (tile_h + gap) + gap, cols * (tile_w + gap) + gap, 3), 128, np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, _COLUMNS)
        y, x = gap + r * (tile_h + gap), gap + c * (tile_w + gap)
        grid[y : y + tile_h, x : x + tile_w] = tile
    if not cv2.imwrite(str(path), grid):
        raise OSError(f"could not write {path}")


def _named(fields: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """A mistake as JSON, with class names beside the ids."""
    out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in fields.items()}
    out["class"] = names[out["class_id"]]
    if out.get("best_iou_class") is not None:
        out["best_iou_class_name"] = names[out["best_iou_class"]]
    return out


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
