"""The device side of rollout: poll the deployment, and take each answered model through its jobs off the
frame loop: fetch it (`model_fetch`), build and check its runtime (`model_build`), hand it to the loop to
swap in between two frames and roll back by itself (`probation`).

One background thread does everything slow. The frame loop only calls `swap_point` before each frame and
`frame_done` after it: both are a few attribute reads, so the loop never waits on a download or a build.
On disk (`model_dir`): `downloads/<sha>.part` (resumable), `models/<sha>/` (complete and verified, made
whole by one rename), `engines/` (TensorRT cache) and `state.json` (what runs, what was refused).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.client import IngestClient, TransientError, UploadRejected
from edge.detectors.base import Detector
from edge.detectors.metadata import file_sha256
from edge.durable import write_atomically
from edge.model_build import ModelBuilder, UpdateBackend, close_detector
from edge.model_fetch import ArtifactFetcher
from edge.probation import Candidate, Probation
from edge.protocol import ArtifactManifest, DeploymentAnswer, UpdateState
from edge.refusal import Refused
from edge.trust import TrustedInstaller, TrustError

log = logging.getLogger(__name__)

INSTALLED = "installed"  # the model the agent was started with (--model): it has no artifact


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
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._probation = Probation(probation_frames=config.probation_frames,
                                    latency_budget_ms=config.latency_budget_ms,
                                    latency_factor=config.latency_factor, clock=clock, wake=self._wake)
        pace = self._probation.between_frames
        self._fetcher = ArtifactFetcher(self.dir, pace)
        self._builder = ModelBuilder(self.dir / "engines", backend=config.backend, conf=config.conf, iou=config.iou,
                                     class_thresholds=config.class_thresholds, pace=pace)
        self._previous_key: str | None = None
        self._classes: list[str] = []
        self._installed_sha256: str | None = None
        self._etag: str | None = None
        self._answer: DeploymentAnswer | None = None
        self._next_poll = 0.0
        self._thread: threading.Thread | None = None
        self.polls = 0  # deployment answers received (200 or 304)

    @property
    def downloaded_bytes(self) -> int:
        """Over the network, since start: resumed downloads count only what was missing."""
        return self._fetcher.downloaded_bytes

    # ------------------------------------------------------------------ start-up

    def initial_detector(self) -> Detector:
        """The model to start with: the last one swapped in, if its files are whole, else the installed one."""
        saved = self._load_state()
        self._probation.refused = {sha: (why, self._clock()) for sha, why in saved.get("refused", {}).items()}
        self._previous_key = saved.get("previous")
        current = saved.get("current")
        candidate = None
        if current and current != INSTALLED:
            try:
                manifest = self._fetcher.verified(current)
                detector = self._builder.build(self._fetcher.folder(current))
                candidate = Candidate(current, manifest.model_version, detector)
            except (Refused, OSError, ValueError, RuntimeError) as exc:
                log.warning("the last deployed model %s cannot run (%s): starting with %s", current[:12], exc,
                            self.installed.name)
        if candidate is None:
            detector = self._builder.load(self.installed)
            candidate = Candidate(INSTALLED, detector.model_version, detector)
        self._probation.running = candidate
        self._classes = [candidate.detector.names[i] for i in sorted(candidate.detector.names)]
        self._save()
        return candidate.detector

    def start(self) -> None:
        if self._probation.running is None:
            raise RuntimeError("call initial_detector() first: the updater must know what runs")
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="edge-updater", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._builder.kill()
        if self._thread is not None:
            self._thread.join(timeout)

    def report(self) -> tuple[UpdateState, str | None, str | None]:
        return self._probation.report()

    def told(self) -> dict | None:
        """What the server last answered: model_version, reason, rollout_id (None before the first answer)."""
        answer = self._answer
        return answer.model_dump(include={"model_version", "reason", "rollout_id"}) if answer else None

    # ------------------------------------------------------------------ the frame loop's side (see probation)

    def swap_point(self, current: Detector) -> Detector:
        """Called before each frame: the detector to run it with (see `Probation.swap_point`)."""
        return self._probation.swap_point(current)

    def frame_done(self, latency_ms: float) -> None:
        """Called after each frame with its inference time (see `Probation.frame_done`)."""
        self._probation.frame_done(latency_ms)

    def detect_failed(self, error: Exception) -> Detector | None:
        """The running model raised on a frame (see `Probation.detect_failed`)."""
        return self._probation.detect_failed(error)

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
                    self._set("refused" if isinstance(exc, Refused) else self._probation.state, detail=str(exc))
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
        while (event := self._probation.next_event()) is not None:
            kind, candidate, previous, why = event
            if kind == "rolled_back":
                log.warning("rolled back %s to %s: %s", candidate.version, previous.version, why)
                close_detector(candidate.detector)
            elif kind == "passed":
                log.info("%s passed probation", candidate.version)
                close_detector(previous.detector)
            if kind == "swapped":
                self._previous_key = previous.key
            self._save()
            if kind == "passed":
                running = self._probation.running
                # Keep the running and the previous model (the way back) on disk.
                self._fetcher.collect_garbage({running.key if running else None, self._previous_key})

    def _advance(self, client: IngestClient) -> None:
        """One step towards the answered model, if there is one to take and nothing is pending."""
        if self._answer is None or self._probation.busy():
            return
        manifest = self._answer.artifact
        key = manifest.onnx_sha256 if manifest else INSTALLED
        running, refused = self._probation.running, self._probation.refused
        assert running is not None
        if key == running.key or (running.key == INSTALLED and key == self._installed_sha()):
            self._set("idle")  # where it should be (a refusal of something else is history now)
            return
        if key in refused:
            if self._clock() - refused[key][1] < self.config.retry_refused_s:
                return
            del refused[key]
        version = manifest.model_version if manifest else f"{INSTALLED}:{self.installed.name}"
        try:
            candidate = self._prepare(client, manifest) if manifest else self._prepare_installed()
        except Refused as exc:
            if self._stop.is_set():
                return  # stopped mid-build (a killed engine build): nothing was wrong with the artifact
            log.warning("refused %s: %s", version, exc)
            if key != INSTALLED:
                self._fetcher.discard(key)
            refused[key] = (str(exc), self._clock())
            self._set("refused", version, str(exc))
            self._save()
            return
        except (TransientError, UploadRejected) as exc:  # a cut link, or the deployment changed meanwhile
            self._set("downloading", version, f"will resume: {exc}")
            return
        if self._stop.is_set():
            close_detector(candidate.detector)
            return
        self._probation.offer(candidate)

    def _installed_sha(self) -> str:
        if self._installed_sha256 is None:  # the installed file may be a published artifact itself
            self._installed_sha256 = file_sha256(self.installed)
        return self._installed_sha256

    def _prepare_installed(self) -> Candidate:
        self._set("building", f"{INSTALLED}:{self.installed.name}")
        try:
            detector = self._builder.load(self.installed)
        except (ValueError, RuntimeError, OSError) as exc:
            raise Refused(f"the installed model {self.installed.name} does not load: {exc}") from exc
        return Candidate(INSTALLED, detector.model_version, detector)

    def _prepare(self, client: IngestClient, manifest: ArtifactManifest) -> Candidate:
        version, sha = manifest.model_version, manifest.onnx_sha256
        if manifest.classes != self._classes:
            raise Refused(f"its classes {manifest.classes} are not the running model's {self._classes}")
        if not self._fetcher.have(sha):
            self._set("downloading", version)
            self._fetcher.install(client, manifest)
        folder = self._fetcher.folder(sha)
        if self.config.trust is not None:  # before the ONNX is ever parsed: an unsigned file is not even loaded
            try:
                self.config.trust.check(version, (folder / "model.onnx").read_bytes())
            except TrustError as exc:
                raise Refused(f"not signed for this fleet: {exc}") from exc
        self._set("building", version)
        detector = self._builder.build_checked(folder, manifest, on_verify=lambda: self._set("verifying", version))
        return Candidate(sha, version, detector)

    # ------------------------------------------------------------------ bookkeeping

    def _set(self, state: UpdateState, target: str | None = None, detail: str | None = None) -> None:
        if self._probation.set_status(state, target, detail):
            self._save()

    def _load_state(self) -> dict:
        try:
            return json.loads((self.dir / "state.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _save(self) -> None:
        probation = self._probation
        with probation.lock:
            running = probation.running
            state = {
                "current": running.key if running else None,
                "current_version": running.version if running else None,
                "previous": self._previous_key,
                "refused": {sha: why for sha, (why, _) in probation.refused.items()},
                "update_state": probation.state, "update_target": probation.target,
                "update_detail": probation.detail,
                "told": self.told(),
            }
        write_atomically(self.dir / "state.json", json.dumps(state, indent=1).encode())
