"""The deployment manifest's per-class thresholds: optional, checked, and absent from the wire when absent,
so that a manifest without them reads (and serializes) exactly as it did before the field existed."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from edge.protocol import ArtifactManifest, DeploymentAnswer

# A manifest as the control plane wrote it before thresholds existed, key for key.
OLD_MANIFEST = {
    "schema_version": 1,
    "model_version": "ppe-2026-01-07",
    "onnx_sha256": "a" * 64,
    "onnx_bytes": 12_345,
    "reference_sha256": "b" * 64,
    "reference_bytes": 678,
    "classes": ["helmet", "no_helmet", "no_wear", "wear"],
    "input_size": [320, 320],
    "metrics": {"map50": 0.61},
    "published_at": "2026-01-07T10:00:00Z",
}


def test_an_old_manifest_validates_and_serializes_as_before() -> None:
    manifest = ArtifactManifest.model_validate_json(json.dumps(OLD_MANIFEST))
    assert manifest.thresholds is None
    # No `"thresholds": null` on the wire: devices running older code refuse unknown keys.
    assert json.loads(manifest.model_dump_json()) == OLD_MANIFEST
    assert "thresholds" not in manifest.model_dump(mode="json")
    answer = DeploymentAnswer(device="cam-a", model_version=manifest.model_version, reason="fleet", artifact=manifest)
    assert "thresholds" not in answer.model_dump_json()


def test_a_manifest_carries_each_classs_threshold_by_name() -> None:
    manifest = ArtifactManifest.model_validate({**OLD_MANIFEST, "thresholds": {"no_helmet": 0.08, "helmet": 0.41}})
    assert manifest.thresholds == {"no_helmet": 0.08, "helmet": 0.41}
    again = ArtifactManifest.model_validate_json(manifest.model_dump_json())
    assert again == manifest and again.thresholds == {"no_helmet": 0.08, "helmet": 0.41}


@pytest.mark.parametrize(("thresholds", "why"), [
    ({"nohelmet": 0.1}, r"thresholds name \['nohelmet'\], which are not among the classes"),
    ({"helmet": 1.0}, "less than 1"),
    ({"helmet": 0.0}, "greater than 0"),
    ({"helmet": "high"}, "valid number"),
])
def test_a_manifest_with_bad_thresholds_is_refused(thresholds: dict, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        ArtifactManifest.model_validate({**OLD_MANIFEST, "thresholds": thresholds})
