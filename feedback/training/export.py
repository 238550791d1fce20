"""Export a registered model to ONNX for the devices (they build their TensorRT engines from it).

The ONNX carries ultralytics' metadata (class names, image size) that the edge backends read.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from store.models import get_model
from store.settings import Workspace


class ExportError(ValueError):
    pass


def export_onnx(ws: Workspace, model_id: str, out_dir: Path, *, imgsz: int | None = None) -> Path:
    """Write `<out_dir>/<model_id>.onnx` (static input size, opset chosen by ultralytics)."""
    from ultralytics import YOLO

    with ws.catalog.connect() as con:
        model = get_model(con, model_id)
    if model is None:
        raise ExportError(f"no model {model_id!r} in the registry")
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / f"{model.id}.pt"
    weights.write_bytes(ws.blobs.get(model.weights_sha256))
    exported = Path(YOLO(str(weights)).export(format="onnx", imgsz=imgsz or model.imgsz, verbose=False))
    target = out_dir / f"{model.id}.onnx"
    if exported != target:
        shutil.move(exported, target)
    weights.unlink()
    return target
