"""The DuckDB catalog: short-lived connections under a cross-process lock, migrated on open.

DuckDB lets one process at a time open a file for writing, so every process takes the lock first.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path

import duckdb
import filelock

_MIGRATION_NAME = re.compile(r"(\d{4})_(\w+)\.sql")


class CatalogLockTimeout(TimeoutError):
    """Another process held the catalog lock for longer than we were willing to wait."""


@functools.cache
def migrations() -> tuple[tuple[int, str, str], ...]:
    """(version, name, sql) of every packaged migration, in version order."""
    found = []
    for f in (files("store") / "migrations").iterdir():
        if m := _MIGRATION_NAME.fullmatch(f.name):
            found.append((int(m[1]), m[2], f.read_text(encoding="utf-8")))
    return tuple(sorted(found))


class Catalog:
    def __init__(self, path: Path, lock_timeout_s: float = 120) -> None:
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s
        # One lock object per catalog: re-entrant within a thread, exclusive across
        # threads (thread_local) and processes (an OS file lock).
        self._lock = filelock.FileLock(str(self.path) + ".lock", timeout=lock_timeout_s)

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Hold the catalog for the length of a `with` block; keep the block short."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise CatalogLockTimeout(
                f"could not lock the catalog within {self.lock_timeout_s:g}s: "
                f"another process holds {self._lock.lock_file}"
            ) from None
        try:
            con = duckdb.connect(str(self.path))
            try:
                # Timestamps come back in UTC whatever the host's zone, so output is stable.
                con.execute("SET TimeZone = 'UTC'")
                _migrate(con)
                yield con
            finally:
                con.close()
        finally:
            self._lock.release()


def workspace_identity(con: duckdb.DuckDBPyConnection) -> str:
    """The id the catalog was made with (migration 0010): it changes when a workspace is made again."""
    return con.execute("SELECT id FROM workspace_identity").fetchone()[0]


def _migrate(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations"
        " (version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMPTZ)"
    )
    applied = {v for (v,) in con.execute("SELECT version FROM schema_migrations").fetchall()}
    for version, name, sql in migrations():
        if version in applied:
            continue
        con.begin()
        try:
            con.execute(sql)
            con.execute("INSERT INTO schema_migrations VALUES (?, ?, now())", [version, name])
            con.commit()
        except BaseException:
            con.rollback()
            raise
