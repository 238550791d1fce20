"""What review push picked in a cycle: each pick's priority and the parts it was made of, why it was picked in
words, and what the review then found on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import duckdb

from feedback.report.images import ReportImages, thumbnail
from feedback.report.stages import NOT_RUN
from feedback.review.selection import WEIGHTS
from store.failures import failure_kinds
from store.review_history import pushed_tasks, shown_detections

MAX_PICKS = 12


def picks(con: duckdb.DuckDBPyConnection, stages: Mapping[str, Any], images: ReportImages) -> dict[str, Any]:
    """What review push picked in this cycle, each pick's score parts (as recorded with its review task) and
    what the review then found on it."""
    push = stages.get("review push")
    if push is None or push["status"] != "done":
        return {"status": (push or {}).get("result", {}).get("skipped") or NOT_RUN, "picks": []}
    result = push["result"]
    order = [p["capture"] for p in result.get("picks") or []]
    tasks = pushed_tasks(con, order)
    found = failure_kinds(con, order)
    shown = _top_by_score(result.get("picks") or [], MAX_PICKS)
    rows, part_names = [], list(WEIGHTS)
    for rank, capture in enumerate(order, 1):
        if capture not in tasks or capture not in shown:
            continue
        task = tasks[capture]
        part_names += [k for k in task.parts if k not in part_names]
        boxes = shown_detections(con, capture)[:, 2:]
        frame = images.blob(task.sha256)
        rows.append({"rank": rank, "capture": capture, "score": task.score, "parts": task.parts,
                     "status": task.status, "why": _why(task.parts, WEIGHTS), "failures": found.get(capture, {}),
                     "image": images.save(thumbnail(frame, boxes, side=180), "pick") if frame is not None else None})
    everywhere_zero = _zero_parts(result.get("picks") or [])
    return {"status": None, "strategy": result.get("strategy"), "pushed": result.get("pushed"),
            "already_pushed": result.get("already_pushed"), "embedder": result.get("embedder"),
            "total_picks": len(order), "weights": dict(WEIGHTS),
            # A part that is 0 on every pick chose nothing: named once, not shown as a column of zeros.
            "parts": [p for p in part_names
                      if any(p in pick["parts"] for pick in rows) and p not in everywhere_zero],
            "zero_parts": [p for p in part_names if p in everywhere_zero],
            "picks": rows}  # in pick order (rank); the table shows them by score


def _top_by_score(picks: Sequence[Mapping[str, Any]], keep: int) -> set[str]:
    """The `keep` picks of highest score (earlier picks first on ties): the ones the table shows."""
    ranked = sorted(enumerate(picks), key=lambda ip: (-(ip[1].get("score") or 0.0), ip[0]))
    return {p["capture"] for _, p in ranked[:keep]}


def _zero_parts(picks: Sequence[Mapping[str, Any]]) -> set[str]:
    """Score parts recorded on every pick and 0 on each."""
    recorded = [set(p.get("parts") or {}) for p in picks]
    common = set.intersection(*recorded) if recorded else set()
    return {k for k in common if all(not (p["parts"].get(k) or 0.0) for p in picks)}


def _why(parts: Mapping[str, float], weights: Mapping[str, float]) -> str:
    """The parts that made most of the priority (weight x value), an operator's flag first; novelty has a column."""
    contributions = sorted(((weights[k] * v, k) for k, v in parts.items() if k in weights and v > 0), reverse=True)
    total = sum(c for c, _ in contributions)
    words = [f"{k.replace('_', ' ')} {c / total:.0%}" for c, k in contributions[:2]] if total > 0 else []
    if parts.get("operator"):
        words.insert(0, "flagged by an operator")
    return ", ".join(words) or ("no priority: novelty only" if "diversity" in parts else "random sample")
