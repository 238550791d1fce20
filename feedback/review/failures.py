"""Failure records: a reviewed capture's verified boxes matched to what the deployed model said.

One record per thing the model got wrong; its crop box is what CLIP clustering looks at.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal, get_args

import duckdb
import numpy as np
import supervision as sv
from rich.table import Column, Table

from edge.protocol import utc_now
from store.catalog import Catalog
from store.failures import capture_frame, failed_captures, failure_counts, label_verdict, replace_failures
from store.labels import catalog_classes
from store.review_history import label_boxes, shown_detections

FailureKind = Literal["missed", "spurious", "confusion", "localization"]
KINDS: tuple[FailureKind, ...] = get_args(FailureKind)


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    true_class: int | None  # None for spurious
    predicted_class: int | None  # None for missed
    confidence: float | None  # the prediction's; None for missed
    iou: float | None  # of the matched pair; for spurious, with the object it duplicates (else None); None for missed
    box: tuple[float, float, float, float]  # xyxy px: the true box, or the prediction's if spurious


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of every box in `a` (N, 4 xyxy) with every box in `b` (M, 4 xyxy): supervision's, in float64.

    Degenerate (zero-area) boxes overlap nothing; either side may be empty. The matrix is float32 by supervision's
    contract: a value to store comes from `sv.box_iou` on the pair, in full precision."""
    found = sv.box_iou_batch(np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4))
    return found.astype(np.float64)


def match_failures(
    true_boxes: np.ndarray,
    true_classes: np.ndarray,
    pred_boxes: np.ndarray,
    pred_classes: np.ndarray,
    pred_conf: np.ndarray,
    *,
    iou: float = 0.5,
    localisation_iou: float = 0.1,
) -> list[Failure]:
    """What the model got wrong on one image, as failure records. Boxes are xyxy pixels.

    Every matching pass is one-to-one and greedy: candidate pairs are taken by IoU descending,
    ties by the prediction's confidence descending, then by index, skipping boxes already used.

    1. Same-class pairs with IoU >= `iou` are correct detections and leave no record.
    2. Among the boxes left, pairs with IoU >= `iou` whatever their classes are `confusion`
       (true and predicted class, the prediction's confidence, the IoU; box = the true box).
    3. Among the boxes still left, same-class pairs with `localisation_iou` <= IoU < `iou` (and
       some overlap) are `localization`: the right object, a poor box (box = the true box).
    4. True boxes still unmatched are `missed` (false negatives, box = the true box); predictions
       still unmatched are `spurious` (false positives, box = the predicted box). A spurious prediction that
       lies on a true box of its own class by IoU >= `iou` is a second box on an object already found (a
       duplicate NMS let through): its `iou` is that overlap, so mining can tell it from a phantom object.

    Records come in that order: confusion, localization, missed, spurious, each by box index.
    """
    true_boxes = np.asarray(true_boxes, dtype=np.float64).reshape(-1, 4)
    true_classes = np.asarray(true_classes, dtype=np.int64).reshape(-1)
    pred_boxes = np.asarray(pred_boxes, dtype=np.float64).reshape(-1, 4)
    pred_classes = np.asarray(pred_classes, dtype=np.int64).reshape(-1)
    pred_conf = np.asarray(pred_conf, dtype=np.float64).reshape(-1)
    if not (len(true_boxes) == len(true_classes) and len(pred_boxes) == len(pred_classes) == len(pred_conf)):
        raise ValueError("boxes, classes and confidences must have one entry per box")

    overlap = box_iou(true_boxes, pred_boxes)
    same_class = true_classes[:, None] == pred_classes[None, :]
    true_free = np.ones(len(true_boxes), dtype=bool)
    pred_free = np.ones(len(pred_boxes), dtype=bool)

    def match(allowed: np.ndarray) -> list[tuple[int, int]]:
        allowed = allowed & true_free[:, None] & pred_free[None, :]
        ti, pi = np.nonzero(allowed)
        # lexsort's last key is the primary one: IoU desc, then confidence desc, then indices.
        order = np.lexsort((pi, ti, -pred_conf[pi], -overlap[ti, pi]))
        pairs = []
        for t, p in zip(ti[order].tolist(), pi[order].tolist()):
            if true_free[t] and pred_free[p]:
                true_free[t] = pred_free[p] = False
                pairs.append((t, p))
        return sorted(pairs)

    def paired(kind: FailureKind, t: int, p: int) -> Failure:
        return Failure(kind, int(true_classes[t]), int(pred_classes[p]), float(pred_conf[p]),
                       sv.box_iou(true_boxes[t], pred_boxes[p]), _box(true_boxes[t]))

    match(same_class & (overlap >= iou))  # correct detections: they only use up their boxes
    confusions = [paired("confusion", t, p) for t, p in match(overlap >= iou)]
    poorly_placed = same_class & (overlap >= localisation_iou) & (overlap < iou) & (overlap > 0)
    localizations = [paired("localization", t, p) for t, p in match(poorly_placed)]
    missed = [Failure("missed", int(true_classes[t]), None, None, None, _box(true_boxes[t]))
              for t in np.flatnonzero(true_free)]
    # Step 1 leaves no free same-class pair at `iou`, so such an overlap is with an object already found.
    same_overlap = np.where(same_class, overlap, 0.0)
    on_found = same_overlap.max(axis=0, initial=0.0)
    spurious = [Failure("spurious", None, int(pred_classes[p]), float(pred_conf[p]),
                        sv.box_iou(true_boxes[same_overlap[:, p].argmax()], pred_boxes[p]) if on_found[p] >= iou
                        else None, _box(pred_boxes[p]))
                for p in np.flatnonzero(pred_free)]
    return confusions + localizations + missed + spurious


def _box(row: np.ndarray) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = map(float, row)
    return x1, y1, x2, y2


def record_failures(con: duckdb.DuckDBPyConnection, capture_id: str, label_id: str) -> int:
    """Replace the capture's failure records with those of `label_id` against its uploaded detections.

    Runs in the caller's transaction (it neither begins nor commits), so a review and its
    failures land together. Returns the number of records written.
    """
    capture = capture_frame(con, capture_id)
    if capture is None:
        raise LookupError(f"no capture {capture_id!r} in the catalog")
    label = label_verdict(con, label_id)
    if label is None:
        raise LookupError(f"no label {label_id!r} in the catalog")
    sha256, model_version = capture
    # Matching another image's label, or a skipped one, would invent failures.
    if label[0] != sha256:
        raise ValueError(f"label {label_id!r} is of image {label[0]}, not of capture {capture_id!r} ({sha256})")
    if label[1] != "verified":
        raise ValueError(f"label {label_id!r} is {label[1]}, not verified")

    truth = label_boxes(con, label_id)
    pred = shown_detections(con, capture_id)
    failures = match_failures(truth[:, 1:], truth[:, 0], pred[:, 2:], pred[:, 0], pred[:, 1])
    now = utc_now()
    replace_failures(con, capture_id, [
        (uuid.uuid4().hex, capture_id, label_id, model_version, f.kind, f.true_class, f.predicted_class,
         f.confidence, f.iou, *f.box, now) for f in failures])
    return len(failures)


def failure_summary(catalog: Catalog, *, model_version: str | None = None) -> dict[str, Any]:
    """Failure counts by class and kind, totals and confusion pairs; plain JSON.

    A record counts under its true class, or under the predicted class when spurious.
    `model_version` keeps only that model's records; None counts every model's.
    """
    with catalog.connect() as con:
        names = dict(enumerate(catalog_classes(con)))
        rows = failure_counts(con, model_version)
        captures = failed_captures(con, model_version)

    def name(class_id: int) -> str:
        # Devices may report classes the catalog has not adopted yet: show the id.
        return names.get(class_id, str(class_id))

    by_class_id: dict[int, dict[str, int]] = {}
    confusions: dict[str, int] = {}
    totals = dict.fromkeys(KINDS, 0)
    for kind, true_class, predicted_class, n in rows:
        class_id = predicted_class if kind == "spurious" else true_class
        counts = by_class_id.setdefault(class_id, dict.fromkeys(KINDS, 0))
        counts[kind] += n
        totals[kind] += n
        if kind == "confusion":
            pair = f"{name(true_class)} → {name(predicted_class)}"
            confusions[pair] = confusions.get(pair, 0) + n
    return {
        "model_version": model_version,
        "totals": {**totals, "total": sum(totals.values()), "captures": captures},
        "by_class": {
            name(c): {**counts, "total": sum(counts.values())} for c, counts in sorted(by_class_id.items())
        },
        # Most frequent first: those are the pairs worth a targeted prompt.
        "confusions": dict(sorted(confusions.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def format_failures(summary: dict[str, Any]) -> Table:
    """The summary as a table for `edgeloop failures`: one row per class, totals last."""
    which = summary["model_version"] or "all models"
    table = Table("class", *(Column(k, justify="right") for k in (*KINDS, "total")), title=f"failures ({which})")
    for class_name, counts in summary["by_class"].items():
        table.add_row(class_name, *(str(counts[k]) for k in (*KINDS, "total")))
    totals = summary["totals"]
    table.add_section()
    table.add_row("all", *(str(totals[k]) for k in (*KINDS, "total")), style="bold")
    if summary["confusions"]:
        table.caption = "confusions: " + ", ".join(f"{pair} {n}" for pair, n in summary["confusions"].items())
    return table
