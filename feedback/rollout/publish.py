"""`edgeloop publish MODEL`: export the model to a static ONNX stamped with its version, check it against
the .pt on holdout frames, and store the artifact devices build from, with its reference set.

The reference set is a few frames and the detections ONNX Runtime finds on them at the devices'
operating point: a device runs whatever it built (ORT session, TensorRT FP16 engine) on those frames
and refuses the model unless it finds the same boxes.
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import supervision as sv

from edge.detectors.agreement import detections_agree
from edge.detectors.metadata import MODEL_VERSION_KEY, thresholds_metadata
from edge.detectors.onnx_runtime import OnnxDetector
from edge.protocol import ArtifactManifest, ReferenceDetection, ReferenceFrame, ReferenceSet, utc_now
from feedback.rollout.deployments import publish_desired_state, start_rollout
from feedback.rollout.model_ref import PublishError, resolve_model
from feedback.training.export import export_onnx
from store.models import ModelRecord
from store.rollouts import Rollout, artifact_manifest, holdout_images, put_artifact
from store.settings import Workspace

# The devices' operating point (edge.detectors.load_detector's defaults): the reference set is made at it.
DEVICE_CONF, DEVICE_IOU = 0.25, 0.7
# .pt and ONNX differ by float rounding only (1e-4 in score, 0.05 px measured): more is a broken export.
PARITY_BOX_TOL_PX, PARITY_CONF_TOL = 1.0, 0.01
# What a device's own build may stray from ONNX Runtime: TensorRT's FP16 moves boxes and scores a little.
REFERENCE_BOX_TOL_PX, REFERENCE_CONF_TOL = 2.0, 0.02


@dataclass(frozen=True)
class Parity:
    """The exported ONNX against the .pt, box for box, at the devices' operating point."""

    frames: int
    boxes: int  # the .pt's boxes over all frames
    max_box_px: float  # the largest corner distance between partner boxes
    max_conf_diff: float
    box_tol_px: float
    conf_tol: float


@dataclass(frozen=True)
class Published:
    manifest: ArtifactManifest
    parity: Parity
    reference: ReferenceSet


def holdout_frames(ws: Workspace, folder: Path, limit: int) -> list[Path]:
    """Up to `limit` real holdout images of the catalog, written to `folder` (a stable choice: by sha256)."""
    with ws.catalog.connect() as con:
        rows = holdout_images(con, limit)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for sha, media_type in rows:
        path = folder / f"{sha[:16]}{'.png' if media_type == 'image/png' else '.jpg'}"
        path.write_bytes(ws.blobs.get(sha))
        paths.append(path)
    return paths


def stamp_version(onnx_path: Path, version: str, thresholds: Mapping[str, float] | None = None) -> None:
    """Write the registry's model id into the ONNX metadata (devices then report it as their model version) and
    the model's per-class thresholds, where it has them: the operating points travel inside the file."""
    import onnx

    model = onnx.load(str(onnx_path))
    props = {p.key: p.value for p in model.metadata_props}
    props[MODEL_VERSION_KEY] = version
    props.update(thresholds_metadata(thresholds) if thresholds else {})
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(onnx_path))


def check_parity(pt: Path, onnx_path: Path, frames: Sequence[Path], *, box_tol_px: float = PARITY_BOX_TOL_PX,
                 conf_tol: float = PARITY_CONF_TOL) -> Parity:
    """Run the .pt (ultralytics) and the ONNX (the devices' ONNX Runtime detector) on `frames`; raise
    PublishError naming the first frame where they disagree beyond the tolerances."""
    # why: it imports ultralytics (offline, torch), which must load after the exporter's, in the caller's quiet block
    from feedback.evaluation.predict import load_detector, predict_images

    # Parity is the export's numbers against the .pt's at one threshold; the per-class cut is checked on its own.
    device = OnnxDetector(onnx_path, conf=DEVICE_CONF, iou=DEVICE_IOU, providers=["CPUExecutionProvider"],
                          class_thresholds=False)
    predicted, _ = predict_images(load_detector(pt), frames, conf=DEVICE_CONF, iou=DEVICE_IOU,
                                  imgsz=device.input_size[0], progress=False)
    boxes, worst_px, worst_conf = 0, 0.0, 0.0
    for path in frames:
        reference, exported = predicted[path.stem], device.detect(cv2.imread(str(path)))
        ok, why = detections_agree(reference, exported, box_tol_px=box_tol_px, conf_tol=conf_tol,
                                   conf_threshold=DEVICE_CONF)
        if not ok:
            raise PublishError(f"the ONNX export disagrees with the .pt on holdout frame {path.name}: {why}")
        px, conf = _gaps(reference, exported)
        boxes, worst_px, worst_conf = boxes + len(reference), max(worst_px, px), max(worst_conf, conf)
    return Parity(len(frames), boxes, round(worst_px, 4), round(worst_conf, 6), box_tol_px, conf_tol)


def _gaps(a: sv.Detections, b: sv.Detections) -> tuple[float, float]:
    """Largest corner distance and score difference between each box of `a` and its nearest same-class box in `b`."""
    px = conf = 0.0
    for i in range(len(a)):
        same = np.flatnonzero(b.class_id == a.class_id[i])
        if len(same):
            dist = np.abs(b.xyxy[same] - a.xyxy[i]).max(axis=1)
            j = same[int(np.argmin(dist))]
            px, conf = max(px, float(dist.min())), max(conf, abs(float(b.confidence[j] - a.confidence[i])))
    return px, conf


def reference_set(onnx_path: Path, frames: Sequence[Path], count: int) -> ReferenceSet:
    """`count` of `frames` (those with the most boxes first), shrunk to the model's input size and kept
    as PNG, each with the detections ONNX Runtime finds on exactly those pixels."""
    detector = OnnxDetector(onnx_path, conf=DEVICE_CONF, iou=DEVICE_IOU, providers=["CPUExecutionProvider"],
                            class_thresholds=False)
    side = max(detector.input_size)
    shrunk = []
    for path in frames:
        image = cv2.imread(str(path))
        scale = side / max(image.shape[:2])
        if scale < 1:  # smaller frames, same check: the letterbox would shrink them anyway
            image = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                               interpolation=cv2.INTER_AREA)
        shrunk.append((path, image, detector.detect(image)))
    shrunk.sort(key=lambda item: (-len(item[2]), item[0].name))
    out = []
    for path, image, found in shrunk[:count]:
        ok, png = cv2.imencode(".png", image)
        assert ok, "OpenCV could not encode a decoded frame as PNG"
        out.append(ReferenceFrame(
            name=path.name, png_base64=base64.b64encode(png.tobytes()).decode(),
            detections=[ReferenceDetection(xyxy=tuple(float(v) for v in found.xyxy[i]),  # type: ignore[arg-type]
                                           confidence=float(found.confidence[i]), class_id=int(found.class_id[i]))
                        for i in range(len(found))],
        ))
    return ReferenceSet(conf=DEVICE_CONF, iou=DEVICE_IOU, box_tol_px=REFERENCE_BOX_TOL_PX,
                        conf_tol=REFERENCE_CONF_TOL, frames=out)


def store_artifact(ws: Workspace, model: ModelRecord, onnx_bytes: bytes, reference: ReferenceSet,
                   input_size: tuple[int, int], parity: Parity) -> ArtifactManifest:
    """Put the ONNX and the reference set in the blob store and record the manifest (replacing an earlier
    one of the model); the desired state is published again, so devices see a republished artifact."""
    reference_bytes = reference.model_dump_json().encode()
    manifest = ArtifactManifest(
        model_version=model.id, onnx_sha256=ws.blobs.put(onnx_bytes), onnx_bytes=len(onnx_bytes),
        reference_sha256=ws.blobs.put(reference_bytes), reference_bytes=len(reference_bytes),
        classes=model.classes, input_size=input_size, metrics=_scalars(model.metrics), published_at=utc_now(),
        thresholds=model.thresholds or None,
    )
    with ws.catalog.connect() as con:
        put_artifact(con, manifest, asdict(parity))
        publish_desired_state(con, ws.objects, ws.settings.signing_keys)
    return manifest


def _scalars(metrics: dict[str, Any] | None) -> dict[str, float] | None:
    """The headline numbers of the gate's metrics (the per-class tables stay in the catalog)."""
    if not metrics:
        return None
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def publish(ws: Workspace, model_ref: str, *, frames: Sequence[Path] | None = None, parity_frames: int = 16,
            reference_frames: int = 4) -> Published:
    """Export, stamp, check and store `model_ref` (an id or "champion"); `frames` default to the catalog's
    real holdout images."""
    model = resolve_model(ws, model_ref)
    with tempfile.TemporaryDirectory(prefix="edgeloop-publish-") as tmp:
        folder = Path(tmp)
        paths = list(frames) if frames is not None else holdout_frames(ws, folder / "frames", parity_frames)
        if not paths:
            raise PublishError("there are no real holdout images in the catalog to check the export on "
                               "(import some with `edgeloop import --split holdout`)")
        onnx_path = export_onnx(ws, model.id, folder / "export")
        stamp_version(onnx_path, model.id, model.thresholds)
        pt = folder / f"{model.id}.pt"
        pt.write_bytes(ws.blobs.get(model.weights_sha256))
        parity = check_parity(pt, onnx_path, paths)
        reference = reference_set(onnx_path, paths, reference_frames)
        exported = OnnxDetector(onnx_path, providers=["CPUExecutionProvider"])
        if list(exported.names.values()) != model.classes:
            raise PublishError(f"{model.id}: the export's classes {list(exported.names.values())} "
                               f"are not the registry's {model.classes}")
        shipped = {exported.names[c]: t for c, t in exported.thresholds.items()}
        if shipped != (model.thresholds or {}):
            raise PublishError(f"{model.id}: the export carries thresholds {shipped}, the registry {model.thresholds}")
        manifest = store_artifact(ws, model, onnx_path.read_bytes(), reference, exported.input_size, parity)
    return Published(manifest, parity, reference)


def get_artifact(ws: Workspace, model_id: str) -> ArtifactManifest | None:
    with ws.catalog.connect() as con:
        return artifact_manifest(con, model_id)


def publish_and_start(ws: Workspace, model_id: str, canary_pct: float = 100.0) -> Rollout:
    """Publish `model_id` unless it already is, and start (or grow) its rollout: the demo's one call."""
    if get_artifact(ws, model_id) is None:
        publish(ws, model_id)
    return start_rollout(ws, model_id, canary_pct)
