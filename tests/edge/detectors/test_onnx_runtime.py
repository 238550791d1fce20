"""The ONNX Runtime backend: metadata, providers, and parity with ultralytics' own predict.

Parity is the acceptance test: the edge must see what the model was evaluated to see.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import supervision as sv
from ultralytics import YOLO

from edge.detectors import BatchDetector, Detector, detect_all, load_detector
from edge.detectors.metadata import file_sha256
from edge.detectors.onnx_runtime import OnnxDetector, select_providers

IMGSZ = 320  # the size conftest exports at
BOX_TOL_PX = 1.0
CONF_TOL = 1e-3


def _restamped(onnx_path: Path, tmp_path: Path, **props: str) -> Path:
    """A copy of an export with some metadata entries replaced, as a control plane might stamp it."""
    model = onnx.load(str(onnx_path))
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    out = tmp_path / onnx_path.name
    onnx.save(model, str(out))
    return out


# -- shapes and metadata (random weights: never skipped) ----------------------------------------


@pytest.fixture(scope="module")
def random_detector(random_onnx: Path) -> OnnxDetector:
    return OnnxDetector(random_onnx)


def test_reads_size_names_and_version_from_the_export(random_detector: OnnxDetector, random_onnx: Path):
    assert isinstance(random_detector, Detector) and isinstance(random_detector, BatchDetector)
    assert random_detector.input_size == (IMGSZ, IMGSZ)
    assert len(random_detector.names) == 80
    assert random_detector.model_version == file_sha256(random_onnx)[:12]
    assert random_detector.providers == ["CPUExecutionProvider"]  # no GPU here


def test_detect_returns_supervision_detections_for_any_frame_size(random_detector: OnnxDetector):
    rng = np.random.default_rng(0)
    for hw in [(480, 640), (333, 500), (1080, 1920), (50, 40)]:
        dets = random_detector.detect(rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
        assert isinstance(dets, sv.Detections)
        assert dets.xyxy.dtype == np.float32 and dets.xyxy.shape[1] == 4
        assert "class_name" in dets.data


def test_detect_batch_gives_one_result_per_frame(random_detector: OnnxDetector):
    frames = [np.full((240, 320, 3), v, dtype=np.uint8) for v in (0, 128, 255)]
    assert len(random_detector.detect_batch(frames)) == 3
    assert len(detect_all(random_detector, frames)) == 3


def test_model_version_stamped_in_the_metadata_wins(random_onnx: Path, tmp_path: Path):
    stamped = _restamped(random_onnx, tmp_path, model_version="ppe-7")
    assert OnnxDetector(stamped).model_version == "ppe-7"


def test_refuses_models_that_are_not_detectors(random_onnx: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="'segment' model"):
        OnnxDetector(_restamped(random_onnx, tmp_path, task="segment"))


def test_provider_choice_prefers_tensorrt_then_cuda_and_always_ends_with_cpu(tmp_path: Path):
    assert select_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    gpu = select_providers(
        ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], trt_cache_dir=tmp_path
    )
    assert [p if isinstance(p, str) else p[0] for p in gpu] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    trt_options = gpu[0][1]
    assert trt_options["trt_fp16_enable"] and trt_options["trt_engine_cache_path"] == str(tmp_path)


def test_load_detector_picks_the_backend_from_the_suffix(random_onnx: Path, tmp_path: Path):
    assert isinstance(load_detector(random_onnx), OnnxDetector)
    renamed = tmp_path / "model.bin"
    shutil.copyfile(random_onnx, renamed)
    with pytest.raises(ValueError, match="cannot tell the backend"):
        load_detector(renamed)
    assert isinstance(load_detector(renamed, backend="onnxruntime"), OnnxDetector)
    with pytest.raises(ValueError, match="onnxruntime backend only"):
        load_detector(tmp_path / "m.engine", providers=["CPUExecutionProvider"])


# -- parity with ultralytics (trained weights) -------------------------------------------------------


def _assert_same(ours: sv.Detections, boxes, *, where: str) -> None:
    assert len(ours) == len(boxes), f"{where}: {len(ours)} boxes vs ultralytics' {len(boxes)}"
    np.testing.assert_array_equal(ours.class_id, boxes.cls.numpy().astype(int), err_msg=where)
    np.testing.assert_allclose(ours.xyxy, boxes.xyxy.numpy(), atol=BOX_TOL_PX, rtol=0, err_msg=where)
    np.testing.assert_allclose(ours.confidence, boxes.conf.numpy(), atol=CONF_TOL, rtol=0, err_msg=where)


def test_parity_with_ultralytics_predict_on_the_same_onnx(ppe_onnx: Path, val_frames: list[np.ndarray]):
    ours = OnnxDetector(ppe_onnx, conf=0.25)
    theirs = YOLO(str(ppe_onnx), task="detect")
    total = 0
    for i, frame in enumerate(val_frames):
        dets = ours.detect(frame)
        result = theirs.predict(frame, imgsz=IMGSZ, conf=0.25, verbose=False)[0]
        _assert_same(dets, result.boxes, where=f"image {i}")
        assert list(dets.data["class_name"]) == [result.names[int(c)] for c in result.boxes.cls]
        total += len(dets)
    assert total >= len(val_frames)  # real weights find things: the comparison is not vacuous


def test_parity_with_the_pytorch_checkpoint(ppe_pt: Path, ppe_onnx: Path, val_frames: list[np.ndarray]):
    """Same weights through PyTorch. `rect=False` gives the .pt the square letterbox an ONNX
    export has; by default it pads only to a multiple of 32, a different input altogether."""
    ours = OnnxDetector(ppe_onnx, conf=0.25)
    torch_model = YOLO(str(ppe_pt))
    for i, frame in enumerate(val_frames):
        result = torch_model.predict(frame, imgsz=IMGSZ, conf=0.25, rect=False, verbose=False)[0]
        _assert_same(ours.detect(frame), result.boxes, where=f"image {i}")


def test_a_dynamic_export_detects_a_batch_in_one_run(ppe_dynamic_onnx: Path, val_frames: list[np.ndarray]):
    detector = OnnxDetector(ppe_dynamic_onnx)
    assert detector.input_size == (IMGSZ, IMGSZ)  # from the metadata: the graph's size is symbolic
    frames = val_frames[:4]
    batched, single = detector.detect_batch(frames), [detector.detect(f) for f in frames]
    assert sum(len(d) for d in single) > 0
    for i, (b, s) in enumerate(zip(batched, single, strict=True)):
        np.testing.assert_array_equal(b.class_id, s.class_id, err_msg=f"frame {i}")
        np.testing.assert_allclose(b.xyxy, s.xyxy, atol=1e-3, err_msg=f"frame {i}")
        np.testing.assert_allclose(b.confidence, s.confidence, atol=1e-5, err_msg=f"frame {i}")
