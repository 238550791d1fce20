"""The desired deployment state: what the catalog publishes to the blob store, how a device's answer
is worked out from it, and the canary bucketing both sides share. No DuckDB here: the API reads it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from edge.protocol import ArtifactManifest, DeploymentAnswer, Name
from edge.trust import canary_bucket  # the device checks its signed assignment with the same bucketing
from store.objects import ObjectStore

DESIRED_KEY = "registry/deployments.json"


def in_canary(device: str, canary_pct: float) -> bool:
    return canary_bucket(device) < canary_pct


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ActiveRollout(_Frozen):
    id: str
    model_id: str
    canary_pct: float = Field(gt=0.0, le=100.0)


class DesiredState(_Frozen):
    """`fleet`: the model every device runs outside the canary (None: each its installed model);
    `rollout`: the canary in progress, if any; `pins`: devices held on one model whatever else happens;
    `artifacts`: the manifest of every model named here (and only those may be downloaded)."""

    version: int = 1
    fleet: str | None = None
    rollout: ActiveRollout | None = None
    pins: dict[Name, str] = Field(default_factory=dict)
    artifacts: dict[str, ArtifactManifest] = Field(default_factory=dict)

    def downloadable(self) -> set[str]:
        """The blobs devices may fetch: the ONNX and reference set of every artifact named here."""
        return {sha for a in self.artifacts.values() for sha in (a.onnx_sha256, a.reference_sha256)}


def answer_for(state: DesiredState, device: str) -> DeploymentAnswer:
    """The model `device` should run: its pin, else the canary's model if its bucket is in, else the fleet's."""
    if (pinned := state.pins.get(device)) is not None:
        return _answer(state, device, pinned, "pinned", None)
    if state.rollout is not None and in_canary(device, state.rollout.canary_pct):
        return _answer(state, device, state.rollout.model_id, "canary", state.rollout.id)
    rollout_id = state.rollout.id if state.rollout else None
    if state.fleet is not None:
        return _answer(state, device, state.fleet, "fleet", rollout_id)
    return DeploymentAnswer(device=device, model_version=None, reason="none", rollout_id=rollout_id)


def _answer(state: DesiredState, device: str, model_id: str, reason: str, rollout_id: str | None) -> DeploymentAnswer:
    return DeploymentAnswer(device=device, model_version=model_id, reason=reason,  # type: ignore[arg-type]
                            rollout_id=rollout_id, artifact=state.artifacts[model_id])


def etag_for(answer: DeploymentAnswer) -> str:
    """A strong ETag over the answer's content: it changes exactly when what the device should do does."""
    body = json.dumps(answer.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()
    return f'"{hashlib.sha256(body).hexdigest()[:32]}"'


def publish_state(objects: ObjectStore, state: DesiredState) -> None:
    objects.put(DESIRED_KEY, state.model_dump_json(indent=1).encode())


class DesiredStateReader:
    """The published desired state, re-read at most every `ttl_s` seconds of `clock` (as RegistryReader)."""

    def __init__(self, objects: ObjectStore, ttl_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.objects, self.ttl_s, self._clock = objects, ttl_s, clock
        self._state = DesiredState()
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def current(self) -> DesiredState:
        if self._clock() - self._read_at > self.ttl_s:
            with self._lock:
                if self._clock() - self._read_at > self.ttl_s:
                    try:
                        self._state = DesiredState.model_validate_json(self.objects.get(DESIRED_KEY))
                    except KeyError:
                        self._state = DesiredState()  # nothing published yet: every device runs what it has
                    self._read_at = self._clock()
        return self._state
