"""The edge agent's frame loop: read, detect, track, alert, mine hard examples, spool.

Uploads, alerts and the operator endpoint run on their own threads; nothing here waits on a network.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import supervision as sv

from edge.alerts import AlertConfig, Alerter
from edge.client import IngestClient
from edge.detectors.base import Detector, thresholds_of
from edge.detectors.postprocess import class_evidence
from edge.frames import Frame
from edge.operator import OperatorEndpoint
from edge.protocol import CaptureMeta, Detection, Heartbeat, utc_now
from edge.spool import Spool, SpoolFull, SpoolWriteError
from edge.tracking import Tracker
from edge.triggers import Decision, HardExampleMiner, TriggerConfig
from edge.uploader import Uploader

if TYPE_CHECKING:
    from edge.updater import ModelUpdater


@dataclass
class AgentConfig:
    server: str
    token: str
    device: str
    camera: str = "cam0"
    spool_dir: Path = Path("edgeloop-spool")
    spool_max_bytes: int = 1024**3
    triggers: TriggerConfig = field(default_factory=TriggerConfig)
    alerts: AlertConfig | None = None
    operator_port: int | None = None  # None: no endpoint; 0: any free port
    heartbeat_interval_s: float = 30.0
    jpeg_quality: int = 90
    max_frames: int | None = None


class _Latency:
    """Rolling inference times: p50/p99 over the last `window` frames."""

    def __init__(self, window: int = 1000) -> None:
        self._ms: deque[float] = deque(maxlen=window)

    def add(self, ms: float) -> None:
        self._ms.append(ms)

    def percentiles(self) -> tuple[float, float]:
        if not self._ms:
            return 0.0, 0.0
        p50, p99 = np.percentile(np.fromiter(self._ms, float), [50, 99])
        return float(p50), float(p99)


class Agent:
    """`updater` (optional) follows deployments: it swaps models in between two frames (see `step`)."""

    def __init__(self, config: AgentConfig, detector: Detector, frames: Iterable[Frame],
                 updater: ModelUpdater | None = None) -> None:
        self.config, self.detector, self.frames, self.updater = config, detector, frames, updater
        self.spool = Spool(config.spool_dir, config.spool_max_bytes)
        self.uploader = Uploader(
            self.spool, lambda: IngestClient(config.server, config.token),
            heartbeat=self._heartbeat, heartbeat_interval_s=config.heartbeat_interval_s,
        )
        self.tracker = Tracker()
        self.miner = HardExampleMiner(config.triggers, names=detector.names)
        self.alerter = Alerter(config.alerts, config.device, config.camera) if config.alerts else None
        self._follow_thresholds()
        self.operator: OperatorEndpoint | None = None
        self._latency = _Latency()
        self._recent: deque[Frame] = deque(maxlen=4)  # a flicker may upload the previous frame
        self._started = time.monotonic()
        self._fps_window: deque[float] = deque(maxlen=60)
        self.frames_seen = 0
        self.spooled = 0
        self.spool_refused = 0
        self.errors = 0  # frames a model on probation failed on (each was run again on the previous model)
        # Consecutive frames per model, oldest first: where each swap fell, frame by frame.
        self._runs: deque[dict[str, Any]] = deque(maxlen=64)
        self.spool_write_errors = 0
        self.last_spool_error: str | None = None

    # ------------------------------------------------------------------ the loop

    def run(self, stop: threading.Event | None = None,
            on_status: Callable[[dict[str, Any]], None] | None = None, status_every_s: float = 0.5) -> dict[str, Any]:
        """Process frames until the source ends, `max_frames`, or `stop` is set; returns the summary."""
        stop = stop or threading.Event()
        if self.config.operator_port is not None:
            self.operator = OperatorEndpoint(self.miner.flag, self.status, port=self.config.operator_port)
        self.uploader.start()
        if self.updater:
            self.updater.start()
        next_status = time.monotonic()
        try:
            for frame in self.frames:
                self.step(frame)
                if on_status and time.monotonic() >= next_status:
                    on_status(self.status())
                    next_status = time.monotonic() + status_every_s
                if stop.is_set() or (self.config.max_frames and self.frames_seen >= self.config.max_frames):
                    break
        finally:
            close = getattr(self.frames, "close", None)
            if close:
                close()
        return self.status()

    def step(self, frame: Frame) -> Decision | None:
        """One frame through the pipeline; public so benchmarks can drive it frame by frame.

        A model swap happens here, before the frame, so each frame is run by exactly one model.
        """
        if self.updater is not None and (swapped := self.updater.swap_point(self.detector)) is not self.detector:
            self._switch(swapped)
        t0 = time.perf_counter()
        try:
            detections = self.detector.detect(frame.image)
        except Exception as exc:
            previous = self.updater.detect_failed(exc) if self.updater is not None else None
            if previous is None:
                raise
            self.errors += 1
            self._switch(previous)  # the same frame, on the model that ran before: none is dropped
            t0 = time.perf_counter()
            detections = self.detector.detect(frame.image)
        elapsed_ms = (time.perf_counter() - t0) * 1000
        self._latency.add(elapsed_ms)
        if self.updater is not None:
            self.updater.frame_done(elapsed_ms)
        self._count_run(frame.index)
        tracked = self.tracker.update(detections)
        # ByteTrack answers a frame without boxes with fresh Detections, dropping the frame's
        # metadata; the class evidence of exactly those frames is what rare_class looks at.
        tracked.metadata = {**detections.metadata, **tracked.metadata}
        if self.alerter:
            self.alerter.observe(tracked, frame.index, frame.captured_at)
        self._recent.append(frame)
        decision = self.miner.observe(frame.image, tracked, frame.index)
        if decision is not None:
            self._spool(decision)
        self.frames_seen += 1
        self._fps_window.append(time.perf_counter())
        return decision

    def _switch(self, detector: Detector) -> None:
        self.detector = detector
        self._latency = _Latency()  # heartbeats report the running model's latency, not a blend
        self._follow_thresholds()

    def _follow_thresholds(self) -> None:
        """Hand the running model's per-class thresholds to the triggers and the alerts, so that the
        frame a model first runs is judged by its own operating points (none: back to the defaults)."""
        thresholds = thresholds_of(self.detector)
        self.tracker.follow(min(thresholds.values()) if thresholds else None)
        self.miner.set_thresholds(thresholds)
        if self.alerter:
            self.alerter.set_thresholds(thresholds)

    def _count_run(self, index: int) -> None:
        version, last = self.detector.model_version, self._runs[-1] if self._runs else None
        if last and last["model_version"] == version and last["last_frame"] == index - 1:
            last["last_frame"], last["frames"] = index, last["frames"] + 1
        else:
            self._runs.append({"model_version": version, "first_frame": index, "last_frame": index, "frames": 1})

    def close(self, drain_timeout_s: float = 0.0) -> int:
        """Stop the helpers; wait up to `drain_timeout_s` for the spool to empty first.

        Returns how many captures are left to upload: they stay on disk for the next start.
        """
        if self.updater:
            self.updater.stop()
        if drain_timeout_s > 0:
            self.uploader.flush(drain_timeout_s)
        self.uploader.stop()
        left = self.spool.depth()
        if self.alerter:
            self.alerter.close(timeout=min(5.0, drain_timeout_s or 1.0))
        if self.operator:
            self.operator.close()
        self.spool.close()
        return left

    # ------------------------------------------------------------------ captures

    def _spool(self, decision: Decision) -> None:
        frame = next((f for f in reversed(self._recent) if f.index == decision.frame_index), self._recent[-1])
        h, w = decision.frame_bgr.shape[:2]
        meta = CaptureMeta(
            device=self.config.device, camera=self.config.camera, captured_at=frame.captured_at,
            frame_width=w, frame_height=h, model_version=self.detector.model_version,
            detections=_to_protocol(decision.detections, w, h), triggers=decision.triggers,
            source=frame.source, note=decision.note, class_evidence=_evidence(decision.detections),
            update_state=self.updater.report()[0] if self.updater else None,
        )
        ok, jpeg = cv2.imencode(".jpg", decision.frame_bgr, [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality])
        if not ok:
            return
        try:
            self.spool.put(meta.model_dump_json().encode(), jpeg.tobytes(), "image/jpeg", decision.priority)
            self.spooled += 1
        except SpoolFull:
            self.spool_refused += 1  # the spool already counts what it refused; this is for the status line
        except SpoolWriteError as exc:
            # A full or failing disk costs this hard example, never the frame loop: detection and alerts go on.
            self.spool_write_errors += 1
            self.last_spool_error = str(exc)

    # ------------------------------------------------------------------ health

    def _fps(self) -> float:
        if len(self._fps_window) < 2:
            return 0.0
        return (len(self._fps_window) - 1) / max(1e-9, self._fps_window[-1] - self._fps_window[0])

    def _heartbeat(self) -> Heartbeat:
        s = self.status()
        state, target, detail = self.updater.report() if self.updater else (None, None, None)
        return Heartbeat(
            device=self.config.device, sent_at=utc_now(), model_version=self.detector.model_version,
            fps=s["fps"], inference_ms_p50=s["inference_ms_p50"], inference_ms_p99=s["inference_ms_p99"],
            queue_depth=s["spool_depth"], dropped_frames=s["dropped_frames"], uptime_s=s["uptime_s"],
            frames=s["frames"], errors=self.errors, update_state=state, update_target=target[:128] if target else None,
            update_detail=detail[:500] if detail else None,
        )

    def status(self) -> dict[str, Any]:
        p50, p99 = self._latency.percentiles()
        source_stats = getattr(self.frames, "stats", lambda: {})()
        up = self.uploader.stats()
        return {
            "frames": self.frames_seen,
            "fps": round(self._fps(), 2),
            "inference_ms_p50": round(p50, 2),
            "inference_ms_p99": round(p99, 2),
            "dropped_frames": int(source_stats.get("frames_dropped", 0)),
            "reconnects": int(source_stats.get("reconnects", 0)),
            "spooled": self.spooled,
            "spool_depth": self.spool.depth(),
            "spool_refused": self.spool_refused,
            "spool_write_errors": self.spool_write_errors,
            "last_spool_error": self.last_spool_error,
            "uploaded": up.get("uploaded", 0),
            "upload_rejected": up.get("rejected", 0),
            "upload_retries": up.get("retries", 0),
            "alerts": self.alerter.stats() if self.alerter else None,
            "triggers": self.miner.stats(),
            "uptime_s": round(time.monotonic() - self._started, 1),
            "model_version": self.detector.model_version,
            "thresholds": {self.detector.names.get(c, str(c)): t
                           for c, t in sorted(thresholds_of(self.detector).items())},
            "errors": self.errors,
            "update": dict(zip(("state", "target", "detail"), self.updater.report())) if self.updater else None,
            "models_run": [dict(run) for run in self._runs],
        }


def _evidence(detections: sv.Detections) -> list[float] | None:
    """The frame's class evidence for the wire: 5 decimals say enough and keep the meta small."""
    evidence = class_evidence(detections)
    # Clipped: the protocol refuses values outside [0, 1], and a capture must never be lost over one.
    return None if evidence is None else [round(float(v), 5) for v in np.clip(evidence, 0.0, 1.0)]


def _to_protocol(detections: sv.Detections, width: int, height: int) -> list[Detection]:
    """Detections as the wire protocol carries them, clipped to the frame and non-degenerate."""
    if len(detections) == 0:
        return []
    xyxy = sv.clip_boxes(detections.xyxy.astype(np.float64), (width, height))
    names = detections.data.get("class_name")
    out = []
    for i, (x1, y1, x2, y2) in enumerate(xyxy):
        if x2 <= x1 or y2 <= y1:
            continue
        out.append(Detection(
            xyxy=(float(x1), float(y1), float(x2), float(y2)),
            confidence=float(detections.confidence[i]) if detections.confidence is not None else 1.0,
            class_id=int(detections.class_id[i]) if detections.class_id is not None else 0,
            class_name=str(names[i]) if names is not None else None,
        ))
    return out
