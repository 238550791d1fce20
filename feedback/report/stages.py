"""The cycle stage by stage: each stage's time, cost and facts, and the one-line story of what went in and what came
out of each; a stage that did not run says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NOT_RUN = "not run in this cycle"


def stage_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for s in summary.get("stages", []):
        result = s.get("result") or {}
        cost = result.get("cost_usd")
        out.append({"name": s["name"], "status": s["status"], "seconds": s.get("seconds"),
                    "cost_usd": float(cost) if isinstance(cost, int | float) else None,
                    "note": result.get("skipped") if s["status"] == "skipped" else _facts(result)})
    return out


def story(stages: Mapping[str, Any], data: Mapping[str, Any]) -> list[dict[str, str]]:
    """The cycle in one line, stage by stage: what went in and what came out ('12 captures in', '6 reviewed,
    30 failures found', ...); a skipped stage says why."""
    def say(stage: Mapping[str, Any]) -> str:
        r = stage.get("result") or {}
        if stage["status"] == "skipped":
            return str(r.get("skipped"))
        match stage["name"]:
            case "ingest":
                return f"{r.get('captures_added', 0)} captures in"
            case "review push":
                return f"{r.get('pushed', 0)} sent for review"
            case "review pull":
                return f"{r.get('verified', 0)} reviewed, {r.get('failures', 0)} failures found"
            case "mine":
                # The stage's own count: the mining section shows only the largest few of them.
                return f"{r.get('clusters', data['mining']['total'])} blind spots"
            case "synthesize":
                mined = data["mining"]
                runs = [x for c in mined["clusters"] for x in c["runs"]] + mined["runs_without_cluster"]
                return (f"{sum(x['kept'] or 0 for x in runs)} synthetic images kept, "
                        f"{sum(x['rejected'] or 0 for x in runs)} rejected")
            case "retrain":
                dataset = (data["lineage"] or {}).get("dataset") or {}
                if not dataset:
                    return f"dataset v{r.get('dataset_version')}"
                return (f"trained on dataset v{dataset['version']} ({dataset['train']} images, "
                        f"{dataset['synthetic']} synthetic): {data['verdict']['state']}")
            case "publish":
                rollout = data["rollout"].get("rollout") or {}
                if rollout.get("state") == "canary" and (rollout.get("canary_pct") or 0) >= 100:
                    return "canary on every device"
                return f"{rollout.get('state', 'published')} on {rollout.get('canary_pct', '?')}%"
        return _facts(r) or "done"

    return [{"stage": s["name"], "status": s["status"], "text": say(s)} for s in stages.values()]


def _facts(result: Mapping[str, Any]) -> str:
    """A stage's scalar results as 'key n' pairs: what it did, in a line."""
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result.items()
                     if isinstance(v, int | float) and not isinstance(v, bool) and k != "cost_usd")


def stage_note(stages: Mapping[str, Any], name: str) -> str | None:
    stage = stages.get(name)
    if stage is None:
        return NOT_RUN
    return (stage.get("result") or {}).get("skipped") if stage["status"] == "skipped" else None

