"""`edgeloop synthetic report`'s content: what was kept and rejected, by reason and by cluster, and contact sheets.

One PNG per (cluster or class, kept/rejected): tiles of the new objects with their boxes, captioned.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from feedback.contact_sheet import write_png
from feedback.embeddings.images import read_image
from store.labels import catalog_classes
from store.settings import Workspace
from store.synthesis import all_runs, count_hard_synthetic, latest_dataset_mix, outcome_images, outcome_reasons

TILE = 128
PER_ROW = 8
MAX_TILES = 48
CAPTION = 28


def _group(cluster_id: str | None, target: int, classes: list[str]) -> str:
    return cluster_id or f"class:{classes[target] if 0 <= target < len(classes) else target}"


def synthesis_summary(ws: Workspace) -> dict[str, Any]:
    """Totals, per-reason and per-cluster counts, each run, and the synthetic share of the newest dataset."""
    with ws.catalog.connect() as con:
        classes = catalog_classes(con)
        runs = all_runs(con)
        outcomes = outcome_reasons(con)
        hard = count_hard_synthetic(con)
        dataset = latest_dataset_mix(con)
    by_reason: Counter[str] = Counter()
    by_cluster: dict[str, dict[str, Any]] = defaultdict(lambda: {"kept": 0, "rejected": Counter()})
    for cluster_id, target, kept, reason in outcomes:
        group = by_cluster[_group(cluster_id, target, classes)]
        if kept:
            group["kept"] += 1
        else:
            group["rejected"][reason] += 1
            by_reason[reason] += 1
    return {
        "kept": sum(g["kept"] for g in by_cluster.values()),
        "rejected": sum(by_reason.values()),
        "rejected_by_reason": dict(by_reason.most_common()),
        "kept_hard": int(hard),
        "by_cluster": {k: {"kept": v["kept"], "rejected": dict(v["rejected"])} for k, v in sorted(by_cluster.items())},
        "runs": [{"id": r[0], "generator": r[1], "cluster": _group(r[2], r[3], classes), "started_at": str(r[4]),
                  "kept": r[5], "rejected": r[6], "cost_usd": r[7], "domain_gap": json.loads(r[8]) if r[8] else None}
                 for r in runs],
        "latest_dataset": None if dataset is None else {
            "version": dataset[0], "n_train": dataset[1], "n_synthetic": dataset[2],
            "synthetic_share": round(dataset[2] / dataset[1], 4) if dataset[1] else 0.0,
            "cap": json.loads(dataset[3]).get("synthetic_cap") if dataset[3] else None},
    }


def _tile(image: np.ndarray | None, box: list[float] | None, caption: str) -> np.ndarray:
    """The box with as much again of context around it (or the whole image), box drawn, caption below."""
    tile = np.full((TILE + 14, TILE, 3), 255, np.uint8)
    if image is not None:
        if box is not None:
            x1, y1, x2, y2 = box
            w, h = x2 - x1, y2 - y1
            left, top = int(max(0, x1 - w)), int(max(0, y1 - h))
            crop = image[top:int(min(image.shape[0], y2 + h)), left:int(min(image.shape[1], x2 + w))].copy()
            cv2.rectangle(crop, (int(x1 - left), int(y1 - top)), (int(x2 - left), int(y2 - top)), (0, 0, 255), 1)
        else:
            crop = image
        scale = TILE / max(crop.shape[:2])
        small = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        tile[: small.shape[0], : small.shape[1]] = small
    cv2.putText(tile, caption[:22], (2, TILE + 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    return tile


def _sheet(tiles: list[np.ndarray], title: str, path: Path) -> Path:
    rows = [np.hstack(tiles[i : i + PER_ROW] + [np.full_like(tiles[0], 255)] * (PER_ROW - len(tiles[i : i + PER_ROW])))
            for i in range(0, len(tiles), PER_ROW)]
    body = np.vstack(rows)
    canvas = np.full((CAPTION + body.shape[0], body.shape[1], 3), 255, np.uint8)
    cv2.putText(canvas, title, (4, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    canvas[CAPTION:] = body
    return write_png(path, canvas)


def _new_box(lineage: dict[str, Any], scale: float = 1.0) -> list[float] | None:
    edits = lineage.get("edits") or []
    if edits and "box" in edits[0]:
        return [v * scale for v in edits[0]["box"]]
    return None


def write_contact_sheets(ws: Workspace, out_dir: Path) -> list[Path]:
    """One sheet of kept and one of rejected images per cluster (or class), the most recent first."""
    with ws.catalog.connect() as con:
        classes = catalog_classes(con)
        rows = outcome_images(con)
    groups: dict[tuple[str, bool], list[np.ndarray]] = defaultdict(list)
    for cluster_id, target, kept, reason, sha, lineage_json in rows:
        key = (_group(cluster_id, target, classes), bool(kept))
        if len(groups[key]) >= MAX_TILES:
            continue
        lineage = json.loads(lineage_json) if lineage_json else {}
        image = read_image(ws, sha) if sha else None
        scale = 1.0
        if image is not None and not kept and lineage.get("frame_size"):
            scale = image.shape[1] / lineage["frame_size"][0]  # rejected images are kept as thumbnails
        verdicts = (lineage.get("filters") or {}).get("champion") or []
        caption = reason if not kept else ("hard" if any(v.get("hard") for v in verdicts) else "kept")
        groups[key].append(_tile(image, _new_box(lineage, scale), caption))
    paths = []
    for (group, kept), tiles in sorted(groups.items()):
        name = f"{group.replace(':', '_').replace('/', '_')}_{'kept' if kept else 'rejected'}.png"
        title = f"{group}: {'kept' if kept else 'rejected'} ({len(tiles)} shown, newest first)"
        paths.append(_sheet(tiles, title, Path(out_dir) / name))
    return paths
