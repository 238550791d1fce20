"""The synthesize stage: images for the largest blind spots, filtered and stored for training only.

Paid generators run under the generation-spend concurrency limit; the work is cached on its inputs, so a
cycle rerun after a later failure does not pay twice.
"""

from __future__ import annotations

from typing import TypedDict

from prefect import flow, task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from feedback.synthesis.batch import cluster_jobs, run_batch
from feedback.synthesis.generators import make_generator
from flows.common import GENERATION_LIMIT, THIS_WORKSPACE, Skipped, limited, open_workspace
from store.clusters import read_clusters
from store.labels import count_images

MAX_CLUSTERS = 5  # the largest blind spots first; the next cycle reaches the rest


class Synthesized(TypedDict):
    generator: str
    clusters: int
    kept: int
    rejected: int
    failed: int
    cost_usd: float
    runs: list[str | None]


def _synthetic(workspace: str | None) -> int:
    with open_workspace(workspace).catalog.connect() as con:
        return count_images(con, "synthetic")


def _targets(workspace: str | None) -> list[str]:
    """Active, non-noise clusters of failures a new image can teach (missed or confused objects), largest first."""
    with open_workspace(workspace).catalog.connect() as con:
        found = [c for c in read_clusters(con, members=False) if not c.noise and c.kind in ("missed", "confusion")]
    return [c.id for c in sorted(found, key=lambda c: -c.size)[:MAX_CLUSTERS]]


@task(name="synthetic-images", cache_policy=INPUTS + TASK_SOURCE + THIS_WORKSPACE, persist_result=True, retries=2,
      retry_delay_seconds=60)
def synthetic_images(workspace: str | None, generator: str, clusters: list[str], count: int, seed: int,
                     max_cost_usd: float | None) -> Synthesized:
    ws = open_workspace(workspace)
    per_cluster = max(1, -(-count // len(clusters)))
    with limited(GENERATION_LIMIT):
        report = run_batch(ws, make_generator(generator, ws), cluster_jobs(ws, clusters, per_cluster, seed,
                                                                            max_cost_usd))
    cost = sum(float(r.get("cost_usd") or 0.0) for r in report.runs)
    return {"generator": generator, "clusters": len(clusters), "kept": report.kept,
            "rejected": sum(sum((r.get("rejected") or {}).values()) for r in report.runs), "failed": report.failed,
            "cost_usd": round(cost, 4), "runs": [r.get("run_id") for r in report.runs]}


@flow(name="synthesize", log_prints=True)
def synthesize_flow(workspace: str | None = None, generator: str | None = "swap", count: int = 100, seed: int = 0,
                    max_cost_usd: float | None = None, new_blind_spots: bool = True) -> Synthesized | Skipped:
    """`count` images spread over the largest blind spots; skipped without a generator or a cluster, and where
    mining found no new blind spot (`new_blind_spots` False) and synthetic images were made already."""
    if not new_blind_spots and _synthetic(workspace):
        return {"skipped": "no new blind spot since the last synthesis"}
    if not generator or count < 1:
        return {"skipped": "no generator or no images asked for"}
    clusters = _targets(workspace)
    if not clusters:
        return {"skipped": "no failure cluster of missed or confused objects"}
    result = synthetic_images(workspace, generator, clusters, count, seed, max_cost_usd)
    print(f"synthesize: {result['kept']} kept, {result['rejected']} rejected over {len(clusters)} clusters")
    return result
