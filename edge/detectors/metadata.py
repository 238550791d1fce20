"""Reads the metadata ultralytics embeds in its exports: class names, input size, task.

ONNX files carry it as strings of Python literals; TensorRT engines and our sidecars as JSON.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# Our control plane may stamp an ONNX with this key; otherwise the file's hash names it.
MODEL_VERSION_KEY = "model_version"


@dataclass(frozen=True)
class ModelMetadata:
    """What a detector needs to know about its model beyond the weights."""

    names: dict[int, str] = field(default_factory=dict)
    imgsz: tuple[int, int] | None = None  # (h, w)
    stride: int | None = None
    task: str | None = None
    end2end: bool = False  # NMS already inside the graph (YOLO26, YOLOv10, nms=True)
    model_version: str | None = None


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a model file: its identity for versions and engine caches."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _literal(value: object) -> object:
    """A metadata value as a Python object. Strings are parsed with `ast.literal_eval`,
    which accepts literals only: a model file is data and must never run code."""
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return value  # a plain string such as the description


def parse_names(value: object) -> dict[int, str]:
    """`{0: 'helmet', ...}` (ONNX), `{"0": "helmet"}` (JSON) or `['helmet', ...]` → {0: 'helmet'}."""
    parsed = _literal(value)
    if isinstance(parsed, (list, tuple)):
        return {i: str(n) for i, n in enumerate(parsed)}
    if isinstance(parsed, Mapping):
        return {int(k): str(v) for k, v in parsed.items()}
    raise ValueError(f"class names in the model metadata are neither a dict nor a list: {value!r:.80}")


def _imgsz(value: object) -> tuple[int, int]:
    parsed = _literal(value)
    if isinstance(parsed, int):
        return parsed, parsed
    if isinstance(parsed, (list, tuple)) and len(parsed) == 2:
        return int(parsed[0]), int(parsed[1])
    raise ValueError(f"imgsz in the model metadata is not an int or (h, w): {value!r:.80}")


def parse_metadata(meta: Mapping[str, object]) -> ModelMetadata:
    """Ultralytics' export metadata (values as strings or already parsed) → `ModelMetadata`."""
    names = parse_names(meta["names"]) if "names" in meta else {}
    imgsz = _imgsz(meta["imgsz"]) if "imgsz" in meta else None
    stride = int(str(meta["stride"])) if "stride" in meta else None
    task = str(meta["task"]) if "task" in meta else None
    end2end = _literal(meta.get("end2end", False)) is True
    version = meta.get(MODEL_VERSION_KEY)
    return ModelMetadata(names, imgsz, stride, task, end2end, str(version) if version else None)
