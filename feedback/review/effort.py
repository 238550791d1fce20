"""People's seconds as review's currency: what a reviewer did to the pre-annotation a task showed, and its cost.

Seconds come from Label Studio's `lead_time` where it measured one, else from the cost model (settings).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from feedback.review.failures import match_failures

ACTIONS = ("kept", "fixed", "added", "deleted")
# The cost model's defaults and where they come from; `review_seconds` in settings overrides any of them.
DEFAULT_SECONDS = {"kept": 2.0, "deleted": 2.0, "fixed": 7.0, "added": 7.0, "skipped": 2.0}
COST_MODEL = ("2 s to check a pre-annotated box and keep it, or to delete a wrong one (verifying a box takes about "
              "2 s, Papadopoulos et al., CVPR 2016); 7 s to draw a missing box or to fix a wrong one's class or "
              "extent (extreme clicking: about 7 s a box, Papadopoulos et al., ICCV 2017); 2 s to look at a capture "
              "and skip it. Pre-annotation: the boxes the edge model uploaded with the capture, which is what Label "
              "Studio shows the reviewer.")

Source = Literal["lead_time", "cost_model"]


@dataclass(frozen=True)
class CostModel:
    """Seconds per reviewer action: `kept`, `deleted`, `fixed`, `added` (per box) and `skipped` (per capture)."""

    seconds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SECONDS))

    @classmethod
    def from_settings(cls, overrides: dict[str, float] | None) -> CostModel:
        unknown = set(overrides or {}) - set(DEFAULT_SECONDS)
        if unknown:
            raise ValueError(f"review_seconds: unknown action(s) {sorted(unknown)}; "
                             f"use {', '.join(DEFAULT_SECONDS)}")
        return cls({**DEFAULT_SECONDS, **(overrides or {})})

    def price(self, actions: dict[str, int]) -> float:
        return float(sum(self.seconds[a] * n for a, n in actions.items()))


@dataclass(frozen=True)
class TaskEffort:
    """One finished task: the reviewer's actions on the shown boxes, per class, and the seconds they took."""

    actions: dict[str, int]  # kept, fixed, added, deleted
    by_class: dict[int, dict[str, int]]  # class id -> its actions (a fix counts for the class it ended as)
    seconds: float
    source: Source
    modelled_s: float  # the cost model's price for the same actions, kept beside a measured lead_time

    def as_json(self) -> dict[str, Any]:
        return {"actions": self.actions, "by_class": {str(k): v for k, v in self.by_class.items()},
                "seconds": self.seconds, "source": self.source, "modelled_s": self.modelled_s}


def box_actions(truth: np.ndarray, truth_classes: np.ndarray, shown: np.ndarray, shown_classes: np.ndarray,
                shown_conf: np.ndarray) -> tuple[dict[str, int], dict[int, dict[str, int]]]:
    """A capture's verified boxes against the boxes it was pre-annotated with: kept, fixed, added, deleted,
    in all and per class.

    The failure matcher's pairing (`match_failures`): a confusion or a poorly placed box is a fix, a missed box
    one the reviewer drew, a spurious one a box they deleted; every other verified box was kept."""
    by_class: dict[int, dict[str, int]] = {}

    def count(class_id: int | None, action: str, n: int = 1) -> None:
        by_class.setdefault(int(class_id), dict.fromkeys(ACTIONS, 0))[action] += n  # type: ignore[arg-type]

    for f in match_failures(truth, truth_classes, shown, shown_classes, shown_conf):
        if f.kind == "spurious":
            count(f.predicted_class, "deleted")
        else:  # missed: drawn; confusion, localization: fixed; either way one of the verified boxes
            count(f.true_class, "added" if f.kind == "missed" else "fixed")
    for class_id, n in zip(*np.unique(np.asarray(truth_classes, np.int64), return_counts=True)):
        done = by_class.get(int(class_id), {})
        count(int(class_id), "kept", int(n) - done.get("fixed", 0) - done.get("added", 0))
    totals = {a: sum(c[a] for c in by_class.values()) for a in ACTIONS}
    return totals, dict(sorted(by_class.items()))


def task_effort(truth: np.ndarray, truth_classes: np.ndarray, shown: np.ndarray, shown_classes: np.ndarray,
                shown_conf: np.ndarray, cost: CostModel, lead_time_s: float | None) -> TaskEffort:
    """A verified task's effort: Label Studio's measured `lead_time` where there is one, else the cost model."""
    actions, by_class = box_actions(truth, truth_classes, shown, shown_classes, shown_conf)
    modelled = cost.price(actions)
    if lead_time_s is not None and lead_time_s > 0:
        return TaskEffort(actions, by_class, float(lead_time_s), "lead_time", modelled)
    return TaskEffort(actions, by_class, modelled, "cost_model", modelled)


def skip_effort(cost: CostModel, lead_time_s: float | None) -> TaskEffort:
    """A skipped task: a look at the capture, measured or modelled."""
    modelled = cost.seconds["skipped"]
    measured = lead_time_s is not None and lead_time_s > 0
    return TaskEffort(dict.fromkeys(ACTIONS, 0), {}, float(lead_time_s) if measured else modelled,
                      "lead_time" if measured else "cost_model", modelled)


def class_seconds(effort: dict[str, Any], cost: CostModel) -> dict[int, float]:
    """A stored task effort's seconds shared out to classes by what the cost model says each class's actions cost
    (a measured lead_time keeps its total, split in the same proportions)."""
    priced = {int(k): cost.price(v) for k, v in effort["by_class"].items()}
    total = sum(priced.values())
    return {k: effort["seconds"] * v / total for k, v in priced.items()} if total > 0 else {}


def summarise(efforts: Sequence[dict[str, Any]], names: Sequence[str], cost: CostModel) -> dict[str, Any]:
    """Tasks' stored efforts in all and per class: seconds, verified boxes, and boxes per annotator-hour (the
    number a site judges review by, for its rare class)."""
    seconds = sum(e["seconds"] for e in efforts)
    by_class: dict[str, dict[str, float]] = {}
    for effort in efforts:
        shares = class_seconds(effort, cost)
        for class_id, actions in effort["by_class"].items():
            name = names[int(class_id)] if int(class_id) < len(names) else str(class_id)
            row = by_class.setdefault(name, {"boxes": 0, "seconds": 0.0})
            row["boxes"] += actions["kept"] + actions["fixed"] + actions["added"]
            row["seconds"] += shares.get(int(class_id), 0.0)
    hours = seconds / 3600
    for row in by_class.values():
        row["seconds"] = round(row["seconds"], 1)
        row["boxes_per_hour"] = round(row["boxes"] / hours, 1) if hours > 0 else None
    return {"tasks": len(efforts), "seconds": round(seconds, 1),
            "measured_tasks": sum(e["source"] == "lead_time" for e in efforts), "by_class": dict(sorted(by_class.items()))}


def expected_seconds(shown: np.ndarray, doubt: np.ndarray, seen: np.ndarray, cost: CostModel) -> np.ndarray:
    """What a capture's review should cost, predicted before anyone looks: a glance, a check of every box the task
    shows, a fix for each one the model doubted (summed 1 - confidence), and a drawn box for each object the
    champion's scan sees beyond those shown (its summed confidence minus the shown boxes' own)."""
    s = cost.seconds
    missing = np.maximum(0.0, seen - (shown - doubt))
    return s["skipped"] + shown * s["kept"] + doubt * (s["fixed"] - s["kept"]) + missing * s["added"]
