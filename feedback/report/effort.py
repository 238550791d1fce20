"""People's time as the cycle's cost (DESIGN decision 11): what reviewers did to each pre-annotated capture, from a
diff of their verified boxes against the boxes they were shown, priced in seconds by a stated cost model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import duckdb
import numpy as np

from feedback.review.failures import match_failures
from store.review_history import label_boxes, review_verdicts_between, shown_detections

# Seconds per reviewer action. Label Studio's measured lead_time is not stored with review tasks yet, so a model
# stands in: checking a box someone else drew is a glance and a click, drawing one is not.
SECONDS = {"kept": 2.0, "deleted": 2.0, "fixed": 7.0, "added": 7.0, "skipped": 2.0}
COST_MODEL = ("2 s to check a pre-annotated box and keep it, or to delete a wrong one (verifying a box takes about "
              "2 s); 7 s to draw a missing box or to fix a wrong one's class or extent (extreme clicking: about 7 s a "
              "box, Papadopoulos et al., ICCV 2017); 2 s to look at a capture and skip it. Pre-annotation: the boxes "
              "the edge model uploaded with the capture, which is what Label Studio shows the reviewer.")


@dataclass(frozen=True)
class Effort:
    """What review cost in this cycle: captures and boxes by what the reviewer had to do with them."""

    captures: int  # verified
    skipped: int
    boxes: int  # verified boxes
    kept: int  # pre-annotated boxes accepted as they were
    fixed: int  # pre-annotated boxes whose class or extent was changed
    added: int  # boxes the reviewer drew: the model had missed them
    deleted: int  # pre-annotated boxes the reviewer removed

    @property
    def seconds(self) -> float:
        return sum(SECONDS[k] * getattr(self, k) for k in SECONDS)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": self.seconds, "rates": dict(SECONDS), "model": COST_MODEL,
                "basis": "diff of the verified labels against the pre-annotation"}


def box_actions(truth: np.ndarray, truth_classes: np.ndarray, shown: np.ndarray, shown_classes: np.ndarray,
                shown_conf: np.ndarray) -> dict[str, int]:
    """One capture's verified boxes against the boxes it was pre-annotated with: kept, fixed, added, deleted.

    The failure matcher's pairing (`match_failures`): a confusion or a poorly placed box is a fix, a missed box
    one the reviewer drew, a spurious one a box they deleted; every other verified box was kept."""
    failures = match_failures(truth, truth_classes, shown, shown_classes, shown_conf)
    kinds = [f.kind for f in failures]
    fixed = kinds.count("confusion") + kinds.count("localization")
    added = kinds.count("missed")
    return {"kept": len(truth) - fixed - added, "fixed": fixed, "added": added, "deleted": kinds.count("spurious")}


def review_effort(con: duckdb.DuckDBPyConnection, window: tuple[datetime, datetime]) -> Effort | None:
    """The effort behind the review verdicts stored in `window` (the cycle's review pull); None without any."""
    labels = review_verdicts_between(con, window)
    if not labels:
        return None
    totals = dict.fromkeys(("kept", "fixed", "added", "deleted"), 0)
    verified = [(label, capture) for label, capture, status in labels if status == "verified"]
    for label, capture in verified:
        truth, shown = label_boxes(con, label), shown_detections(con, capture)
        for key, n in box_actions(truth[:, 1:], truth[:, 0], shown[:, 2:], shown[:, 0], shown[:, 1]).items():
            totals[key] += n
    boxes = totals["kept"] + totals["fixed"] + totals["added"]
    return Effort(captures=len(verified), skipped=sum(s == "skipped" for *_, s in labels), boxes=boxes, **totals)
