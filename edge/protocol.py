"""The wire protocol between edge devices and the ingest API, defined once.

Both sides import these models: the device to build an upload, the server to validate it.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime, BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, field_validator, model_serializer,
    model_validator,
)

API_PREFIX = "/v1"
CAPTURES_PATH = f"{API_PREFIX}/captures"
HEARTBEAT_PATH = f"{API_PREFIX}/heartbeat"
DEPLOYMENT_PATH = f"{API_PREFIX}/deployment"
ARTIFACTS_PATH = f"{API_PREFIX}/artifacts"  # + "/{sha256}"
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png")
# Refusals about the device's token, not about what it sent: a device keeps its captures
# and retries later (a rotated token may arrive) instead of discarding them.
# A token that belongs to another device is the same kind of setup mistake (a swapped config file): keeping
# the captures loses nothing, while rejecting them would empty the whole spool into rejected/.
CREDENTIAL_REASONS = frozenset({"missing_token", "malformed_authorization", "unknown_token", "revoked_token",
                                "device_mismatch"})

# Device and camera names end up in storage keys and file names: one conservative
# alphabet, no leading dot, so that no name can climb out of a folder.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_NAME_RE = re.compile(NAME_PATTERN)

# Boxes may touch the frame edge; a detector's float maths may overshoot it by a hair.
BOX_TOLERANCE_PX = 1.0

Name = Annotated[
    str, Field(pattern=NAME_PATTERN, description="Letters, digits, '_', '.', '-'; 1-64 chars; no leading dot.")
]
Trigger = Literal["uncertainty", "flicker", "operator", "random", "rare_class"]
"""Why a frame was uploaded: a detection in the uncertainty band, a track that flickered
or changed class, a person flagged it as wrong, the unbiased random sample, or a watched
class the model almost saw (its evidence lies in a band below the operating threshold)."""
UpdateState = Literal["idle", "downloading", "building", "verifying", "probation", "refused", "rolled_back"]
"""Where a device following deployments stands: running what it should (idle), fetching, building
or checking a new model, running it on probation (its first frames), refused it (a bad artifact:
the running model kept running), or swapped it back out by itself (failed probation)."""


def is_safe_name(name: str) -> bool:
    """True when `name` can be used as a single path component without escaping."""
    return bool(_NAME_RE.fullmatch(name)) and ".." not in name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Detection(_Strict):
    """One box the on-device model predicted, in pixels of the uploaded frame."""

    xyxy: tuple[float, float, float, float]
    confidence: float = Field(ge=0.0, le=1.0)
    class_id: int = Field(ge=0, le=10_000)
    class_name: str | None = Field(default=None, max_length=128)

    @field_validator("xyxy")
    @classmethod
    def _ordered(cls, v: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        x1, y1, x2, y2 = v
        if not (x1 < x2 and y1 < y2):
            raise ValueError(f"box {v} must have x1 < x2 and y1 < y2")
        return v


class SourceRef(_Strict):
    """Where the frame came from: a file name, or a stream with frame index and time."""

    uri: str = Field(min_length=1, max_length=1024)
    frame_index: int | None = Field(default=None, ge=0)
    timestamp_s: float | None = Field(default=None, ge=0.0)


class CaptureMeta(_Strict):
    """The JSON part `meta` of `POST /v1/captures`.

    `class_evidence` (optional, added without a schema bump: older devices leave it out) is
    the model's per-class maximum score over the whole frame, before the confidence
    threshold, indexed by class id, each in [0, 1]. It tells how close the model came to
    seeing each class, which the boxes above the threshold cannot.
    """

    schema_version: Literal[1] = 1
    device: Name
    camera: Name
    captured_at: AwareDatetime
    frame_width: int = Field(gt=0, le=65_535)
    frame_height: int = Field(gt=0, le=65_535)
    model_version: str = Field(min_length=1, max_length=128)
    detections: list[Detection] = Field(default_factory=list, max_length=2_000)
    triggers: list[Trigger] = Field(min_length=1, max_length=8)
    source: SourceRef
    note: str | None = Field(default=None, max_length=2_000)
    class_evidence: list[Annotated[float, Field(ge=0.0, le=1.0)]] | None = Field(default=None, max_length=10_000)
    update_state: UpdateState | None = None  # optional, as class_evidence: older devices leave it out

    @field_validator("device", "camera")
    @classmethod
    def _no_dot_dot(cls, v: str) -> str:
        if not is_safe_name(v):
            raise ValueError(f"name {v!r} is not allowed")
        return v

    @model_validator(mode="after")
    def _boxes_inside_frame(self) -> CaptureMeta:
        w, h, tol = self.frame_width, self.frame_height, BOX_TOLERANCE_PX
        for i, d in enumerate(self.detections):
            x1, y1, x2, y2 = d.xyxy
            if x1 < -tol or y1 < -tol or x2 > w + tol or y2 > h + tol:
                raise ValueError(f"detections[{i}] box {d.xyxy} lies outside the {w}x{h} frame")
        return self


class Heartbeat(_Strict):
    """The JSON body of `POST /v1/heartbeat`: how a device is doing.

    The fields from `frames` on are optional (no schema bump: older devices leave them out): frames
    processed and detector errors since start, and where the device stands with deployments.
    """

    schema_version: Literal[1] = 1
    device: Name
    sent_at: AwareDatetime
    model_version: str = Field(min_length=1, max_length=128)
    fps: float = Field(ge=0.0)
    inference_ms_p50: float = Field(ge=0.0)
    inference_ms_p99: float = Field(ge=0.0)
    queue_depth: int = Field(ge=0)
    dropped_frames: int = Field(default=0, ge=0)
    uptime_s: float = Field(default=0.0, ge=0.0)
    frames: int | None = Field(default=None, ge=0)
    errors: int | None = Field(default=None, ge=0)
    update_state: UpdateState | None = None
    update_target: str | None = Field(default=None, max_length=128)  # the model version being installed
    update_detail: str | None = Field(default=None, max_length=500)  # why it was refused or rolled back


# -- deployments -------------------------------------------------------------------------------

Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class ReferenceDetection(_Strict):
    """A box the published model finds on a reference frame (pixels of that frame)."""

    xyxy: tuple[float, float, float, float]
    confidence: float = Field(ge=0.0, le=1.0)
    class_id: int = Field(ge=0, le=10_000)


class ReferenceFrame(_Strict):
    """A frame (lossless PNG, so every device decodes the very same pixels) and what must be found on it."""

    name: str = Field(max_length=256)
    png_base64: str
    detections: list[ReferenceDetection] = Field(default_factory=list, max_length=2_000)


class ReferenceSet(_Strict):
    """What a device checks a model it built against before using it: the publisher's own ONNX Runtime
    detections at the devices' operating point, and how far a build (TensorRT FP16) may stray."""

    schema_version: Literal[1] = 1
    conf: float = Field(gt=0.0, lt=1.0)
    iou: float = Field(gt=0.0, le=1.0)
    box_tol_px: float = Field(gt=0.0)
    conf_tol: float = Field(gt=0.0, lt=1.0)
    frames: list[ReferenceFrame] = Field(min_length=1, max_length=64)


class ArtifactManifest(_Strict):
    """A published model: the ONNX blob devices build from, its identity and the reference set's blob."""

    schema_version: Literal[1] = 1
    model_version: str = Field(min_length=1, max_length=128)  # the registry's model id, stamped in the ONNX
    onnx_sha256: Sha256Hex
    onnx_bytes: int = Field(gt=0)
    reference_sha256: Sha256Hex
    reference_bytes: int = Field(gt=0)
    classes: list[str] = Field(min_length=1, max_length=10_000)
    input_size: tuple[int, int]  # (h, w), static
    metrics: dict | None = None  # the gate's holdout metrics, when the model has been judged
    published_at: AwareDatetime
    thresholds: dict[str, Annotated[float, Field(gt=0.0, lt=1.0)]] | None = None
    """Each class's operating point (class name -> confidence), as stamped in the ONNX's metadata
    (`class_thresholds`); the device checks they agree. None: an older manifest, or a model without."""

    @model_validator(mode="after")
    def _thresholds_name_classes(self) -> ArtifactManifest:
        if self.thresholds and (unknown := sorted(set(self.thresholds) - set(self.classes))):
            raise ValueError(f"thresholds name {unknown}, which are not among the classes {self.classes}")
        return self

    @model_serializer(mode="wrap")
    def _omit_absent_thresholds(self, handler: SerializerFunctionWrapHandler):
        # Devices running older code refuse unknown keys (extra="forbid"), a `"thresholds": null`
        # included: a manifest without thresholds serializes exactly as before the field existed,
        # so they keep following deployments (and its deployment answer keeps its ETag).
        # No return annotation on purpose: pydantic would take it for the serialized schema, and
        # the API's OpenAPI document would lose the manifest's fields.
        data = handler(self)
        if self.thresholds is None:
            data.pop("thresholds", None)
        return data


class DeploymentAnswer(_Strict):
    """`GET /v1/deployment`: the model this device should run, and why. `artifact` None: no
    deployment names a model for it, so it runs the model it was installed with."""

    device: Name
    model_version: str | None
    reason: Literal["pinned", "canary", "fleet", "none"]
    rollout_id: str | None = None
    artifact: ArtifactManifest | None = None


class CaptureAccepted(BaseModel):
    """Answer to an upload: 201 when new, 200 with the same id when already stored."""

    id: str
    sha256: str
    duplicate: bool


class HeartbeatAccepted(BaseModel):
    id: str


class Problem(BaseModel):
    """Every 4xx answer: a machine-readable reason and a sentence for a person."""

    reason: str
    detail: str | list | dict


def capture_id_for(sha256: str) -> str:
    """Uploads are idempotent on the image's content: the capture id is its sha256."""
    return sha256


def utc_now() -> datetime:
    from datetime import timezone

    return datetime.now(timezone.utc)
