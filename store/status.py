"""Counts for `edgeloop status`: what the catalog holds and what still waits in the inbox.

Everything returned is plain JSON (str, int, dict), ready to print or serve.
"""

from __future__ import annotations

from typing import Any

from store.catalog import Catalog
from store.inbox import Inbox


def status_counts(catalog: Catalog, inbox: Inbox) -> dict[str, Any]:
    with catalog.connect() as con:

        def counts(sql: str) -> dict[str, int]:
            return {str(key): n for key, n in con.execute(sql).fetchall()}

        heartbeats = con.execute(
            "SELECT device, count(*), max(sent_at) FROM heartbeats GROUP BY device ORDER BY device"
        ).fetchall()
        result = {
            "captures_by_device": counts("SELECT device, count(*) FROM captures GROUP BY 1 ORDER BY 1"),
            "captures_by_trigger": counts("SELECT reason, count(*) FROM triggers GROUP BY 1 ORDER BY 1"),
            # Devices that ship no class names still get a readable row: the class id.
            "detections_by_class": counts(
                "SELECT coalesce(class_name, CAST(class_id AS VARCHAR)), count(*) FROM detections GROUP BY 1 ORDER BY 1"
            ),
            "heartbeats_by_device": {
                device: {"count": n, "latest": latest.isoformat() if latest else None}
                for device, n, latest in heartbeats
            },
            "totals": {
                table: con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("devices", "captures", "detections", "heartbeats")
            },
        }
    result["inbox_backlog"] = inbox.backlog()
    return result
