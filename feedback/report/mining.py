"""The blind spots a cycle found: failure clusters mining touched (and any synthesised for), each with its shared
traits, medoid crops, newest prompts and the synthesis runs made for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import duckdb

from feedback.report.images import RED, ReportImages, crop
from feedback.report.stages import stage_note
from feedback.report.synthesis import class_name, synthesis_runs
from store.clusters import clusters_by_id, clusters_updated_between, largest_clusters_between, latest_prompts
from store.failures import failure_boxes

MAX_CLUSTERS = 6


def mining(con: duckdb.DuckDBPyConnection, stages: Mapping[str, Any], window: tuple[datetime, datetime],
           names: Sequence[str], images: ReportImages) -> dict[str, Any]:
    """Failure clusters touched in this cycle, each with medoid crops, prompts and the synthetic images made for it."""
    out: dict[str, Any] = {"mine": stage_note(stages, "mine"), "synthesize": stage_note(stages, "synthesize"),
                           "clusters": [], "runs_without_cluster": [], "total": clusters_updated_between(con, window)}
    runs = synthesis_runs(con, window, names, images)
    clusters = largest_clusters_between(con, window, MAX_CLUSTERS)
    shown = {c.id for c in clusters}
    # A cluster synthesised for in this cycle is shown even when mining did not touch it.
    extra = [r["cluster_id"] for r in runs if r["cluster_id"] and r["cluster_id"] not in shown]
    if extra:
        clusters += clusters_by_id(con, extra)
    for cluster in clusters:
        out["clusters"].append({
            "id": cluster.id, "class": class_name(names, cluster.class_id), "kind": cluster.kind,
            "size": cluster.size, "model": cluster.model_version, "traits": _traits(cluster.description),
            "medoids": _medoid_crops(con, cluster.medoids[:3], images),
            "prompts": latest_prompts(con, cluster.id),
            "runs": [r for r in runs if r["cluster_id"] == cluster.id],
        })
    out["runs_without_cluster"] = [r for r in runs if not r["cluster_id"]]
    return out


def _traits(description: Mapping[str, Any]) -> list[str]:
    """What most members share, in words: 'lighting dark 80%', 'confused with no_helmet 60%'."""
    words = [f"{k} {v['value']} {v['share']:.0%}" for k, v in (description.get("bins") or {}).items()
             if isinstance(v, Mapping) and v.get("fixed") and v.get("value") is not None]
    words += [f"colour {c['name']} {c['share']:.0%}" for c in description.get("colours") or []]
    for key, value in description.items():
        if key in {"bins", "medians", "colours", "class", "tags", "neighbour"} or not isinstance(value, Mapping):
            continue
        if value.get("fixed") and value.get("value") is not None:
            words.append(f"{key.replace('_', ' ')} {value['value']} {value['share']:.0%}")
    neighbour = description.get("neighbour")
    if isinstance(neighbour, Mapping) and neighbour.get("class") is not None:
        words.append(f"looks like {neighbour['class']}")
    return words


def _medoid_crops(con: duckdb.DuckDBPyConnection, failure_ids: Sequence[str], images: ReportImages) -> list[dict]:
    by_id = failure_boxes(con, failure_ids)
    out = []
    for fid in failure_ids:
        if fid not in by_id:
            continue
        failure = by_id[fid]
        frame = images.blob(failure.sha256)
        out.append({"failure": fid, "kind": failure.kind,
                    "image": images.save(crop(frame, failure.box, RED), "medoid") if frame is not None else None})
    return out
