"""`edgeloop agent`: assemble the agent from command-line settings and run it with a live status line.

SIGTERM and Ctrl-C stop it cleanly, even while its camera is down: the spool drains for up to `drain_s`,
the summary is returned, and whatever is still spooled is uploaded on the next start.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape

from edge.agent import Agent, AgentConfig
from edge.alerts import AlertConfig
from edge.client import IngestClient, TransientError, UploadRejected, refusal_hint
from edge.detectors.base import Detector, thresholds_of
from edge.detectors.load import load_detector
from edge.model_build import UpdateBackend
from edge.protocol import is_safe_name
from edge.sources import is_live, open_source
from edge.triggers import TriggerConfig
from edge.trust import TrustedInstaller, is_tuf_root
from edge.updater import ModelUpdater, UpdaterConfig

DEFAULT_CONFIDENCE = 0.25  # load_detector's default: ultralytics' predict default
RARE_BAND_LOW = 0.001  # the rare band's default low end; its high end is the detection threshold
LIVE_BUDGET_PER_HOUR = 120.0  # a camera never ends, so its uploads are rationed unless told otherwise
MODEL_SUFFIXES = (".onnx", ".engine")


class AgentSetupError(Exception):
    """A setting the agent cannot start with, phrased for the person at the terminal."""


def _device_name(server: str, token: str, attempts: int = 5) -> str:
    """Ask the server whose token this is, retrying briefly: the API may be starting too."""
    for attempt in range(attempts):
        try:
            with IngestClient(server, token, timeout_s=5) as client:
                return client.whoami()
        except UploadRejected as exc:
            raise AgentSetupError(refusal_hint(exc, server)) from exc
        except TransientError:
            time.sleep(min(8.0, 0.5 * 2**attempt))
    raise AgentSetupError(f"cannot reach {server} to learn the device name; pass --device to start offline")


def upload_budget(source: str, budget_per_hour: float | None) -> float | None:
    """Uploads allowed per hour: as given; else LIVE_BUDGET_PER_HOUR for a live source (rtsp, usb), and no
    budget for a file or folder, which ends by itself and was chosen by someone to be looked at."""
    if budget_per_hour is not None:
        return budget_per_hour
    return LIVE_BUDGET_PER_HOUR if is_live(source) else None


def status_line(s: dict[str, Any]) -> str:
    alerts = s["alerts"]["sent"] if s["alerts"] else "-"
    return (f"{s['frames']} frames  {s['fps']:.1f} fps  infer p50 {s['inference_ms_p50']:.1f} ms "
            f"p99 {s['inference_ms_p99']:.1f} ms  dropped {s['dropped_frames']}  spool {s['spool_depth']}  "
            f"uploaded {s['uploaded']}  alerts {alerts}  model {s['model_version']}"
            + (" (" + " ".join(filter(None, (s["update"]["state"], s["update"]["target"]))) + ")"
               if s.get("update") and s["update"]["state"] != "idle" else ""))


def _rare_band_check(detector: Detector, watch: dict[str, int], band: tuple[float, float]) -> None:
    """An explicit rare band must end at or below each watched class's detection threshold (its own, else
    the global one): evidence above it already gives the class a box."""
    own, default = thresholds_of(detector), float(getattr(detector, "conf", 1.0))
    for name, class_id in watch.items():
        threshold = own.get(class_id, default)
        if band[1] > threshold:
            raise AgentSetupError(f"--rare-band high {band[1]} lies above the detection threshold {threshold} of "
                                  f"{name}: such frames already have a box of the class")


def run_agent(
    *, source: str, model: Path, server: str, token: str, device: str | None = None, camera: str = "cam0",
    spool: Path = Path("edgeloop-spool"), spool_max_bytes: int = 1024**3, alert_webhook: str | None = None,
    alert_secret: str | None = None, alert_classes: list[str] | None = None, alert_confidence: float | None = None,
    operator_port: int | None = None, random_rate: float = 0.01, budget_per_hour: float | None = None,
    watch_classes: list[str] | None = None, rare_band: tuple[float, float] | None = None,
    rare_top: float = 0.05, confidence: float | None = None,
    heartbeat_s: float = 30.0, max_frames: int | None = None, realtime: bool = False, drain_s: float = 10.0,
    live: bool = True,
    console: Console | None = None, loop: bool = False, follow_deployments: bool = False,
    model_dir: Path = Path("edgeloop-models"), poll_s: float = 30.0, update_backend: UpdateBackend = "auto",
    probation_frames: int = 30, latency_budget_ms: float | None = None, trust_root: Path | None = None,
) -> dict[str, Any]:
    """Assemble and run the agent. `confidence`, `alert_confidence` and `rare_band` None mean "not set by
    the person": the model's per-class thresholds then decide (DESIGN decision 9), else the old defaults
    (0.25, 0.85, and 0.001 up to the detection threshold). Set, each one wins for every class.
    `budget_per_hour` None: see `upload_budget`.

    A server that refuses the device (its token, or a URL with no API) is said once on `console` and sent
    nothing more: the captures stay in the spool for the next start, and the summary counts the refusals."""
    console = console or Console(stderr=True)
    if confidence is not None and not 0.0 < confidence < 1.0:
        raise AgentSetupError(f"--confidence {confidence} must lie in (0, 1)")
    conf = DEFAULT_CONFIDENCE if confidence is None else confidence
    if not Path(model).is_file():
        raise AgentSetupError(f"--model {model}: no such file")
    if Path(model).suffix.lower() not in MODEL_SUFFIXES:
        raise AgentSetupError(
            f"--model {model}: the agent runs .onnx (ONNX Runtime) or .engine (TensorRT) models; export one with "
            f"`edgeloop publish MODEL` on the control plane, or `yolo export model={model} format=onnx`")
    if not is_safe_name(camera):
        raise AgentSetupError(f"--camera {camera!r} may only use letters, digits, '_', '.', '-'")
    alerts = None
    if alert_webhook:
        if not alert_secret or not alert_classes:
            raise AgentSetupError("--alert-webhook needs --alert-secret and --alert-classes")
        try:
            alerts = AlertConfig(alert_webhook, alert_secret, set(alert_classes), min_confidence=alert_confidence)
        except ValueError as exc:
            raise AgentSetupError(f"--alert-secret: {exc}") from exc
    trust = None
    if trust_root is not None:  # signed rollouts: the root pinned at install is the only key trusted
        if not follow_deployments:
            raise AgentSetupError("--trust-root checks the models deployments name: add --follow-deployments")
        if not is_tuf_root(Path(trust_root)):
            raise AgentSetupError(f"--trust-root {trust_root}: not a TUF root metadata file (`edgeloop keys init` "
                                  "writes root.json)")
        device = device or _device_name(server, token)
        trust = TrustedInstaller(root=Path(trust_root), metadata_dir=model_dir / "tuf", server=server, token=token,
                                 device=device)
    updater = None
    try:
        if follow_deployments:
            updater = ModelUpdater(UpdaterConfig(
                server=server, token=token, model_dir=model_dir, poll_s=poll_s, backend=update_backend,
                probation_frames=probation_frames, latency_budget_ms=latency_budget_ms,
                conf=conf, class_thresholds=confidence is None, trust=trust,
            ), installed=model)
            detector = updater.initial_detector()  # the last model deployed here, if it is whole
        else:
            detector = load_detector(model, conf=conf, class_thresholds=confidence is None)
    except (ValueError, RuntimeError, OSError) as exc:
        raise AgentSetupError(f"--model {model}: {exc}") from exc
    if alerts and (unknown := set(alert_classes or []) - set(detector.names.values())):
        raise AgentSetupError(f"--alert-classes {sorted(unknown)} are not classes of the model "
                              f"({', '.join(detector.names.values())})")
    names = {name: class_id for class_id, name in detector.names.items()}
    if unknown := [c for c in watch_classes or [] if c not in names]:
        raise AgentSetupError(f"--watch-classes {unknown[0]!r} is not a class of the model "
                              f"({', '.join(detector.names.values())})")
    try:
        # Not set: the band ends at the detection threshold, each watched class's own where the model has one.
        triggers = TriggerConfig(random_rate=random_rate, budget_per_hour=upload_budget(source, budget_per_hour),
                                 watch_classes=tuple(names[c] for c in watch_classes or []),
                                 rare_band=rare_band or (min(RARE_BAND_LOW, conf / 2), conf),
                                 rare_band_per_class=rare_band is None,
                                 rare_top=rare_top)
    except ValueError as exc:
        raise AgentSetupError(f"trigger settings: {exc}") from exc
    if rare_band is not None:
        _rare_band_check(detector, {c: names[c] for c in watch_classes or []}, rare_band)
    try:
        file_options = {"realtime": realtime, "loop": loop} if Path(source).is_file() else {}
        frames = open_source(source, **file_options)
    except ValueError as exc:
        raise AgentSetupError(f"--source: {exc}") from exc
    device = device or _device_name(server, token)
    if not is_safe_name(device):
        raise AgentSetupError(f"--device {device!r} may only use letters, digits, '_', '.', '-'")

    config = AgentConfig(
        server=server, token=token, device=device, camera=camera, spool_dir=spool, spool_max_bytes=spool_max_bytes,
        triggers=triggers, alerts=alerts,
        operator_port=operator_port, heartbeat_interval_s=heartbeat_s, max_frames=max_frames,
    )
    agent = Agent(config, detector, frames, updater)
    agent.uploader.hold_when_refused = True  # this process's token and URL cannot change: retrying is noise
    refusal = _RefusalNotice(agent, console, server, spool)
    stop = threading.Event()
    # The frame loop sees `stop` only between frames, and a camera that is down sends none: closing the
    # source wakes the loop. A thread closes it: closing takes locks the interrupted loop may hold.
    closer = threading.Thread(target=lambda: (stop.wait(), frames.close()), name="stop-closer", daemon=True)
    closer.start()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with Live(console=console, transient=True, auto_refresh=False, redirect_stdout=False) as screen:
            def show(s: dict[str, Any]) -> None:
                refusal.check()
                if live:
                    screen.update(status_line(s), refresh=True)
            summary = agent.run(stop=stop, on_status=show)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop.set()  # lets the closer end; the source is closed already, and closing it again is harmless
        closer.join()
        left = agent.close(drain_timeout_s=drain_s)  # returns at once when the server refuses the device
    refusal.check()  # a refusal first seen while draining
    # Counters read after the drain, so `uploaded` and `alerts` include what went out while draining.
    alerts = agent.alerter.stats() if agent.alerter else None
    up = agent.uploader.stats()
    # The miner's `uploaded` counts frames it chose, which the uploader may not have sent: `selected` here.
    chosen = {("selected" if k == "uploaded" else k): v for k, v in summary["triggers"].items()}
    return {**summary, "uploaded": up["uploaded"], "upload_refused": up["refused"], "refusal": up["refusal"],
            "alerts": alerts, "left_in_spool": left, "spool": str(spool),
            "budget_per_hour": triggers.budget_per_hour, "triggers": chosen}


class _RefusalNotice:
    """Says once, as an `error:` line, that the server refuses this device, and how to fix it."""

    def __init__(self, agent: Agent, console: Console, server: str, spool: Path) -> None:
        self._agent, self._console, self._server, self._spool = agent, console, server, spool
        self._said = False

    def check(self) -> None:
        refused = self._agent.uploader.refusal
        if refused is None or self._said:
            return
        self._said = True
        self._console.print(f"[bold red]error:[/] {escape(refusal_hint(refused, self._server))}; captures stay in "
                            f"{escape(str(self._spool))} for the next start", soft_wrap=True)


def summary_lines(s: dict[str, Any]) -> list[str]:
    """The run's summary for people, a few lines (`--json` gives all of it)."""
    t = s["triggers"]
    fired = ", ".join(f"{k} {v}" for k, v in t["fired"].items() if v) or "none"
    budget = s.get("budget_per_hour")
    lines = [
        f"{s['frames']} frames at {s['fps']:.1f} fps (inference p50 {s['inference_ms_p50']:.1f} ms), "
        f"model {s['model_version']}",
        f"hard examples: {t['selected']} selected (triggers fired: {fired}), {t['suppressed_as_duplicate']} "
        "near-duplicates skipped, "
        + (f"{t['suppressed_by_budget']} held back by the upload budget of {budget:g}/hour" if budget is not None
           else "no upload budget"),
        f"uploads: {s['uploaded']} accepted, {s['upload_rejected']} rejected, {s['upload_refused']} refused; "
        f"{s['left_in_spool']} left in the spool ({s['spool']}) for the next start",
    ]
    if s.get("alerts"):
        lines.append(f"alerts: {s['alerts']['sent']} sent, {s['alerts']['failed']} failed")
    return lines


def budget_note(s: dict[str, Any]) -> str | None:
    """One line when the upload budget held frames back, naming the flag that raises it."""
    held, budget = s["triggers"]["suppressed_by_budget"], s.get("budget_per_hour")
    if not held or budget is None:
        return None
    return (f"the upload budget ({budget:g} per hour) held back {held} frames the triggers selected; "
            "raise it with --budget-per-hour")
