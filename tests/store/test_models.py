"""The model registry's rows: where a model came from, the thresholds beside each verdict, and
catalogs written before those columns existed (migration 0004)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import duckdb

from store.catalog import Catalog, migrations
from store.models import get_model, list_models, record_gate_decision, register_model

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_origin_note_and_gate_thresholds_are_stored(catalog: Catalog) -> None:
    with catalog.connect() as con:
        trained = register_model(con, "a" * 64, classes=["helmet"], imgsz=320, dataset_version=1)
        outside = register_model(con, "b" * 64, classes=["helmet"], imgsz=640, parent_id=trained,
                                 origin="external", note="A100, 300 epochs")
        record_gate_decision(con, challenger_id=outside, champion_id=None, dataset_version=1, promoted=True,
                             reasons=["first"], challenger_metrics={"map50_95": 0.3}, champion_metrics=None,
                             margin=0.01, tolerance=0.03)
        row = con.execute("SELECT margin, tolerance FROM gate_decisions").fetchone()
        assert get_model(con, trained).origin == "trained"  # type: ignore[union-attr]
        m = get_model(con, outside)
    assert row == (0.01, 0.03)
    assert (m.origin, m.note, m.parent_id, m.status, m.metrics) == (  # type: ignore[union-attr]
        "external", "A100, 300 epochs", trained, "champion", {"map50_95": 0.3})


def test_rows_written_before_migration_0004_still_read(catalog: Catalog) -> None:
    # A catalog as the code before 0004 left it: its migrations only, rows inserted positionally.
    con = duckdb.connect(str(catalog.path))
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMPTZ)")
    for version, name, sql in migrations():
        if version < 4:
            con.execute(sql)
            con.execute("INSERT INTO schema_migrations VALUES (?, ?, now())", [version, name])
    for model_id in ("m-trained", "m-fromgate"):
        con.execute("INSERT INTO models VALUES (?, ?, NULL, 1, '[\"helmet\"]', 320, 'candidate', ?, NULL)",
                    [model_id, model_id[2:] * 8, T0])
    con.execute("INSERT INTO training_runs VALUES ('r1', 'm-trained', NULL, 1, 'cpu', '{}', ?, 1.0, 'x')", [T0])
    con.execute("INSERT INTO gate_decisions VALUES ('g1', 'm-trained', NULL, 1, true, '[]', '{}', NULL, ?)", [T0])
    con.close()

    with catalog.connect() as con:
        models = {m.id: m for m in list_models(con)}
        thresholds = con.execute("SELECT margin, tolerance, reasons FROM gate_decisions").fetchall()
    # Only the gate registered .pt files without a training run before 0004.
    assert {k: m.origin for k, m in models.items()} == {"m-trained": "trained", "m-fromgate": "external"}
    assert models["m-trained"].classes == ["helmet"] and models["m-trained"].note is None
    assert [(m, t, json.loads(r)) for m, t, r in thresholds] == [(None, None, [])]  # unknown, not invented
