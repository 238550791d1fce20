"""What synthesis needs of a failure cluster (issue 12's `feedback.mining`): target, neighbour, look, prompts, members.

Read through `store.clusters`; the cluster's description becomes the request's attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from store.clusters import read_clusters, read_prompts
from store.settings import Workspace

# Kinds whose cluster asks for more of a real object; spurious and localisation clusters need other remedies.
SYNTHESISABLE = ("missed", "confusion")


class ClusterError(LookupError):
    """No such cluster, or one synthesis cannot serve; the message says which and why."""


@dataclass(frozen=True)
class ClusterSpec:
    id: str
    target_class: int
    kind: str
    confusable_class: int | None
    attributes: dict[str, Any]
    failure_ids: tuple[str, ...]
    prompts: tuple[dict[str, Any], ...] = field(default=())  # prompt, negative_prompt, edit_instruction, id


def _fixed(description: dict[str, Any], name: str) -> str | None:
    entry = (description.get("bins") or {}).get(name) or {}
    return entry.get("value") if entry.get("fixed") else None


def attributes_of(description: dict[str, Any]) -> dict[str, Any]:
    """The look keys `feedback.synthesis.compose.look` reads, from what mining measured; the description rides along."""
    medians = description.get("medians") or {}
    out: dict[str, Any] = {"description": description}
    if (lighting := _fixed(description, "lighting")) in ("dark", "bright"):
        out["brightness"] = lighting
    if _fixed(description, "focus") == "blurry":
        out["blur"] = "blurry"
    if isinstance(medians.get("rel_size"), int | float):
        out["rel_size"] = float(medians["rel_size"])
    if (position := _fixed(description, "position")) in ("edge", "centre"):
        out["position"] = position
    return out


def load_cluster(ws: Workspace, cluster_id: str) -> ClusterSpec:
    """The cluster `cluster_id` with its prompts; ClusterError if there is none or synthesis cannot serve it."""
    with ws.catalog.connect() as con:
        found = read_clusters(con, cluster_id=cluster_id)
        prompts = read_prompts(con, cluster_id) if found else []
    if not found:
        raise ClusterError(f"no failure cluster {cluster_id!r} (see `edgeloop clusters`)")
    cluster = found[0]
    if cluster.kind not in SYNTHESISABLE:
        raise ClusterError(f"cluster {cluster_id} is a {cluster.kind} cluster; synthesis makes more of missed or "
                           "confused objects only")
    neighbour = (cluster.description.get("neighbour") or {}).get("class_id")
    confusable = next((p.confusable_class for p in prompts if p.confusable_class is not None), neighbour)
    return ClusterSpec(
        id=cluster.id, target_class=int(cluster.class_id), kind=cluster.kind,
        confusable_class=None if confusable is None else int(confusable),
        attributes=attributes_of(cluster.description), failure_ids=tuple(cluster.members),
        prompts=tuple({"id": p.id, "prompt": p.prompt, "negative_prompt": p.negative_prompt,
                       "edit_instruction": p.edit_instruction} for p in prompts),
    )


def active_cluster_ids(ws: Workspace) -> list[str]:
    """Every active, non-noise cluster synthesis can serve, in mining's order."""
    with ws.catalog.connect() as con:
        return [c.id for c in read_clusters(con, any_model=True, members=False)
                if not c.noise and c.kind in SYNTHESISABLE]
