"""Where a cycle's new model came from: its ancestors, the training run that made it and the dataset it saw,
from the model registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import duckdb

from store.models import dataset_counts, get_model, latest_training_run

ANCESTORS = 5  # the chain shows the model and this many before it


def lineage(con: duckdb.DuckDBPyConnection, retrain: Mapping[str, Any], gate: Mapping[str, Any] | None,
            ) -> dict[str, Any] | None:
    """The new model, its ancestors up to five back, the run that trained it and the data it saw."""
    model = (retrain.get("trained") or {}).get("model") or (gate or {}).get("challenger")
    if model is None:
        return None
    chain, seen = [], set()
    current: str | None = model
    while current and current not in seen and len(chain) < ANCESTORS + 1:
        seen.add(current)
        record = get_model(con, current)
        if record is None:
            break
        chain.append({"id": record.id, "parent": record.parent_id, "dataset_version": record.dataset_version,
                      "status": record.status, "origin": record.origin, "note": record.note,
                      "created_at": record.created_at})
        current = record.parent_id
    run = latest_training_run(con, model)
    training = None if run is None else {
        "profile": run.profile, "started_at": run.started_at, "duration_s": run.duration_s,
        "dataset_version": run.dataset_version,
        "params": {k: v for k, v in run.params.items() if isinstance(v, str | int | float | bool)}}
    version = (training or {}).get("dataset_version") or retrain.get("dataset_version")
    dataset = dataset_counts(con, version) if version is not None else None
    return {"model": model, "chain": chain, "training": training,
            "dataset": None if dataset is None else {"version": dataset.version, "train": dataset.n_train,
                                                     "holdout": dataset.n_holdout, "synthetic": dataset.n_synthetic,
                                                     "created_at": dataset.created_at}}
