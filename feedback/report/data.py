"""The cycle report's data: what one improvement cycle did and found, from its summary, the gate's evaluation
reports and the catalog, as one JSON-able dict; the crops it shows are written beside it and named by path.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from edge.protocol import utc_now
from feedback.report.effort import review_effort
from feedback.report.fleet import fleet
from feedback.report.images import ReportImages
from feedback.report.lineage import lineage
from feedback.report.metrics import confusion, curves, headline, per_class, verdict
from feedback.report.mining import mining
from feedback.report.mistakes import worst_mistakes
from feedback.report.picks import picks
from feedback.report.rare import rare_story
from feedback.report.stages import stage_rows, story
from feedback.review.effort import CostModel
from store.labels import catalog_classes
from store.review_history import oracle_answer_folders, review_verdicts_between
from store.settings import Workspace


def cycle_report_data(ws: Workspace, summary: Mapping[str, Any], cycle_dir: Path | str) -> dict[str, Any]:
    """Everything the report shows, in the order a reader wants it: the verdict first, timings last."""
    cycle_dir = Path(cycle_dir)
    images = ReportImages(ws, cycle_dir)
    stages = {s["name"]: s for s in summary.get("stages", [])}
    window = (_time(summary.get("started_at")) or utc_now(), _time(summary.get("finished_at")) or utc_now())
    retrain = stages.get("retrain") or {}
    gate = (retrain.get("result") or {}).get("gate")
    rollout = fleet(ws, stages, window, gate)  # before ours: it opens connections of its own
    with ws.catalog.connect() as con:
        names = catalog_classes(con)
        reviewed = review_verdicts_between(con, window)
        verified = [label for label, _, status in reviewed if status == "verified"]
        effort = review_effort(con, window, CostModel.from_settings(ws.settings.review_seconds))
        pushed = [p["capture"] for p in ((stages.get("review push") or {}).get("result") or {}).get("picks") or []]
        data = {
            "rare": rare_story(con, names, _watched(ws, summary), gate, window, verified, pushed,
                               sorted(oracle_answer_folders(con, verified))),
            "effort": effort.as_dict() if effort else None,
            "written_at": utc_now(),
            "cycle": summary.get("cycle"),
            "workspace": summary.get("workspace"),
            "started_at": summary.get("started_at"),
            "finished_at": summary.get("finished_at"),
            "verdict": verdict(stages, gate),
            "headline": headline(gate),
            "per_class": per_class(gate),
            "curves": curves(cycle_dir / "evaluation", gate),
            "confusion": confusion(gate),
            "mistakes": worst_mistakes(cycle_dir / "evaluation" / "challenger", gate, images),
            "mining": mining(con, stages, window, names, images),
            "selection": picks(con, stages, images),
            "rollout": rollout,
            "lineage": lineage(con, retrain.get("result") or {}, gate),
            "stages": stage_rows(summary),
        }
    if effort is not None:  # the number a site judges review by: the rare class's boxes per hour of people's time
        followed = {r["class"] for r in data["rare"]}
        data["effort"]["per_hour"] = {n: effort.boxes_per_hour(i) for i, n in enumerate(names) if n in followed}
    data["story"] = story(stages, data)
    data["stages_s"] = round(sum(s["seconds"] or 0 for s in data["stages"]), 1)
    started, finished = _time(summary.get("started_at")), _time(summary.get("finished_at"))
    data["wall_s"] = round((finished - started).total_seconds(), 1) if started and finished else data["stages_s"]
    costs = [s["cost_usd"] for s in data["stages"] if s["cost_usd"] is not None]
    data["cost_usd"] = round(sum(costs), 4) if costs else None
    # People's time is the cost that matters (DESIGN decision 11): the review pull is where it was spent.
    for s in data["stages"]:
        s["people_s"] = effort.seconds if effort and s["name"] == "review pull" and s["status"] == "done" else None
    data["people_s"] = effort.seconds if effort else None
    return data


def _watched(ws: Workspace, summary: Mapping[str, Any]) -> list[str]:
    """The classes the cycle watched (its watch_classes) and the workspace's own, in that order."""
    return list(dict.fromkeys([*(summary.get("watch_classes") or []), *ws.settings.watch_classes]))


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value) if value else None
