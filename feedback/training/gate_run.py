"""`edgeloop gate`: evaluate challenger and champion on the real holdout, decide, record;
and `edgeloop models register`: a checkpoint trained elsewhere enters the registry (the gate's path for a .pt).

Both are judged on the same, latest dataset version's holdout (real images only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feedback.evaluation.evaluate import evaluate
from feedback.training.gate import DEFAULT_MARGIN, DEFAULT_TOLERANCE, GateDecision, decide
from feedback.training.recipe import rare_in
from store.datasets import DatasetError, build_dataset, materialise, yolo_items
from store.labels import catalog_classes, ensure_classes
from store.models import ModelRecord, champion, get_model, model_id_for, record_gate_decision, register_model
from store.settings import Workspace


class GateError(ValueError):
    """The gate refuses to judge; the message names the bad value."""


class RegistryError(GateError):
    """Weights the registry refuses, and so the gate too, which registers a .pt on the way in."""


@dataclass(frozen=True)
class GateReport:
    decision: GateDecision
    challenger_id: str
    champion_id: str | None
    dataset_version: int
    challenger_metrics: dict[str, Any]
    champion_metrics: dict[str, Any] | None


def _checkpoint(path: Path) -> tuple[list[str], int]:
    """The class names and training image size an ultralytics checkpoint carries."""
    from ultralytics import YOLO  # heavy (torch): only when a file is registered

    try:
        model = YOLO(str(path), task="detect")
        names = model.names
    except Exception as exc:  # torch and ultralytics raise many kinds for a file that is not theirs
        raise RegistryError(f"{path}: not an ultralytics checkpoint ({exc})") from exc
    return [names[i] for i in sorted(names)], int(model.overrides.get("imgsz") or 640)


def register_weights(
    ws: Workspace, path: Path | str, *, parent: str | None = None, note: str | None = None
) -> tuple[ModelRecord, bool]:
    """Record a checkpoint trained elsewhere, lineage "external": (its record, whether it is new).

    Its classes must be the catalog's, in order, since the holdout is labelled in them; a catalog without
    classes yet (a site starting from a model alone) adopts the checkpoint's. The same
    weights are the same model: registering them again changes nothing and returns the record.
    """
    path = Path(path)
    if not path.is_file():
        raise RegistryError(f"{path}: no such file")
    if path.suffix != ".pt":
        raise RegistryError(f"{path}: not a .pt file (the registry takes ultralytics .pt weights; ONNX is for devices)")
    with ws.catalog.connect() as con:
        catalog = catalog_classes(con)
        if parent is not None and get_model(con, parent) is None:
            raise RegistryError(f"parent {parent!r}: no such model in the registry (see `edgeloop models`)")
    classes, imgsz = _checkpoint(path)
    if catalog and classes != catalog:
        raise RegistryError(f"{path}: its classes {classes} are not the catalog's {catalog}")
    sha = ws.blobs.put_file(path)
    with ws.catalog.connect() as con:
        con.begin()
        # A site that starts from a model alone: its classes become the catalog's (a .pt names them).
        ensure_classes(con, classes)
        new = get_model(con, model_id_for(sha)) is None
        model_id = register_model(con, sha, classes=classes, imgsz=imgsz, parent_id=parent, origin="external",
                                  note=note)
        con.commit()
        return get_model(con, model_id), new  # type: ignore[return-value]


def resolve_model(ws: Workspace, ref: str) -> ModelRecord:
    """A registry id (m-...), or a .pt file, registered on the way in as `models register` does."""
    with ws.catalog.connect() as con:
        if found := get_model(con, ref):
            return found
    if not Path(ref).is_file():
        raise GateError(f"{ref!r} is neither a model id in the registry nor a weights file")
    return register_weights(ws, ref)[0]


def watched_classes(ws: Workspace, version: int, names: Sequence[str]) -> list[str]:
    """The classes rare among dataset `version`'s training boxes, as selection and the training recipe count them."""
    training = [item for item in yolo_items(ws.catalog, version)[1] if item.split == "train"]
    return [names[c] for c in rare_in(training, len(names))]


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
    watch: Sequence[str] = (),
) -> GateReport:
    """Judge `challenger_ref` against the champion on the newest holdout, each at its own thresholds; the rare
    classes (as selection counts them) and `watch` (default: the workspace's watch_classes) may not lose recall
    at their operating points."""
    challenger = resolve_model(ws, challenger_ref)
    with ws.catalog.connect() as con:
        names = catalog_classes(con)
        current = resolve_model(ws, champion_ref) if champion_ref else champion(con)
    if current is not None and current.id == challenger.id:
        raise GateError(f"{challenger.id} is already the champion")
    for role, model in (("challenger", challenger), ("champion", current)):
        if model is not None and model.classes != names:
            raise GateError(f"{role} {model.id} has classes {model.classes}, not the catalog's {names}")
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
        return evaluate(_weights(ws, model, weights), root / "val", names=names, report_dir=out, progress=progress,
                        thresholds=model.thresholds)

    challenger_metrics = judge(challenger, "challenger")
    champion_metrics = judge(current, "champion") if current else None
    watched = sorted(set(watched_classes(ws, version, names)) | set(watch or ws.settings.watch_classes))
    decision = decide(challenger_metrics, champion_metrics, margin=margin, tolerance=tolerance, watched=watched)
    with ws.catalog.connect() as con:
        con.begin()
        record_gate_decision(
            con, challenger_id=challenger.id, champion_id=current.id if current else None,
            dataset_version=version, promoted=decision.promoted, reasons=decision.reasons,
            challenger_metrics=challenger_metrics, champion_metrics=champion_metrics,
            margin=decision.margin, tolerance=decision.tolerance,
        )
        con.commit()
    return GateReport(decision, challenger.id, current.id if current else None, version,
                      challenger_metrics, champion_metrics)
