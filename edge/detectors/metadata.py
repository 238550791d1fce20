"""Reads the metadata ultralytics embeds in its exports (class names, input size, task) and the keys our
control plane stamps (model version, per-class thresholds).

ONNX files carry it as strings of Python literals; TensorRT engines and our sidecars as JSON.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# Our control plane may stamp an ONNX with this key; otherwise the file's hash names it.
MODEL_VERSION_KEY = "model_version"
# ...and with this one: a JSON object of class name -> confidence in (0, 1), each class's operating
# point (chosen for a target precision). Names, not ids, so that the value reads the same anywhere.
CLASS_THRESHOLDS_KEY = "class_thresholds"


@dataclass(frozen=True)
class ModelMetadata:
    """What a detector needs to know about its model beyond the weights."""

    names: dict[int, str] = field(default_factory=dict)
    imgsz: tuple[int, int] | None = None  # (h, w)
    stride: int | None = None
    task: str | None = None
    end2end: bool = False  # NMS already inside the graph (YOLO26, YOLOv10, nms=True)
    model_version: str | None = None
    thresholds: dict[int, float] = field(default_factory=dict)  # class id -> its own confidence threshold


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


def _threshold(name: object, value: object) -> float:
    """One class's threshold, checked: a real number strictly between 0 and 1."""
    # bool is an int to Python, and `true` a number to nobody; NaN fails the range test too.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"{CLASS_THRESHOLDS_KEY}[{name!r}] = {value!r:.40} is not a confidence in (0, 1)")
    return float(value)


def thresholds_metadata(thresholds: Mapping[str, float]) -> dict[str, str]:
    """The metadata entry that stamps per-class thresholds (class name -> confidence) into a model:
    `{CLASS_THRESHOLDS_KEY: '{"helmet": 0.41, ...}'}`, to add to an ONNX's metadata_props."""
    checked = {str(name): _threshold(name, value) for name, value in thresholds.items()}
    return {CLASS_THRESHOLDS_KEY: json.dumps(checked, sort_keys=True)}


def parse_thresholds(value: object, names: Mapping[int, str]) -> dict[int, float]:
    """A `class_thresholds` value (a JSON string, or a mapping already parsed) → {class id: threshold}.

    Raises ValueError naming the bad part: not a JSON object, a name that is not a class of the
    model (`names`), or a value outside (0, 1). A model must never run with a threshold it misread.
    """
    try:
        parsed = json.loads(value) if isinstance(value, (str, bytes)) else value
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, Mapping):
        raise ValueError(f"{CLASS_THRESHOLDS_KEY} must be a JSON object of class name -> confidence, got {value!r:.80}")
    ids = {name: class_id for class_id, name in names.items()}
    thresholds: dict[int, float] = {}
    for name, threshold in parsed.items():
        if name not in ids:
            known = ", ".join(names.values()) or "none: the model has no class names"
            raise ValueError(f"{CLASS_THRESHOLDS_KEY} names {name!r}, which is not a class of the model ({known})")
        thresholds[ids[name]] = _threshold(name, threshold)
    return thresholds


def parse_metadata(meta: Mapping[str, object]) -> ModelMetadata:
    """Ultralytics' export metadata (values as strings or already parsed) → `ModelMetadata`."""
    names = parse_names(meta["names"]) if "names" in meta else {}
    imgsz = _imgsz(meta["imgsz"]) if "imgsz" in meta else None
    stride = int(str(meta["stride"])) if "stride" in meta else None
    task = str(meta["task"]) if "task" in meta else None
    end2end = _literal(meta.get("end2end", False)) is True
    version = meta.get(MODEL_VERSION_KEY)
    thresholds = parse_thresholds(meta[CLASS_THRESHOLDS_KEY], names) if CLASS_THRESHOLDS_KEY in meta else {}
    return ModelMetadata(names, imgsz, stride, task, end2end, str(version) if version else None, thresholds)
