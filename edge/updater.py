"""The device side of rollout: poll the deployment, download and verify the artifact, build and check its
runtime off the frame loop, hand it to the loop to swap in between two frames, and roll back by itself.

One background thread does everything slow. The frame loop only calls `swap_point` before each frame and
`frame_done` after it: both are a few attribute reads, so the loop never waits on a download or a build.
On disk (`model_dir`): `downloads/<sha>.part` (resumable), `models/<sha>/` (complete and verified, made
whole by one rename), `engines/` (TensorRT cache) and `state.json` (what runs, what was refused).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import supervision as sv
from pydantic import ValidationError

from edge.client import IngestClient, TransientError, UploadRejected
from edge.detectors.base import Detector, load_detector, thresholds_of
from edge.detectors.metadata import ModelMetadata, file_sha256
from edge.protocol import ArtifactManifest, DeploymentAnswer, ReferenceSet, UpdateState
from edge.trust import TrustedInstaller, TrustError

log = logging.getLogger(__name__)

INSTALLED = "installed"  # the model the agent was started with (--model): it has no artifact
UpdateBackend = Literal["auto", "onnxruntime", "tensorrt"]


@dataclass(frozen=True)
class UpdaterConfig:
    server: str
    token: str
    model_dir: Path = Path("edgeloop-models")
    poll_s: float = 30.0
    jitter: float = 0.2  # each wait is poll_s * (1 +- jitter), so a fleet does not poll in step
    backend: UpdateBackend = "auto"  # auto: TensorRT where it imports and sees a GPU, else ONNX Runtime
    probation_frames: int = 30  # a new model's first frames, over which its latency is judged
    latency_budget_ms: float | None = None  # the new model's median over probation; None: factor x the old one's
    latency_factor: float = 3.0
    retry_refused_s: float = 3600.0  # a refused artifact is tried again after this (a fixed blob, a new GPU driver)
    conf: float = 0.25  # the agent's operating point (load_detector's defaults), which reference sets are made at
    iou: float = 0.7
    class_thresholds: bool = True  # each model's own per-class thresholds; False: every class at `conf` (--confidence)
    trust: TrustedInstaller | None = None  # signed rollouts: install only what TUF metadata names (--trust-root)


class Refused(Exception):
    """This artifact must not run here; the message says why (it is reported in heartbeats)."""


@dataclass
class Candidate:
    key: str  # the ONNX sha256, or INSTALLED
    version: str
    detector: Detector


@dataclass
class _Probation:
    candidate: Candidate
    previous: Candidate
    budget_ms: float
    latencies: list[float]


def reference_mismatch(detector: Detector, reference: ReferenceSet,
                       before_each: Callable[[], object] = lambda: None) -> str | None:
    """None when `detector` finds on every reference frame what the publisher's ONNX Runtime found there;
    otherwise the first difference. `before_each` runs before each frame (the updater waits for a gap there).

    The reference was made at `reference.conf`, with or without the model's per-class thresholds (a
    publisher may apply them); the device may run a class at yet another threshold (`--confidence`).
    Each class is compared where every one of those keeps boxes, from the highest up: a box below
    that may exist on one side only, as a box near the threshold may."""
    from edge.detectors.tensorrt_engine import detections_agree  # lazy: no TensorRT import, only its check

    default = float(getattr(detector, "conf", reference.conf))
    running, stamped = thresholds_of(detector), _model_thresholds(detector)
    comparable = {c: max(reference.conf, running.get(c, default), stamped.get(c, 0.0)) for c in detector.names}
    for frame in reference.frames:
        before_each()
        image = cv2.imdecode(np.frombuffer(base64.b64decode(frame.png_base64), np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            return f"reference frame {frame.name} does not decode"
        expected = sv.Detections(
            xyxy=np.array([d.xyxy for d in frame.detections], dtype=np.float32).reshape(-1, 4),
            confidence=np.array([d.confidence for d in frame.detections], dtype=np.float32),
            class_id=np.array([d.class_id for d in frame.detections], dtype=np.int64),
        )
        ok, why = detections_agree(expected, detector.detect(image), box_tol_px=reference.box_tol_px,
                                   conf_tol=reference.conf_tol, conf_threshold=max(reference.conf, default),
                                   class_thresholds=comparable)
        if not ok:
            return f"reference frame {frame.name}: {why}"
    return None


def _model_thresholds(detector: Detector) -> dict[int, float]:
    """The per-class thresholds stamped in the model, whether or not the detector applies them."""
    metadata = getattr(detector, "metadata", None)
    return dict(metadata.thresholds) if isinstance(metadata, ModelMetadata) else thresholds_of(detector)


def thresholds_mismatch(detector: Detector, manifest: ArtifactManifest) -> str | None:
    """None when the model carries the per-class thresholds its manifest announces (or the manifest,
    an older one, announces none); otherwise what differs. Read from the model's own metadata, so a
    device told to ignore them (`--confidence`) still refuses an artifact that contradicts itself."""
    if manifest.thresholds is None:
        return None
    named = {detector.names.get(c, str(c)): t for c, t in _model_thresholds(detector).items()}
    announced = manifest.thresholds
    if named.keys() != announced.keys() or any(abs(named[k] - announced[k]) > 1e-9 for k in named):
        return f"the model's own thresholds {dict(sorted(named.items()))} are not the manifest's {dict(sorted(announced.items()))}"
    return None


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tensorrt_usable() -> bool:
    """TensorRT imports and CUDA sees a GPU."""
    from edge.detectors.tensorrt_engine import TensorRTUnavailable, gpu_name, import_tensorrt

    try:
        import_tensorrt()
        gpu_name()
    except (TensorRTUnavailable, RuntimeError, OSError):
        return False
    return True


class ModelUpdater:
    """Follows the deployment answered for this device's token.

    `clock` and `wait` are its sense of time (as the uploader's); `rng` draws the poll jitter.
    Read `report()` for heartbeats: (state, target version, detail).
    """

    def __init__(
        self,
        config: UpdaterConfig,
        installed: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[threading.Event, float | None], object] = threading.Event.wait,
        rng: random.Random | None = None,
    ) -> None:
        self.config, self.installed = config, Path(installed)
        self._clock, self._wait, self._rng = clock, wait, rng or random.Random()
        self.dir = Path(config.model_dir)
        for sub in ("downloads", "models", "engines"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # guards the hand-over fields below between the loop and the thread
        self._ready: Candidate | None = None
        self._probation: _Probation | None = None
        self._failed: str | None = None  # set by frame_done: the probation verdict, acted on at the next swap point
        self._events: deque[tuple[str, Candidate, Candidate, str | None]] = deque()  # for the thread to persist
        self._recent_ms: deque[float] = deque(maxlen=100)  # the running model's latencies
        self.running: Candidate | None = None
        self.state: UpdateState = "idle"
        self.target: str | None = None
        self.detail: str | None = None
        self._refused: dict[str, tuple[str, float]] = {}
        self._previous_key: str | None = None
        self._classes: list[str] = []
        self._backend: str | None = None
        self._installed_sha256: str | None = None
        self._etag: str | None = None
        self._answer: DeploymentAnswer | None = None
        self._next_poll = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._frame_ended = threading.Event()  # set by frame_done: the loop is idle until its next frame is due
        self._last_frame_at = -math.inf
        self._thread: threading.Thread | None = None
        self._child: subprocess.Popen | None = None
        self.downloaded_bytes = 0  # over the network, since start: resumed downloads count only what was missing
        self.polls = 0  # deployment answers received (200 or 304)

    # ------------------------------------------------------------------ start-up

    def initial_detector(self) -> Detector:
        """The model to start with: the last one swapped in, if its files are whole, else the installed one."""
        saved = self._load_state()
        self._refused = {sha: (why, self._clock()) for sha, why in saved.get("refused", {}).items()}
        self._previous_key = saved.get("previous")
        current = saved.get("current")
        candidate = None
        if current and current != INSTALLED:
            try:
                manifest = self._verified(current)
                candidate = Candidate(current, manifest.model_version, self._build(self.dir / "models" / current))
            except (Refused, OSError, ValueError, RuntimeError) as exc:
                log.warning("the last deployed model %s cannot run (%s): starting with %s", current[:12], exc,
                            self.installed.name)
        if candidate is None:
            detector = self._load(self.installed)
            candidate = Candidate(INSTALLED, detector.model_version, detector)
        self.running = candidate
        self._classes = [candidate.detector.names[i] for i in sorted(candidate.detector.names)]
        self._save()
        return candidate.detector

    def start(self) -> None:
        if self.running is None:
            raise RuntimeError("call initial_detector() first: the updater must know what runs")
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="edge-updater", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._child is not None and self._child.poll() is None:
            self._child.kill()  # an engine build can take minutes; its cache write is atomic anyway
        if self._thread is not None:
            self._thread.join(timeout)

    def report(self) -> tuple[UpdateState, str | None, str | None]:
        with self._lock:
            return self.state, self.target, self.detail

    def told(self) -> dict | None:
        """What the server last answered: model_version, reason, rollout_id (None before the first answer)."""
        answer = self._answer
        return answer.model_dump(include={"model_version", "reason", "rollout_id"}) if answer else None

    # ------------------------------------------------------------------ the frame loop's side

    def swap_point(self, current: Detector) -> Detector:
        """Called before each frame: the detector to run it with. Swaps in a checked candidate, or back
        to the previous model when the candidate failed its probation."""
        if self._ready is None and self._failed is None:
            return current  # the common case: two attribute reads
        with self._lock:
            if self._failed is not None and self._probation is not None:
                return self._roll_back(self._failed)
            ready, self._ready = self._ready, None
            if ready is None:
                return current
            previous = self.running
            assert previous is not None
            budget = self.config.latency_budget_ms
            if budget is None:
                recent = statistics.median(self._recent_ms) if self._recent_ms else float("inf")
                budget = self.config.latency_factor * recent
            self._probation = _Probation(ready, previous, budget, [])
            self.running = ready
            self._recent_ms.clear()
            self.state, self.target, self.detail = "probation", ready.version, None
            self._events.append(("swapped", ready, previous, None))
        self._wake.set()
        return ready.detector

    def frame_done(self, latency_ms: float) -> None:
        """Called after each frame with its inference time: judges a new model over its first frames."""
        self._recent_ms.append(latency_ms)
        self._last_frame_at = time.monotonic()
        self._frame_ended.set()
        probation = self._probation
        if probation is None or self._failed is not None:
            return
        probation.latencies.append(latency_ms)
        if len(probation.latencies) < self.config.probation_frames:
            return
        median = statistics.median(probation.latencies)
        with self._lock:
            if median > probation.budget_ms:
                self._failed = (f"median inference {median:.1f} ms over its first {len(probation.latencies)} "
                                f"frames exceeds the budget of {probation.budget_ms:.1f} ms")
                return
            self._probation = None
            self.state, self.detail = "idle", None
            self._events.append(("passed", probation.candidate, probation.previous, None))
        self._wake.set()

    def detect_failed(self, error: Exception) -> Detector | None:
        """The running model raised on a frame: a model on probation is rolled back at once (the caller
        runs the same frame on the returned previous model); otherwise None, and the error is the caller's."""
        with self._lock:
            if self._probation is None:
                return None
            return self._roll_back(f"it raised {type(error).__name__} on a frame: {error}")

    def _roll_back(self, why: str) -> Detector:
        assert self._probation is not None  # the caller holds the lock
        failed, previous = self._probation.candidate, self._probation.previous
        self._probation, self._failed = None, None
        self.running = previous
        self._recent_ms.clear()
        self._refused[failed.key] = (why, self._clock())
        self.state, self.target, self.detail = "rolled_back", failed.version, why
        self._events.append(("rolled_back", failed, previous, why))
        self._wake.set()
        return previous.detector

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        client = IngestClient(self.config.server, self.config.token)
        try:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    self._settle()
                    if self._clock() >= self._next_poll:
                        self._poll(client)
                        self._next_poll = self._clock() + self._interval()
                    self._advance(client)
                    self._settle()
                except Exception as exc:  # the thread must outlive anything, and the loop keeps its model
                    log.exception("updater step failed")
                    self._set("refused" if isinstance(exc, Refused) else self.state, detail=str(exc))
                self._wait(self._wake, max(0.0, self._next_poll - self._clock()))
        finally:
            client.close()

    def _interval(self) -> float:
        return self.config.poll_s * (1 + self.config.jitter * (2 * self._rng.random() - 1))

    def _poll(self, client: IngestClient) -> None:
        try:
            answer, etag = client.deployment(self._etag)
        except (TransientError, UploadRejected) as exc:
            log.info("deployment poll failed: %s", exc)  # keep running what runs; ask again next time
            return
        self.polls += 1
        if answer is not None:
            self._answer, self._etag = answer, etag
            self._save()  # what it was last told, for a person (or a test) looking at the device

    def _settle(self) -> None:
        """Persist what the frame loop did (swaps, probation verdicts) and let go of models no longer needed."""
        while self._events:
            kind, candidate, previous, why = self._events.popleft()
            if kind == "rolled_back":
                log.warning("rolled back %s to %s: %s", candidate.version, previous.version, why)
                _close(candidate.detector)
            elif kind == "passed":
                log.info("%s passed probation", candidate.version)
                _close(previous.detector)
            if kind == "swapped":
                self._previous_key = previous.key
            self._save()
            if kind == "passed":
                self._collect_garbage()

    def _advance(self, client: IngestClient) -> None:
        """One step towards the answered model, if there is one to take and nothing is pending."""
        if self._answer is None or self._ready is not None or self._probation is not None:
            return
        manifest = self._answer.artifact
        key = manifest.onnx_sha256 if manifest else INSTALLED
        assert self.running is not None
        if key == self.running.key or (self.running.key == INSTALLED and key == self._installed_sha()):
            self._set("idle")  # where it should be (a refusal of something else is history now)
            return
        if key in self._refused:
            if self._clock() - self._refused[key][1] < self.config.retry_refused_s:
                return
            del self._refused[key]
        version = manifest.model_version if manifest else f"{INSTALLED}:{self.installed.name}"
        try:
            candidate = self._prepare(client, manifest) if manifest else self._prepare_installed()
        except Refused as exc:
            if self._stop.is_set():
                return  # stopped mid-build (a killed engine build): nothing was wrong with the artifact
            log.warning("refused %s: %s", version, exc)
            if key != INSTALLED:
                shutil.rmtree(self.dir / "models" / key, ignore_errors=True)  # it will never run: free the space
            self._refused[key] = (str(exc), self._clock())
            self._set("refused", version, str(exc))
            self._save()
            return
        except (TransientError, UploadRejected) as exc:  # a cut link, or the deployment changed meanwhile
            self._set("downloading", version, f"will resume: {exc}")
            return
        if self._stop.is_set():
            _close(candidate.detector)
            return
        with self._lock:
            self._ready = candidate  # the frame loop takes it at its next swap point

    def _installed_sha(self) -> str:
        if self._installed_sha256 is None:  # the installed file may be a published artifact itself
            self._installed_sha256 = file_sha256(self.installed)
        return self._installed_sha256

    def _prepare_installed(self) -> Candidate:
        self._set("building", f"{INSTALLED}:{self.installed.name}")
        try:
            detector = self._load(self.installed)
        except (ValueError, RuntimeError, OSError) as exc:
            raise Refused(f"the installed model {self.installed.name} does not load: {exc}") from exc
        return Candidate(INSTALLED, detector.model_version, detector)

    def _prepare(self, client: IngestClient, manifest: ArtifactManifest) -> Candidate:
        version, sha = manifest.model_version, manifest.onnx_sha256
        if manifest.classes != self._classes:
            raise Refused(f"its classes {manifest.classes} are not the running model's {self._classes}")
        folder = self.dir / "models" / sha
        if folder.is_dir():
            try:
                self._verified(sha)  # downloaded before (a restart, or the way back after a rollback)
            except (Refused, OSError, ValueError):
                shutil.rmtree(folder, ignore_errors=True)  # the disk's fault, not the artifact's: fetch it again
        if not folder.is_dir():
            self._set("downloading", version)
            self._install(client, manifest)
        if self.config.trust is not None:  # before the ONNX is ever parsed: an unsigned file is not even loaded
            try:
                self.config.trust.check(version, (folder / "model.onnx").read_bytes())
            except TrustError as exc:
                raise Refused(f"not signed for this fleet: {exc}") from exc
        self._set("building", version)
        try:
            self._between_frames()
            detector = self._build(folder)
        except Refused:
            raise
        except Exception as exc:  # ONNX Runtime and TensorRT raise many kinds for a file that is not a model
            raise Refused(f"it does not load: {type(exc).__name__}: {exc}") from exc
        self._set("verifying", version)
        try:
            names = [detector.names[i] for i in sorted(detector.names)]
            if names != manifest.classes:
                raise Refused(f"the model's own classes {names} are not the manifest's {manifest.classes}")
            if tuple(detector.input_size) != tuple(manifest.input_size):
                raise Refused(f"its input {detector.input_size} is not the manifest's {manifest.input_size}")
            if why := thresholds_mismatch(detector, manifest):
                raise Refused(why)
            reference = ReferenceSet.model_validate_json((folder / "reference.json").read_bytes())
            if why := reference_mismatch(detector, reference, self._between_frames):
                raise Refused(f"failed its reference check: {why}")
        except BaseException:
            _close(detector)
            raise
        return Candidate(sha, version, detector)

    def _between_frames(self) -> None:
        """Return just after the frame loop finishes a frame, so that a build step, a reference frame or a MiB
        of download uses the idle time before the next frame is due instead of competing with it for the
        device's few cores. Real time, not the updater's clock: this paces work, it decides nothing. When no
        frame ran in the last second (camera down, loop not started), there is nothing to spare: return."""
        if time.monotonic() - self._last_frame_at > 1.0:
            return
        self._frame_ended.clear()
        self._frame_ended.wait(0.5)

    def _install(self, client: IngestClient, manifest: ArtifactManifest) -> None:
        """Download both blobs, check them, and make `models/<sha>/` appear whole with one rename."""
        sha = manifest.onnx_sha256
        reference = self._fetch(client, manifest.reference_sha256, manifest.reference_bytes, "reference set")
        try:
            ReferenceSet.model_validate_json(reference.read_bytes())
        except ValidationError as exc:
            reference.unlink()
            raise Refused(f"its reference set does not parse: {exc.error_count()} error(s)") from exc
        onnx = self._fetch(client, sha, manifest.onnx_bytes, "ONNX")
        staging = self.dir / "models" / f".staging-{sha}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        os.replace(onnx, staging / "model.onnx")
        os.replace(reference, staging / "reference.json")
        _write_atomically(staging / "manifest.json", manifest.model_dump_json().encode())
        _fsync_dir(staging)
        os.replace(staging, self.dir / "models" / sha)
        _fsync_dir(self.dir / "models")

    def _fetch(self, client: IngestClient, sha: str, size: int, what: str) -> Path:
        """Blob `sha` of `size` bytes, downloaded (resuming a part left by a cut link or a kill) and checked."""
        part = self.dir / "downloads" / f"{sha}.part"
        for attempt in range(2):
            had = part.stat().st_size if part.exists() else 0
            try:
                got = client.download(sha, part, limit=size, pace=self._between_frames)
            finally:  # a cut link keeps what arrived: count it too
                self.downloaded_bytes += max(0, (part.stat().st_size if part.exists() else 0) - had)
            problem = None
            if got < size:
                problem = f"the {what} is truncated: {got} of {size} bytes"
            elif got > size:
                problem = f"the {what} is longer than the {size} bytes announced"
            elif file_sha256(part) != sha:
                problem = f"the {what}'s sha256 does not match"
            if problem is None:
                return part
            part.unlink(missing_ok=True)
            if attempt == 0 and had > 0 and got == size:
                continue  # a resumed part may end in bytes a power cut mangled: once more from zero
            raise Refused(problem)
        raise AssertionError("unreachable")

    def _verified(self, sha: str) -> ArtifactManifest:
        """The manifest of installed artifact `sha`, after checking its ONNX still hashes to it."""
        folder = self.dir / "models" / sha
        manifest = ArtifactManifest.model_validate_json((folder / "manifest.json").read_bytes())
        if manifest.onnx_sha256 != sha or file_sha256(folder / "model.onnx") != sha:
            shutil.rmtree(folder, ignore_errors=True)
            raise Refused("its ONNX on disk no longer matches its sha256")
        return manifest

    def _build(self, folder: Path) -> Detector:
        """The runtime for the ONNX in `folder`: an ONNX Runtime session, or a TensorRT FP16 engine built
        (once, cached) in a child process, so that a minutes-long build neither holds this process's
        interpreter nor takes it down if TensorRT crashes."""
        if self._backend is None:
            wanted = self.config.backend
            self._backend = ("tensorrt" if tensorrt_usable() else "onnxruntime") if wanted == "auto" else wanted
        onnx = folder / "model.onnx"
        if self._backend == "onnxruntime":
            return self._load(onnx, backend="onnxruntime")
        return self._load(self._build_engine(onnx), backend="tensorrt")

    def _load(self, path: Path, backend: UpdateBackend = "auto") -> Detector:
        """A model file at the agent's operating point: `conf`, `iou`, and its own thresholds or not."""
        return load_detector(path, backend=backend, conf=self.config.conf, iou=self.config.iou,
                             class_thresholds=self.config.class_thresholds)

    def _build_engine(self, onnx: Path) -> Path:
        cmd = [sys.executable, "-m", "edge.updater", "build-engine", str(onnx), str(self.dir / "engines")]
        self._child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = self._child.communicate()
        code, self._child = self._child.returncode, None
        if code != 0:
            raise Refused(f"TensorRT could not build an engine from it: {err.strip()[-500:]}")
        return Path(out.strip().splitlines()[-1])

    # ------------------------------------------------------------------ bookkeeping

    def _set(self, state: UpdateState, target: str | None = None, detail: str | None = None) -> None:
        with self._lock:
            target = target if target is not None or state == "idle" else self.target
            if (self.state, self.target, self.detail) == (state, target, detail):
                return
            self.state, self.target, self.detail = state, target, detail
        self._save()

    def _load_state(self) -> dict:
        try:
            return json.loads((self.dir / "state.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _save(self) -> None:
        with self._lock:
            state = {
                "current": self.running.key if self.running else None,
                "current_version": self.running.version if self.running else None,
                "previous": self._previous_key,
                "refused": {sha: why for sha, (why, _) in self._refused.items()},
                "update_state": self.state, "update_target": self.target, "update_detail": self.detail,
                "told": self.told(),
            }
        _write_atomically(self.dir / "state.json", json.dumps(state, indent=1).encode())

    def _collect_garbage(self) -> None:
        """Keep the running and the previous model (the way back) on disk; drop older ones and stale parts."""
        keep = {self.running.key if self.running else None, self._previous_key}
        for folder in (self.dir / "models").iterdir():
            if folder.name not in keep:
                shutil.rmtree(folder, ignore_errors=True)
        for part in (self.dir / "downloads").iterdir():
            part.unlink(missing_ok=True)


def _close(detector: Detector) -> None:
    close = getattr(detector, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):
            close()


def _main(argv: list[str]) -> int:
    """`python -m edge.updater build-engine ONNX CACHE_DIR`: the child process that builds an engine."""
    if len(argv) != 3 or argv[0] != "build-engine":
        print("usage: python -m edge.updater build-engine ONNX CACHE_DIR", file=sys.stderr)
        return 2
    from edge.detectors.tensorrt_engine import ensure_engine

    os.nice(10)  # the camera's frame loop comes first
    print(ensure_engine(argv[1], argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
