"""The model registry: every trained model, its lineage, training runs and gate decisions.

A model's weights live in the blob store; its id is derived from their sha256.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from edge.protocol import utc_now


@dataclass(frozen=True)
class ModelRecord:
    id: str
    weights_sha256: str
    parent_id: str | None
    dataset_version: int | None
    classes: list[str]
    imgsz: int
    status: str
    created_at: datetime
    metrics: dict[str, Any] | None
    origin: str | None = None  # trained (here) | external (registered); see migration 0004
    note: str | None = None
    thresholds: dict[str, float] | None = None  # class name -> its operating confidence; None: one global


_COLUMNS = ("id, weights_sha256, parent_id, dataset_version, classes, imgsz, status, created_at, metrics, origin, note, "
            "thresholds")


def model_id_for(weights_sha256: str) -> str:
    return f"m-{weights_sha256[:12]}"


def register_model(
    con: duckdb.DuckDBPyConnection, weights_sha256: str, *, classes: list[str], imgsz: int,
    parent_id: str | None = None, dataset_version: int | None = None, origin: str = "trained",
    note: str | None = None, thresholds: dict[str, float] | None = None,
) -> str:
    """Add a candidate (idempotent: the same weights are the same model, whatever came with them later)."""
    model_id = model_id_for(weights_sha256)
    con.execute(
        f"INSERT INTO models ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, 'candidate', ?, NULL, ?, ?, ?) ON CONFLICT DO NOTHING",
        [model_id, weights_sha256, parent_id, dataset_version, json.dumps(classes), imgsz, utc_now(), origin, note,
         json.dumps(thresholds) if thresholds else None],
    )
    return model_id


def set_thresholds(con: duckdb.DuckDBPyConnection, model_id: str, thresholds: dict[str, float] | None) -> None:
    """A model's per-class operating points (class name -> confidence), chosen after it was registered."""
    con.execute("UPDATE models SET thresholds = ? WHERE id = ?",
                [json.dumps(thresholds) if thresholds else None, model_id])


def _record(row: tuple) -> ModelRecord:
    return ModelRecord(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5], row[6], row[7],
                       json.loads(row[8]) if row[8] else None, row[9], row[10],
                       json.loads(row[11]) if row[11] else None)


def get_model(con: duckdb.DuckDBPyConnection, model_id: str) -> ModelRecord | None:
    row = con.execute(f"SELECT {_COLUMNS} FROM models WHERE id = ?", [model_id]).fetchone()
    return _record(row) if row else None


def champion(con: duckdb.DuckDBPyConnection) -> ModelRecord | None:
    row = con.execute(f"SELECT {_COLUMNS} FROM models WHERE status = 'champion'").fetchone()
    return _record(row) if row else None


def list_models(con: duckdb.DuckDBPyConnection) -> list[ModelRecord]:
    return [_record(r) for r in con.execute(f"SELECT {_COLUMNS} FROM models ORDER BY created_at").fetchall()]


def trained_on(con: duckdb.DuckDBPyConnection, dataset_version: int) -> str | None:
    """The model most recently trained on a dataset version, if any."""
    row = con.execute("SELECT model_id FROM training_runs WHERE dataset_version = ? ORDER BY started_at DESC LIMIT 1",
                      [dataset_version]).fetchall()
    return row[0][0] if row else None


def record_training_run(
    con: duckdb.DuckDBPyConnection, *, model_id: str, parent_id: str | None, dataset_version: int, profile: str,
    params: dict[str, Any], started_at: datetime, duration_s: float, weights_sha256: str,
) -> str:
    run_id = uuid.uuid4().hex
    con.execute(
        "INSERT INTO training_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [run_id, model_id, parent_id, dataset_version, profile, json.dumps(params, default=str), started_at,
         duration_s, weights_sha256],
    )
    return run_id


def record_gate_decision(
    con: duckdb.DuckDBPyConnection, *, challenger_id: str, champion_id: str | None, dataset_version: int | None,
    promoted: bool, reasons: list[str], challenger_metrics: dict, champion_metrics: dict | None,
    margin: float, tolerance: float,
) -> str:
    """Store the verdict and, if promoted, make the challenger the one champion (caller's transaction)."""
    decision_id = uuid.uuid4().hex
    con.execute(
        "INSERT INTO gate_decisions (id, challenger_id, champion_id, dataset_version, promoted, reasons, "
        "challenger_metrics, champion_metrics, decided_at, margin, tolerance) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [decision_id, challenger_id, champion_id, dataset_version, promoted, json.dumps(reasons),
         json.dumps(challenger_metrics), json.dumps(champion_metrics) if champion_metrics else None, utc_now(),
         margin, tolerance],
    )
    con.execute("UPDATE models SET metrics = ? WHERE id = ?", [json.dumps(challenger_metrics), challenger_id])
    if promoted:
        con.execute("UPDATE models SET status = 'retired' WHERE status = 'champion' AND id <> ?", [challenger_id])
        con.execute("UPDATE models SET status = 'champion' WHERE id = ?", [challenger_id])
    else:
        con.execute("UPDATE models SET status = 'rejected' WHERE id = ? AND status = 'candidate'", [challenger_id])
    return decision_id


@dataclass(frozen=True)
class TrainingRun:
    profile: str
    params: dict[str, Any]
    started_at: datetime
    duration_s: float
    dataset_version: int


@dataclass(frozen=True)
class DatasetCounts:
    version: int
    n_train: int
    n_holdout: int
    n_synthetic: int
    created_at: datetime


def latest_training_run(con: duckdb.DuckDBPyConnection, model_id: str) -> TrainingRun | None:
    """The newest run that trained `model_id`; None for a model registered from outside."""
    row = con.execute("SELECT profile, params, started_at, duration_s, dataset_version FROM training_runs "
                      "WHERE model_id = ? ORDER BY started_at DESC LIMIT 1", [model_id]).fetchone()
    return None if row is None else TrainingRun(row[0], json.loads(row[1]), *row[2:])


def dataset_counts(con: duckdb.DuckDBPyConnection, version: int) -> DatasetCounts | None:
    """How many images a dataset version holds in each part."""
    row = con.execute("SELECT version, n_train, n_holdout, n_synthetic, created_at FROM datasets WHERE version = ?",
                      [version]).fetchone()
    return None if row is None else DatasetCounts(*row)
