"""`edgeloop gate`: evaluate challenger and champion on the real holdout, decide, record.

Both are judged on the same, latest dataset version's holdout (real images only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feedback.evaluation.evaluate import evaluate
from feedback.training.gate import DEFAULT_MARGIN, DEFAULT_TOLERANCE, GateDecision, decide
from store.blobs import sha256_hex
from store.datasets import DatasetError, build_dataset, materialise
from store.labels import catalog_classes
from store.models import ModelRecord, champion, get_model, record_gate_decision, register_model
from store.settings import Workspace


class GateError(ValueError):
    pass


@dataclass(frozen=True)
class GateReport:
    decision: GateDecision
    challenger_id: str
    champion_id: str | None
    dataset_version: int
    challenger_metrics: dict[str, Any]
    champion_metrics: dict[str, Any] | None


def resolve_model(ws: Workspace, ref: str) -> ModelRecord:
    """A registry id (m-...), or a .pt file that is registered on the way in."""
    with ws.catalog.connect() as con:
        if found := get_model(con, ref):
            return found
    path = Path(ref)
    if not path.is_file():
        raise GateError(f"{ref!r} is neither a model id in the registry nor a weights file")
    if path.suffix != ".pt":
        raise GateError(f"{ref}: the gate takes ultralytics .pt weights (ONNX is for devices)")
    data = path.read_bytes()
    sha = ws.blobs.put(data)
    from ultralytics import YOLO  # only to read the file's own image size

    imgsz = int(YOLO(str(path)).overrides.get("imgsz") or 640)
    with ws.catalog.connect() as con:
        model_id = register_model(con, sha256_hex(data), classes=catalog_classes(con), imgsz=imgsz)
        return get_model(con, model_id)  # type: ignore[return-value]


def _weights(ws: Workspace, model: ModelRecord, folder: Path) -> Path:
    path = folder / f"{model.id}.pt"
    if not path.exists():
        path.write_bytes(ws.blobs.get(model.weights_sha256))
    return path


def run_gate(
    ws: Workspace,
    challenger_ref: str,
    *,
    champion_ref: str | None = None,
    margin: float = DEFAULT_MARGIN,
    tolerance: float = DEFAULT_TOLERANCE,
    report_dir: Path | None = None,
    progress: bool = True,
) -> GateReport:
    challenger = resolve_model(ws, challenger_ref)
    with ws.catalog.connect() as con:
        names = catalog_classes(con)
        current = resolve_model(ws, champion_ref) if champion_ref else champion(con)
    if current is not None and current.id == challenger.id:
        raise GateError(f"{challenger.id} is already the champion")
    try:
        version = build_dataset(ws.catalog).version  # the newest holdout: it only ever grows
    except DatasetError as exc:
        raise GateError(str(exc)) from exc
    root = ws.settings.workspace / "datasets" / f"v{version}"
    if not (root / "data.yaml").exists():
        materialise(ws.catalog, ws.blobs, version, root)
    weights = ws.settings.workspace / "models"
    weights.mkdir(parents=True, exist_ok=True)

    def judge(model: ModelRecord, role: str) -> dict[str, Any]:
        out = report_dir / role if report_dir else None
        return evaluate(_weights(ws, model, weights), root / "val", names=names, report_dir=out, progress=progress)

    challenger_metrics = judge(challenger, "challenger")
    champion_metrics = judge(current, "champion") if current else None
    decision = decide(challenger_metrics, champion_metrics, margin=margin, tolerance=tolerance)
    with ws.catalog.connect() as con:
        con.begin()
        record_gate_decision(
            con, challenger_id=challenger.id, champion_id=current.id if current else None,
            dataset_version=version, promoted=decision.promoted, reasons=decision.reasons,
            challenger_metrics=challenger_metrics, champion_metrics=champion_metrics,
        )
        con.commit()
    return GateReport(decision, challenger.id, current.id if current else None, version,
                      challenger_metrics, champion_metrics)
