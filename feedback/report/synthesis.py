"""The synthetic images a cycle made: each synthesis run's counts and cost, why images were refused, and a few kept
and rejected samples with their filter scores; a kept one shows the boxes it was generated with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import cv2
import duckdb
import numpy as np

from feedback.report.images import GREEN, ReportImages, thumbnail
from store.synthesis import latest_label_boxes, outcome_samples, rejection_reasons, synthesis_runs_between

SAMPLES = 4  # kept and rejected synthetic images shown per cluster
# The filter scores a reader weighs a synthetic image by, in this order; the rest stay in the JSON.
SCORE_LABELS = (("champion", "champion"), ("max_cosine", "cosine to nearest real"),
                ("phash_min_hamming", "hash bits from nearest"), ("cluster_cosine", "cosine to cluster"),
                ("cluster_threshold", "cluster needs"), ("n_new", "new boxes"))


def synthesis_runs(con: duckdb.DuckDBPyConnection, window: tuple[datetime, datetime], names: Sequence[str],
                   images: ReportImages) -> list[dict[str, Any]]:
    """The runs started in `window`, oldest first, each with its refusal reasons and samples."""
    runs = []
    for run in synthesis_runs_between(con, window):
        samples: dict[str, list[dict[str, Any]]] = {"kept_samples": [], "rejected_samples": []}
        for is_kept in (True, False):
            for outcome in outcome_samples(con, run.id, is_kept, SAMPLES):
                lineage = outcome.lineage
                frame = images.blob(outcome.image_sha256 if is_kept else outcome.thumb_sha256)
                if frame is not None:
                    frame = _with_new_boxes(con, frame, outcome.image_sha256, lineage.get("new_boxes")) if is_kept \
                        else thumbnail(frame, side=200)
                filters = filter_scores(lineage.get("filters") or {})
                samples["kept_samples" if is_kept else "rejected_samples"].append({
                    "index": outcome.idx, "reason": outcome.reason, "detail": outcome.detail,
                    "image": images.save(frame, "synthetic") if frame is not None else None,
                    "filters": filters,
                    "scores": [[label, _format(filters[key])] for key, label in SCORE_LABELS if key in filters],
                    "prompt": lineage.get("prompt") or lineage.get("edit_instruction")})
        runs.append({"id": run.id, "generator": run.generator, "cluster_id": run.cluster_id,
                     "target": class_name(names, run.target_class), "kept": run.n_kept, "rejected": run.n_rejected,
                     "cost_usd": run.cost_usd, "reasons": rejection_reasons(con, run.id), **samples})
    return runs


def _with_new_boxes(con: duckdb.DuckDBPyConnection, image: np.ndarray, sha: str, new: Sequence[int] | None,
                    ) -> np.ndarray:
    """A kept image's thumbnail with its labelled boxes: the generated ones green, the carried-over ones grey."""
    boxes = latest_label_boxes(con, sha)
    fresh = set(range(len(boxes))) if new is None else {int(i) for i in new}
    out = thumbnail(image, side=200)
    scale = out.shape[1] / image.shape[1]
    for i, b in enumerate(boxes):
        corners = (round(b[0] * scale), round(b[1] * scale)), (round(b[2] * scale), round(b[3] * scale))
        cv2.rectangle(out, *corners, GREEN if i in fresh else (170, 170, 170), 2 if i in fresh else 1)
    return out


def filter_scores(filters: Mapping[str, Any]) -> dict[str, Any]:
    """The filters' scalar scores, the champion's verdicts as words; references to other images are left out."""
    out: dict[str, Any] = {}
    for key, value in filters.items():
        if key.endswith("_nearest") or key == "phash":
            continue
        if key == "champion" and isinstance(value, list):
            out[key] = ", ".join(str(v.get("verdict")) for v in value if isinstance(v, Mapping))
        elif isinstance(value, bool | str | int | float):
            out[key] = value
    return out


def _format(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def class_name(names: Sequence[str], class_id: int | None) -> str | None:
    """A class id as the catalog names it; an id past the catalog's classes as its number."""
    if class_id is None:
        return None
    return names[class_id] if 0 <= class_id < len(names) else str(class_id)
