"""Failure clusters and their prompts as the cycle report reads them back.

Typed reads over failure_clusters and prompts (written by feedback.mining), so the report writes no SQL of its own.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import duckdb


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
