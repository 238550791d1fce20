"""The report's headline: the rare class's story. How often the site sees it at the operating point before and
after, what review bought for it against a random pick of as many captures, and what synthesis added for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from feedback.review.oracle import label_file
from feedback.review.probe import RARE_SHARE, rare_classes
from store.review_history import capture_sources, class_boxes, first_pushed_at
from store.review_tasks import candidates_loaded_by, verified_counts
from store.synthesis import synthetic_kept_between

MAX_CLASSES = 3  # the headline tells the rarest few; the per-class table has every class
LOW_RECALL = 0.5  # below it, most of the class still goes unseen where the device decides
GLOBAL_CONF = 0.25  # what a model without thresholds of its own detects at


def story_classes(counts: Mapping[int, int], names: Sequence[str], watched: Sequence[str]) -> list[tuple[int, str]]:
    """(class id, why it is told) for the headline: watched classes first, then the rare ones by verified box
    count (as selection counts them, rarest first); the rarest class when no class is either."""
    ids = {n: i for i, n in enumerate(names)}
    watch = [ids[n] for n in dict.fromkeys(watched) if n in ids]
    rare = [c for c in rare_classes(counts, watch) if c < len(names)]
    top = max(counts, key=lambda c: counts[c], default=None)
    told = watch + sorted((c for c in rare if c not in watch), key=lambda c: (counts.get(c, 0), c))
    if not told and counts:
        rarest = min(counts, key=lambda c: (counts[c], c))
        return [(rarest, f"the rarest class: {counts[rarest]} verified boxes")] if rarest < len(names) else []
    out = []
    for c in told[:MAX_CLASSES]:
        if c in watch:
            out.append((c, "watched: the site alerts on it"))
        else:
            out.append((c, f"rare: {counts.get(c, 0)} verified boxes, under {RARE_SHARE:.0%} of "
                           f"{names[top]}'s {counts[top]}" if top is not None else "rare"))
    return out


def operating_point(gate: Mapping[str, Any] | None, name: str) -> dict[str, Any] | None:
    """The class before (champion, at its threshold) and after (challenger, at its own), from the gate's
    metrics exactly as it judged them; None when no model was judged in this cycle."""
    if gate is None:
        return None
    new = gate["challenger_metrics"]["per_class"].get(name) or {}
    champion = gate.get("champion_metrics")
    old = (champion or {}).get("per_class", {}).get(name) if champion else None

    def pair(key: str, default: float | None = None) -> dict[str, Any]:
        after = new.get(key, default) if new else None
        before = None if old is None else old.get(key, default)
        delta = None if after is None or before is None else after - before
        return {"challenger": after, "champion": before, "delta": delta}

    recall = pair("recall")
    return {"instances": new.get("instances"), "ap50": pair("map50"), "recall": recall,
            "precision": pair("precision"), "threshold": pair("threshold", GLOBAL_CONF),
            "false_negatives": new.get("false_negatives"), "has_champion": old is not None,
            # AP ranks every score; the device acts only above the threshold, so a better AP can still leave
            # the class unseen there: say so.
            "low_recall": recall["challenger"] is not None and recall["challenger"] < LOW_RECALL}


def review_pool(con: duckdb.DuckDBPyConnection, pushed: Sequence[str]) -> list[str]:
    """The captures this cycle's push chose among: those it picked, and those still waiting for review that were
    in the catalog when it pushed (later uploads were not on offer)."""
    at = first_pushed_at(con, pushed)
    waiting = candidates_loaded_by(con, at) if at is not None else []
    return list(dict.fromkeys([*pushed, *waiting]))


def random_expectation(con: duckdb.DuckDBPyConnection, pool: Sequence[str], reviewed: int, folders: Sequence[str],
                       class_ids: Sequence[int]) -> dict[int, float] | None:
    """Boxes of each class that `reviewed` captures drawn at random from `pool` would hold on average: the share
    per capture over the whole pool, which needs every pooled capture's truth. Only the oracle (benchmarks, the
    demo) has it, in its answer files; None otherwise, or when a pooled capture has no answer file."""
    if not pool or not folders or reviewed <= 0:
        return None
    rows = capture_sources(con, pool)
    totals = dict.fromkeys(class_ids, 0)
    for capture, uri, frame in rows:
        path = next((p for f in folders if (p := label_file(Path(f), uri or capture, frame)).is_file()), None)
        if path is None:
            return None
        for line in path.read_text().splitlines():
            first = line.split()[:1]
            if first and int(float(first[0])) in totals:
                totals[int(float(first[0]))] += 1
    return {c: n / len(rows) * reviewed for c, n in totals.items()} if rows else None


def rare_story(con: duckdb.DuckDBPyConnection, names: Sequence[str], watched: Sequence[str],
               gate: Mapping[str, Any] | None, window: tuple[datetime, datetime], labels: Sequence[str],
               pushed: Sequence[str], folders: Sequence[str]) -> list[dict[str, Any]]:
    """One entry per class the headline tells (`story_classes`): its operating point before and after, the
    boxes of it this cycle's review bought (`labels`: the verified ones) against random's expectation, and the
    synthetic images kept for it."""
    told = story_classes(verified_counts(con), names, watched)
    if not told:
        return []
    pool = review_pool(con, pushed) if pushed else []
    expected = random_expectation(con, pool, len(labels), folders, [c for c, _ in told]) if labels else None
    out = []
    for class_id, why in told:
        name = names[class_id]
        out.append({
            "class": name, "why": why, "metrics": operating_point(gate, name),
            "review": {"captures": len(labels), "boxes": class_boxes(con, labels, class_id) if labels else 0,
                       "random": None if expected is None else round(expected[class_id], 1),
                       "pool": len(pool) if expected is not None else None},
            "synthetic_kept": synthetic_kept_between(con, class_id, window),
        })
    return out
