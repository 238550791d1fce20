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

from edge.detectors import BatchDetector, Detector, detect_all, load_detector, thresholds_of
from edge.detectors.metadata import CLASS_THRESHOLDS_KEY, file_sha256
from edge.detectors.onnx_runtime import OnnxDetector, select_providers
from edge.detectors.postprocess import class_evidence
from tests.edge.planted_model import planted_onnx, with_thresholds

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


# -- per-class thresholds stamped in the model (DESIGN decision 9) -----------------------------------

# helmet 0.2 under its 0.3, no_helmet 0.1 over its 0.08, no_wear (no threshold) at 0.3 and 0.2 around the
# global 0.25, wear 0.75 over its 0.7.
ROWS = [(10, 10, 8, 8, 0, 0.2), (30, 10, 8, 8, 1, 0.1), (50, 10, 8, 8, 2, 0.3), (10, 40, 8, 8, 2, 0.2),
        (40, 40, 12, 12, 3, 0.75)]
THRESHOLDS = {"helmet": 0.3, "no_helmet": 0.08, "wear": 0.7}


def _seen(dets: sv.Detections) -> list[tuple[str, float]]:
    return sorted((str(n), round(float(c), 2)) for n, c in zip(dets.data["class_name"], dets.confidence))


def test_a_model_with_class_thresholds_detects_each_class_at_its_own(tmp_path: Path):
    model = planted_onnx(tmp_path / "m.onnx", ROWS, thresholds=THRESHOLDS)
    detector = load_detector(model)
    assert detector.thresholds == {0: 0.3, 1: 0.08, 3: 0.7} == thresholds_of(detector)
    frame = np.zeros((64, 64, 3), dtype=np.uint8)
    dets = detector.detect(frame)
    assert _seen(dets) == [("no_helmet", 0.1), ("no_wear", 0.3), ("wear", 0.75)]
    assert [_seen(d) for d in detector.detect_batch([frame, frame])] == [_seen(dets)] * 2
    # --confidence: one threshold for every class, the model's own ignored (the old behaviour).
    overridden = load_detector(model, conf=0.25, class_thresholds=False)
    assert overridden.thresholds == {} and thresholds_of(overridden) == {}
    assert _seen(overridden.detect(frame)) == [("no_wear", 0.3), ("wear", 0.75)]
    np.testing.assert_array_equal(class_evidence(overridden.detect(frame)), class_evidence(dets))


def test_a_model_without_class_thresholds_detects_at_the_global_threshold(tmp_path: Path):
    detector = OnnxDetector(planted_onnx(tmp_path / "m.onnx", ROWS))
    assert detector.thresholds == {}
    assert _seen(detector.detect(np.zeros((64, 64, 3), dtype=np.uint8))) == [("no_wear", 0.3), ("wear", 0.75)]


@pytest.mark.parametrize(("value", "why"), [
    ('{"nohelmet": 0.1}', "'nohelmet', which is not a class of the model"),
    ('{"helmet": 1.2}', r"class_thresholds\['helmet'\] = 1.2 is not a confidence"),
    ("0.3", "must be a JSON object"),
])
def test_a_model_with_malformed_class_thresholds_does_not_load(tmp_path: Path, value: str, why: str):
    model = planted_onnx(tmp_path / "m.onnx", ROWS, raw_metadata={CLASS_THRESHOLDS_KEY: value})
    with pytest.raises(ValueError, match=why):
        load_detector(model)


def test_a_real_export_stamped_with_thresholds_keeps_each_class_at_its_own(ppe_onnx: Path, val_frames: list[np.ndarray],
                                                                          tmp_path: Path):
    stamped = with_thresholds(ppe_onnx, tmp_path / "stamped.onnx", {"helmet": 0.6, "no_wear": 0.05})
    plain, per_class = OnnxDetector(ppe_onnx), OnnxDetector(stamped)
    low_no_wear = 0
    for frame in val_frames:
        before, after = plain.detect(frame), per_class.detect(frame)
        np.testing.assert_array_equal(class_evidence(after), class_evidence(before))
        names = after.data["class_name"]
        assert (after.confidence[names == "helmet"] >= np.float32(0.6)).all()
        assert (after.confidence[names == "no_wear"] >= np.float32(0.05)).all()
        # Classes without a threshold of their own are exactly what the plain model finds.
        for name in ("no_helmet", "wear"):
            np.testing.assert_array_equal(np.sort(after.confidence[names == name]),
                                          np.sort(before.confidence[before.data["class_name"] == name]))
        low_no_wear += int(((names == "no_wear") & (after.confidence <= 0.25)).sum())
    assert low_no_wear > 0  # real frames have no_wear boxes only its own, lower threshold shows


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
