"""Tiny ONNX detectors whose head answers every frame with boxes planted by the test, at known scores.

They carry ultralytics' metadata (names, imgsz, stride, task) and, when asked, per-class thresholds, so
the real ONNX Runtime backend decodes them exactly as it decodes an export.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from edge.detectors.metadata import thresholds_metadata

PPE = {0: "helmet", 1: "no_helmet", 2: "no_wear", 3: "wear"}
Row = tuple[float, float, float, float, int, float]  # cx, cy, w, h (input pixels), class id, score


def head(rows: Sequence[Row], nc: int, anchors: int = 8) -> np.ndarray:
    """A (1, 4 + nc, anchors) head output from rows, every other score 0. At least 8 anchors: a head with
    6 would be taken for an end-to-end one, (1, N, 6), as ultralytics takes it."""
    out = np.zeros((1, 4 + nc, max(anchors, len(rows))), dtype=np.float32)
    for a, (cx, cy, w, h, cls, score) in enumerate(rows):
        out[0, :4, a] = cx, cy, w, h
        out[0, 4 + cls, a] = score
    return out


def _set_metadata(model: object, entries: Mapping[str, str]) -> None:
    props = {p.key: p.value for p in model.metadata_props}  # type: ignore[attr-defined]
    props.update(entries)
    del model.metadata_props[:]  # type: ignore[attr-defined]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)  # type: ignore[attr-defined]


def planted_onnx(path: Path, rows: Sequence[Row], *, names: Mapping[int, str] = PPE, imgsz: int = 64,
                 thresholds: Mapping[str, float] | None = None, raw_metadata: Mapping[str, str] | None = None) -> Path:
    """Write a detector whose output is `head(rows)` whatever the frame, stamped with `thresholds` (class
    name -> confidence) the way the control plane stamps them, or with `raw_metadata` entries as given."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    output = head(rows, len(names))
    # The frame goes through the graph (times zero), so the output is a real function of the input.
    nodes = [
        helper.make_node("ReduceSum", ["images"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["planted", "nothing"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes, "planted",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, imgsz, imgsz])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(output.shape))],
        initializer=[numpy_helper.from_array(output, "planted"),
                     numpy_helper.from_array(np.zeros((), dtype=np.float32), "zero")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # old enough for any ONNX Runtime a device runs
    _set_metadata(model, {"names": repr(dict(names)), "imgsz": repr([imgsz, imgsz]), "stride": "32", "task": "detect"})
    if thresholds is not None:
        _set_metadata(model, thresholds_metadata(thresholds))
    if raw_metadata:
        _set_metadata(model, raw_metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def with_thresholds(onnx_path: Path, dest: Path, thresholds: Mapping[str, float]) -> Path:
    """A copy of a real export with per-class thresholds stamped in, as the control plane will publish it."""
    import onnx

    shutil.copyfile(onnx_path, dest)
    model = onnx.load(str(dest))
    _set_metadata(model, thresholds_metadata(thresholds))
    onnx.save(model, str(dest))
    return dest
