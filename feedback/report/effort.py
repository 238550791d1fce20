"""People's time as the cycle's cost (DESIGN decision 11): what each review pull stored per task (the diff against
the pre-annotation, and seconds from Label Studio's lead_time or the cost model), summed over the cycle.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import duckdb

from feedback.review.effort import ACTIONS, COST_MODEL, CostModel, skip_effort, task_effort
from feedback.review.effort import DEFAULT_SECONDS as SECONDS  # noqa: F401 - the rates a report states
from store.review_history import label_boxes, review_verdicts_between, shown_detections
from store.review_tasks import task_costs


@dataclass(frozen=True)
class Effort:
    """What review cost in this cycle: captures and boxes by what the reviewer had to do with them, and seconds."""

    captures: int  # verified
    skipped: int
    boxes: int  # verified boxes
    kept: int  # pre-annotated boxes accepted as they were
    fixed: int  # pre-annotated boxes whose class or extent was changed
    added: int  # boxes the reviewer drew: the model had missed them
    deleted: int  # pre-annotated boxes the reviewer removed
    seconds: float
    measured: int = 0  # tasks whose seconds Label Studio measured (lead_time); the rest are the cost model's
    rates: dict[str, float] = field(default_factory=lambda: dict(SECONDS))
    by_class: dict[int, dict[str, int]] = field(default_factory=dict)  # class id -> its box actions

    def boxes_per_hour(self, class_id: int) -> float | None:
        """Verified boxes of one class per hour of people's time spent in this cycle's review."""
        mine = self.by_class.get(class_id, {})
        boxes = mine.get("kept", 0) + mine.get("fixed", 0) + mine.get("added", 0)
        return boxes / (self.seconds / 3600) if self.seconds > 0 else None

    def as_dict(self) -> dict[str, Any]:
        basis = ("diff of the verified labels against the pre-annotation; seconds measured by Label Studio "
                 f"(lead_time) for {self.measured} of {self.captures + self.skipped} tasks, the rest priced by "
                 "the cost model")
        return {**asdict(self), "by_class": {str(k): v for k, v in self.by_class.items()}, "model": COST_MODEL,
                "basis": basis}


def review_effort(con: duckdb.DuckDBPyConnection, window: tuple[datetime, datetime],
                  cost: CostModel | None = None) -> Effort | None:
    """The effort behind the review verdicts stored in `window` (the cycle's review pull); None without any.

    Each task's effort is what its pull stored; a task pulled before effort was stored is diffed here the same way.
    """
    labels = review_verdicts_between(con, window)
    if not labels:
        return None
    cost = cost or CostModel()
    stored = {c.capture_id: c.effort for c in task_costs(con, [label for label, _, _ in labels])}
    totals = dict.fromkeys(ACTIONS, 0)
    by_class: dict[int, dict[str, int]] = {}
    seconds, measured = 0.0, 0
    for label, capture, status in labels:
        effort = stored.get(capture)
        if effort is None:  # resolved before migration 0012
            if status == "verified":
                truth, shown = label_boxes(con, label), shown_detections(con, capture)
                effort = task_effort(truth[:, 1:], truth[:, 0], shown[:, 2:], shown[:, 0], shown[:, 1], cost,
                                     None).as_json()
            else:
                effort = skip_effort(cost, None).as_json()
        seconds += effort["seconds"]
        measured += effort["source"] == "lead_time"
        for action in ACTIONS:
            totals[action] += effort["actions"][action]
        for class_id, actions in effort["by_class"].items():
            mine = by_class.setdefault(int(class_id), dict.fromkeys(ACTIONS, 0))
            for action in ACTIONS:
                mine[action] += actions[action]
    boxes = totals["kept"] + totals["fixed"] + totals["added"]
    return Effort(captures=sum(s == "verified" for *_, s in labels), skipped=sum(s == "skipped" for *_, s in labels),
                  boxes=boxes, **totals, seconds=seconds, measured=measured, rates=dict(cost.seconds),
                  by_class=dict(sorted(by_class.items())))
