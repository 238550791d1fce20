"""Review tasks and the candidates they are chosen from: captures no person has been asked about yet.

Selection, the cycle's skip check and the report's review pool all use this one rule.
"""

from __future__ import annotations

from datetime import datetime

import duckdb

# Candidates: captures whose image has no review task and no verified label (one capture per image).
CANDIDATES_SQL = """
    WITH excluded AS (
        SELECT c.sha256 FROM review_tasks r JOIN captures c ON c.id = r.capture_id
        UNION SELECT image_sha256 FROM labels WHERE status = 'verified'
    )
    SELECT id, sha256 FROM captures WHERE sha256 NOT IN (SELECT sha256 FROM excluded)
    QUALIFY row_number() OVER (PARTITION BY sha256 ORDER BY captured_at, id) = 1
"""


def count_candidates(con: duckdb.DuckDBPyConnection) -> int:
    return con.execute(f"SELECT count(*) FROM ({CANDIDATES_SQL})").fetchall()[0][0]


def candidates_loaded_by(con: duckdb.DuckDBPyConnection, at: datetime) -> list[str]:
    """Ids of the candidates that were in the catalog at `at` (later uploads were not on offer then)."""
    return [c for (c,) in con.execute(
        f"SELECT k.id FROM ({CANDIDATES_SQL}) k JOIN captures c ON c.id = k.id WHERE c.loaded_at <= ? ORDER BY k.id",
        [at]).fetchall()]


def unscanned_candidates(con: duckdb.DuckDBPyConnection, model: str) -> list[tuple[str, str]]:
    """(capture id, image sha256) of each candidate `model` has not scanned for boxes yet."""
    return con.execute(
        f"SELECT c.id, c.sha256 FROM ({CANDIDATES_SQL}) c WHERE NOT EXISTS (SELECT 1 FROM box_scans s "
        "WHERE s.capture_id = c.id AND s.model = ?) ORDER BY c.id", [model]).fetchall()


def count_pushed(con: duckdb.DuckDBPyConnection) -> int:
    """Review tasks sent to people and not yet answered."""
    return con.execute("SELECT count(*) FROM review_tasks WHERE status = 'pushed'").fetchall()[0][0]
