"""The catalog: migrations on open, the cross-process lock, and two real writer processes."""

from __future__ import annotations

import pytest

from store.catalog import Catalog, CatalogLockTimeout, migrations

TABLES = {"devices", "captures", "detections", "triggers", "heartbeats", "schema_migrations"}


def test_migrations_are_applied_once_and_recorded(catalog):
    with catalog.connect() as con:
        first = con.execute("SELECT version, name, applied_at FROM schema_migrations ORDER BY version").fetchall()
        tables = {t for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert [(v, n) for v, n, _ in first] == [(v, n) for v, n, _ in migrations()]
    assert first[0][:2] == (1, "init")
    assert TABLES <= tables

    # Reopening, even from a fresh Catalog object, applies nothing again.
    with Catalog(catalog.path).connect() as con:
        again = con.execute("SELECT version, name, applied_at FROM schema_migrations ORDER BY version").fetchall()
    assert again == first


def test_migrations_are_in_version_order():
    versions = [v for v, _, _ in migrations()]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert versions[0] == 1


def test_a_write_survives_reopening(catalog):
    with catalog.connect() as con:
        con.execute("INSERT INTO triggers VALUES ('c1', 'operator')")
    with catalog.connect() as con:
        assert con.execute("SELECT * FROM triggers").fetchall() == [("c1", "operator")]


def test_lock_timeout_names_the_lock_file(catalog):
    with catalog.connect():
        with pytest.raises(CatalogLockTimeout, match=r"catalog\.duckdb\.lock"):
            with Catalog(catalog.path, lock_timeout_s=0.2).connect():
                pass


WRITER = """
import time
from pathlib import Path
from store.catalog import Catalog

catalog = Catalog(Path(sys.argv[1]))
for i in range(25):
    with catalog.connect() as con:
        con.execute("INSERT INTO triggers VALUES (?, 'operator')", [f"{sys.argv[2]}-{i}"])
        time.sleep(0.002)  # hold the catalog a moment, so the other process must wait
"""


def test_two_processes_write_at_once_and_both_succeed(catalog, run_together):
    run_together(WRITER, [[str(catalog.path), "a"], [str(catalog.path), "b"]])
    with catalog.connect() as con:
        rows = con.execute("SELECT capture_id FROM triggers").fetchall()
    assert sorted(r for (r,) in rows) == sorted(f"{p}-{i}" for p in "ab" for i in range(25))
