"""Failure clusters and their prompts in the catalog: saved with stable ids, read back by the CLI, synthesis, report.

A cluster no longer found is retired, never deleted, so the prompts and images made from it keep their lineage.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb

from edge.protocol import utc_now


@dataclass(frozen=True)
class Cluster:
    id: str
    model_version: str | None
    class_id: int
    kind: str
    noise: bool
    size: int
    embedder: str
    description: dict[str, Any]  # attributes.describe() plus class, neighbour, tags
    medoids: list[str]  # failure ids, nearest the centre first
    params: dict[str, Any]
    members: tuple[str, ...] = field(default=(), repr=False)
    retired: bool = False

    @property
    def class_name(self) -> str:
        return str(self.description.get("class", self.class_id))


@dataclass(frozen=True)
class Prompt:
    id: str
    cluster_id: str
    variant: int
    seed: int
    target_class: int
    confusable_class: int | None
    prompt: str
    negative_prompt: str
    edit_instruction: str
    writer_version: str
    lineage: dict[str, Any]


def active_members(con: duckdb.DuckDBPyConnection, model_version: str | None, class_id: int,
                   kind: str) -> dict[str, set[str]]:
    """The members of every active (not retired, not noise) cluster of one group, by cluster id."""
    rows = con.execute(
        "SELECT c.id, list(m.failure_id) FROM failure_clusters c JOIN failure_cluster_members m ON m.cluster_id = c.id "
        "WHERE c.model_version IS NOT DISTINCT FROM ? AND c.class_id = ? AND c.kind = ? AND NOT c.noise "
        "AND c.retired_at IS NULL GROUP BY c.id", [model_version, class_id, kind]).fetchall()
    return {cid: set(members) for cid, members in rows}


def save_clusters(con: duckdb.DuckDBPyConnection, model_version: str | None, clusters: Sequence[Cluster]) -> int:
    """Make `clusters` the active set of `model_version`'s scope in one transaction: ids found again are
    updated (keeping their creation time), new ones inserted, the scope's other active ones retired.
    Returns how many were retired."""
    now = utc_now()
    con.begin()
    try:
        ids = [c.id for c in clusters]
        retired = con.execute(
            "UPDATE failure_clusters SET retired_at = ? WHERE model_version IS NOT DISTINCT FROM ? "
            "AND retired_at IS NULL AND NOT list_contains(?, id)", [now, model_version, ids]).fetchone()[0]
        if ids:
            con.execute("DELETE FROM failure_cluster_members WHERE list_contains(?, cluster_id)", [ids])
        for c in clusters:
            con.execute(
                """
                INSERT INTO failure_clusters VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)
                ON CONFLICT (id) DO UPDATE SET size = excluded.size, embedder = excluded.embedder,
                    description = excluded.description, medoids = excluded.medoids, params = excluded.params,
                    updated_at = excluded.updated_at, retired_at = NULL
                """,
                [c.id, model_version, c.class_id, c.kind, c.noise, c.size, c.embedder, json.dumps(c.description),
                 json.dumps(c.medoids), json.dumps(c.params), now, now])
        rows = [(c.id, f) for c in clusters for f in c.members]
        if rows:
            con.executemany("INSERT INTO failure_cluster_members VALUES (?, ?)", rows)
        con.commit()
    except BaseException:
        con.rollback()
        raise
    return int(retired)


_CLUSTER_COLUMNS = ("id, model_version, class_id, kind, noise, size, embedder, description, medoids, params, "
                    "retired_at IS NOT NULL")


def read_clusters(con: duckdb.DuckDBPyConnection, *, model_version: str | None = None, any_model: bool = False,
                  cluster_id: str | None = None, members: bool = True) -> list[Cluster]:
    """Active clusters of one scope (`model_version`, None: clustered over every model; `any_model`: all
    scopes), largest first with each group's noise last; or the one `cluster_id`, retired or not."""
    if cluster_id is not None:
        rows = con.execute(f"SELECT {_CLUSTER_COLUMNS} FROM failure_clusters WHERE id = ?", [cluster_id]).fetchall()
    else:
        rows = con.execute(
            f"SELECT {_CLUSTER_COLUMNS} FROM failure_clusters WHERE retired_at IS NULL "
            "AND (? OR model_version IS NOT DISTINCT FROM ?) ORDER BY class_id, kind, noise, size DESC, id",
            [any_model, model_version]).fetchall()
    found = {}
    if members and rows:
        found = dict(con.execute(
            "SELECT cluster_id, list(failure_id ORDER BY failure_id) FROM failure_cluster_members "
            "WHERE list_contains(?, cluster_id) GROUP BY cluster_id", [[r[0] for r in rows]]).fetchall())
    return [Cluster(id=r[0], model_version=r[1], class_id=r[2], kind=r[3], noise=r[4], size=r[5], embedder=r[6],
                    description=json.loads(r[7]), medoids=json.loads(r[8]), params=json.loads(r[9]),
                    members=tuple(found.get(r[0], ())), retired=r[10]) for r in rows]


def save_prompts(con: duckdb.DuckDBPyConnection, prompts: Sequence[Prompt]) -> int:
    """Store prompts; one already stored (same id: same cluster state, variant, seed and writer) stands."""
    if not prompts:
        return 0
    now = utc_now()
    before = con.execute("SELECT count(*) FROM prompts").fetchone()[0]
    con.executemany(
        "INSERT INTO prompts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        [[p.id, p.cluster_id, p.variant, p.seed, p.target_class, p.confusable_class, p.prompt, p.negative_prompt,
          p.edit_instruction, p.writer_version, json.dumps(p.lineage), now] for p in prompts])
    return con.execute("SELECT count(*) FROM prompts").fetchone()[0] - before


def read_prompts(con: duckdb.DuckDBPyConnection, cluster_id: str) -> list[Prompt]:
    rows = con.execute(
        "SELECT id, cluster_id, variant, seed, target_class, confusable_class, prompt, negative_prompt, "
        "edit_instruction, writer_version, lineage FROM prompts WHERE cluster_id = ? ORDER BY created_at, variant, id",
        [cluster_id]).fetchall()
    return [Prompt(*r[:10], lineage=json.loads(r[10])) for r in rows]


def clusters_updated_between(con: duckdb.DuckDBPyConnection, window: tuple[datetime, datetime]) -> int:
    """Blind spots (clusters, not noise) that mining made or changed in `window`."""
    return con.execute("SELECT count(*) FROM failure_clusters WHERE NOT noise AND updated_at BETWEEN ? AND ?",
                       list(window)).fetchone()[0]


def latest_prompts(con: duckdb.DuckDBPyConnection, cluster_id: str, limit: int = 2) -> list[dict[str, Any]]:
    """A cluster's newest prompts: variant, prompt, edit instruction, and the classes the writer had no
    class_phrases for (so named by their class names)."""
    rows = con.execute("SELECT variant, prompt, edit_instruction, lineage FROM prompts WHERE cluster_id = ? "
                       "ORDER BY created_at DESC, variant LIMIT ?", [cluster_id, limit]).fetchall()
    return [{"variant": v, "prompt": p, "edit_instruction": e,
             "unphrased": json.loads(lineage or "{}").get("unphrased") or []} for v, p, e, lineage in rows]


_CLUSTER = "SELECT id, class_id, kind, size, description, medoids, model_version FROM failure_clusters "


@dataclass(frozen=True)
class ClusterRow:
    """A failure cluster as the report shows it: its measured description and medoids (failure ids, nearest first)."""

    id: str
    class_id: int
    kind: str
    size: int
    description: dict[str, Any]
    medoids: list[str]
    model_version: str | None


def _cluster(row: tuple) -> ClusterRow:
    cid, class_id, kind, size, description, medoids, model_version = row
    return ClusterRow(cid, class_id, kind, size, json.loads(description), json.loads(medoids), model_version)


def largest_clusters_between(con: duckdb.DuckDBPyConnection, window: tuple[datetime, datetime], limit: int,
                             ) -> list[ClusterRow]:
    """The `limit` largest clusters (not noise) that mining made or changed in `window`, largest first."""
    rows = con.execute(_CLUSTER + "WHERE NOT noise AND updated_at BETWEEN ? AND ? ORDER BY size DESC, id LIMIT ?",
                       [*window, limit]).fetchall()
    return [_cluster(r) for r in rows]


def clusters_by_id(con: duckdb.DuckDBPyConnection, ids: Sequence[str]) -> list[ClusterRow]:
    """The clusters `ids`, largest first."""
    rows = con.execute(_CLUSTER + "WHERE list_contains(?, id) ORDER BY size DESC, id", [list(ids)]).fetchall()
    return [_cluster(r) for r in rows]
