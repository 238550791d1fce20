"""The mine stage: group verified failures into the model's blind spots and write prompts for each.

Skipped when every failure already sits in an active cluster (nothing new was reviewed wrong).
"""

from __future__ import annotations

from typing import TypedDict

from prefect import flow, task

from feedback.embeddings.choice import default_embedder
from feedback.mining.mine import mine_clusters
from feedback.mining.prompts import Phrasebook, write_prompts
from flows.common import CATALOG_LIMIT, Skipped, limited, open_workspace
from store.clusters import read_clusters, save_prompts
from store.failures import unclustered_failures


def _unclustered(workspace: str | None) -> int:
    with open_workspace(workspace).catalog.connect() as con:
        return unclustered_failures(con)


# "class" is a keyword: the functional form keeps the JSON key the report reads.
Blindspot = TypedDict("Blindspot", {"id": str, "class": str, "kind": str, "noise": bool, "size": int})


class Mined(TypedDict):
    new_failures: int
    clusters: int
    noise_buckets: int
    prompts: int
    largest: list[Blindspot]


@task(name="failure-clusters", retries=1)
def failure_clusters(workspace: str | None, seed: int) -> list[Blindspot]:
    ws = open_workspace(workspace)
    with limited(CATALOG_LIMIT):
        found = mine_clusters(ws, default_embedder(ws), seed=seed, progress=False)
    return [{"id": c.id, "class": c.class_name, "kind": c.kind, "noise": c.noise, "size": c.size} for c in found]


@task(name="prompts")
def prompts(workspace: str | None, variants: int, seed: int) -> int:
    ws = open_workspace(workspace)
    with ws.catalog.connect() as con:
        chosen = [c for c in read_clusters(con) if not c.noise]
    book = Phrasebook.from_settings(ws.settings)
    written = [p for c in chosen for p in write_prompts(c, book, variants=variants, seed=seed)]
    with ws.catalog.connect() as con:
        save_prompts(con, written)
    return len(written)


@flow(name="mine", log_prints=True)
def mine_flow(workspace: str | None = None, variants: int = 4, seed: int = 0) -> Mined | Skipped:
    """Failure clusters (stable ids across reruns) and their prompts and edit instructions."""
    if not (new := _unclustered(workspace)):
        return {"skipped": "every failure is already in a cluster"}
    found = failure_clusters(workspace, seed)
    written = prompts(workspace, variants, seed)
    blind_spots = [c for c in found if not c["noise"]]
    print(f"mine: {new} new failures; {len(blind_spots)} clusters, {written} prompts")
    return {"new_failures": new, "clusters": len(blind_spots), "noise_buckets": len(found) - len(blind_spots),
            "prompts": written, "largest": blind_spots[:5]}
