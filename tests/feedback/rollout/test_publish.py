"""`publish` with the real PPE checkpoint: the stored artifact, its stamped ONNX, its parity with the .pt on
the catalog's holdout, and the reference set a device checks its build against; and what is refused.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from edge.detectors.onnx_runtime import OnnxDetector
from edge.protocol import ArtifactManifest, ReferenceSet
from feedback.rollout.model_ref import PublishError
from feedback.rollout.publish import check_parity, get_artifact, publish
from feedback.training.export import export_onnx
from feedback.training.gate_run import register_weights
from store.blobs import sha256_hex
from tests.feedback.rollout.artifacts import frames, holdout_workspace

pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, ppe_dir: Path, ppe_pt: Path):
    ws = holdout_workspace(tmp_path_factory.mktemp("publish"), ppe_dir, n=6)
    model, _ = register_weights(ws, ppe_pt)
    return ws, model, publish(ws, model.id)


def test_the_artifact_is_the_stamped_onnx_with_its_identity(published, tmp_path: Path) -> None:
    ws, model, done = published
    m = done.manifest
    assert m.model_version == model.id and m.classes == model.classes == ["helmet", "no_helmet", "no_wear", "wear"]
    assert m.input_size == (320, 320)
    onnx = ws.blobs.get(m.onnx_sha256)
    assert sha256_hex(onnx) == m.onnx_sha256 and len(onnx) == m.onnx_bytes
    path = tmp_path / "m.onnx"
    path.write_bytes(onnx)
    device = OnnxDetector(path)  # what a device loads from the blob
    assert device.model_version == model.id  # stamped: captures and heartbeats will name the registry's model
    assert device.input_size == (320, 320) and list(device.names.values()) == model.classes
    assert get_artifact(ws, model.id) == m
    with ws.catalog.connect() as con:
        parity = json.loads(con.execute("SELECT parity FROM artifacts WHERE model_id = ?", [model.id]).fetchone()[0])
    assert parity["frames"] == 6 and parity["boxes"] > 0  # every holdout image, with real detections on them


def test_the_export_matches_the_pt_on_the_holdout(published) -> None:
    _, _, done = published
    p = done.parity
    assert p.frames == 6 and p.boxes > 0
    assert p.max_box_px <= p.box_tol_px and p.max_conf_diff <= p.conf_tol


def test_the_reference_set_is_what_onnx_runtime_finds_on_its_pixels(published, tmp_path: Path) -> None:
    ws, _, done = published
    reference = ReferenceSet.model_validate_json(ws.blobs.get(done.manifest.reference_sha256))
    assert reference == done.reference and len(reference.frames) == 4
    assert sum(len(f.detections) for f in reference.frames) > 0
    path = tmp_path / "m.onnx"
    path.write_bytes(ws.blobs.get(done.manifest.onnx_sha256))
    detector = OnnxDetector(path, conf=reference.conf, iou=reference.iou)
    counts = []
    for frame in reference.frames:
        image = cv2.imdecode(np.frombuffer(base64.b64decode(frame.png_base64), np.uint8), cv2.IMREAD_COLOR)
        assert max(image.shape[:2]) <= 320  # shrunk to the input size: small, and the same check
        found = detector.detect(image)
        assert len(found) == len(frame.detections)
        expected = np.array([d.xyxy for d in frame.detections]).reshape(-1, 4)
        order = np.lexsort(expected.T[::-1])
        assert np.allclose(found.xyxy[np.lexsort(found.xyxy.T[::-1])], expected[order], atol=1e-3)
        counts.append(len(frame.detections))
    assert counts == sorted(counts, reverse=True)  # the frames with the most boxes were chosen


def test_publishing_again_replaces_the_artifact(published) -> None:
    ws, model, done = published
    again = publish(ws, model.id)
    assert again.manifest.model_version == model.id and again.manifest.published_at > done.manifest.published_at
    with ws.catalog.connect() as con:
        assert con.execute("SELECT count(*) FROM artifacts").fetchone()[0] == 1
    assert ArtifactManifest.model_validate(get_artifact(ws, model.id)) == again.manifest


def test_a_model_not_in_the_registry_or_no_holdout_is_refused(published) -> None:
    ws, model, _ = published
    with pytest.raises(PublishError, match="no model 'm-nope'"):
        publish(ws, "m-nope")
    with pytest.raises(PublishError, match="no champion"):
        publish(ws, "champion")  # registered, never promoted
    with pytest.raises(PublishError, match="no real holdout images"):
        publish(ws, model.id, frames=[])


def test_an_export_that_disagrees_with_its_pt_is_refused(published, ppe_pt: Path, ppe_dir: Path,
                                                         tmp_path: Path) -> None:
    ws, model, _ = published
    onnx = export_onnx(ws, model.id, tmp_path / "export")
    # Weights with helmet silenced (its class logit's bias at -1e4): the ONNX of the real weights finds
    # helmets this .pt never does.
    ckpt = torch.load(ppe_pt, map_location="cpu", weights_only=False)
    silenced = copy.deepcopy(ckpt)
    for branch in silenced["model"].model[-1].cv3:
        branch[-1].bias.data[0] = -1e4
    pt = tmp_path / "silenced.pt"
    torch.save(silenced, pt)
    with pytest.raises(PublishError, match=r"disagrees with the \.pt on holdout frame .*\.jpg"):
        check_parity(pt, onnx, frames(ppe_dir))


def test_a_models_thresholds_travel_in_its_onnx_and_its_manifest(tmp_path: Path, ppe_dir: Path, ppe_pt: Path) -> None:
    import onnxruntime

    from store.models import set_thresholds

    ws = holdout_workspace(tmp_path, ppe_dir, n=4)
    model, _ = register_weights(ws, ppe_pt)
    own = {"helmet": 0.4, "no_helmet": 0.05}
    with ws.catalog.connect() as con:
        set_thresholds(con, model.id, own)
    manifest = publish(ws, model.id).manifest
    assert manifest.thresholds == own
    path = tmp_path / "m.onnx"
    path.write_bytes(ws.blobs.get(manifest.onnx_sha256))
    # Read back by ONNX Runtime itself, not by our parser: what any device finds in the file.
    meta = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
    assert json.loads(meta.custom_metadata_map["class_thresholds"]) == own
    assert OnnxDetector(path).thresholds == {0: 0.4, 1: 0.05}
