"""Captures as uploaded by the devices: which frame of which source each one is.

Writes happen in `store.inbox` (the bulk load); these are reads by frame.
"""

from __future__ import annotations

import duckdb


def source_frames(con: duckdb.DuckDBPyConnection, *, verified_only: bool = False) -> list[str]:
    """The source frame of every capture, or of those whose review task a person verified."""
    if verified_only:
        sql = ("SELECT c.source_frame FROM review_tasks t JOIN captures c ON c.id = t.capture_id "
               "WHERE t.status = 'verified'")
    else:
        sql = "SELECT source_frame FROM captures"
    return [f for (f,) in con.execute(sql).fetchall()]
