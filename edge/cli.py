"""The device's command line, `edgeloop-device` (also under `edgeloop`): `agent` runs the edge loop, `upload`
reports frames by hand. It imports nothing server-side, so a Jetson with `edgeloop[edge]` runs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer

from edge.manual_upload import UploadError, upload_files
from edge.terminal import JsonOpt, console, edgeloop_app, err, fail, show_progress, ultralytics_quiet

app = edgeloop_app("edgeloop-device", "Run edgeloop on a device: detect, alert, and send the hard examples home.")


@app.command()
def upload(
    images: Annotated[list[Path], typer.Argument(help="JPEG or PNG files the model got wrong.", show_default=False)],
    server: Annotated[str, typer.Option(help="Ingest API base URL.", envvar="EDGELOOP_SERVER")],
    token: Annotated[str, typer.Option(help="Device token (edgeloop devices add).", envvar="EDGELOOP_TOKEN")],
    trigger: Annotated[str, typer.Option(help="Why: operator, uncertainty, flicker or random.")] = "operator",
    note: Annotated[Optional[str], typer.Option(help="What is wrong, for the reviewers.")] = None,
    camera: Annotated[str, typer.Option(help="Camera name recorded with the capture.")] = "manual",
    model_version: Annotated[str, typer.Option(help="Model that saw the frame, if known.")] = "unknown",
    as_json: JsonOpt = False,
) -> None:
    """Report frames the model got wrong through the same API the devices use."""
    try:
        results = upload_files(images, server=server, token=token, trigger=trigger, note=note,
                               camera=camera, model_version=model_version, progress=show_progress(as_json))
    except UploadError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        print(json.dumps(results))
    else:
        for r in results:
            console.print(f"{r['file']}: {'already stored' if r['duplicate'] else 'stored'} as {r['id'][:12]}")


@app.command()
def agent(
    source: Annotated[str, typer.Option(help="rtsp://..., usb:0, a video file or an image folder.")],
    model: Annotated[Path, typer.Option(help="Detector: .onnx (ONNX Runtime) or .engine (TensorRT); a YOLO .pt is "
                                       "exported to ONNX once, beside it, where ultralytics is installed.")],
    server: Annotated[str, typer.Option(help="Ingest API base URL.", envvar="EDGELOOP_SERVER")],
    token: Annotated[str, typer.Option(help="Device token (edgeloop devices add).", envvar="EDGELOOP_TOKEN")],
    device: Annotated[Optional[str], typer.Option(help="Device name; asked of the server when omitted.")] = None,
    camera: Annotated[str, typer.Option(help="Camera name recorded with captures.")] = "cam0",
    spool: Annotated[Path, typer.Option(help="Durable on-disk queue of hard examples.")] = Path("edgeloop-spool"),
    spool_max_mb: Annotated[int, typer.Option(help="Spool size cap; the lowest-priority oldest go first.")] = 1024,
    alert_webhook: Annotated[Optional[str], typer.Option(help="URL to POST signed alerts to.")] = None,
    alert_secret: Annotated[Optional[str], typer.Option(help="Standard Webhooks secret (whsec_...).",
                                                        envvar="EDGELOOP_ALERT_SECRET")] = None,
    alert_classes: Annotated[str, typer.Option(help="Comma-separated classes that raise alerts.")] = "",
    alert_confidence: Annotated[Optional[float], typer.Option(
        help="Confidence every alert class must reach (default: each class's own threshold in the model, "
             "else 0.85).", show_default=False)] = None,
    confidence: Annotated[Optional[float], typer.Option(
        help="One detection threshold for every class, replacing the model's per-class thresholds "
             "(default: the model's, else 0.25).", show_default=False)] = None,
    operator_port: Annotated[Optional[int], typer.Option(help="Serve POST /flag on 127.0.0.1:PORT (0: any).")] = None,
    random_rate: Annotated[float, typer.Option(help="Share of frames uploaded as the unbiased sample.")] = 0.01,
    budget_per_hour: Annotated[Optional[float], typer.Option(
        help="Hard-example uploads allowed per hour (default: 120 from a live camera, rtsp or usb; no budget for "
             "a video file or image folder).", show_default=False)] = None,
    watch_classes: Annotated[str, typer.Option(help="Comma-separated rare classes: upload frames where the model "
                                               "almost saw one (evidence in --rare-band).")] = "",
    rare_band: Annotated[Optional[str], typer.Option(
        help="LOW,HIGH: evidence band of --watch-classes, below the detection threshold, for every class "
             "(default: 0.001 up to each class's detection threshold).", show_default=False)] = None,
    rare_top: Annotated[float, typer.Option(help="...and only when at most this share of the last 3000 frames "
                                            "showed more evidence for the class (1 = the band alone).")] = 0.05,
    heartbeat_s: Annotated[float, typer.Option(help="Seconds between heartbeats.")] = 30.0,
    max_frames: Annotated[Optional[int], typer.Option(help="Stop after N frames (default: run until stopped).")] = None,
    realtime: Annotated[bool, typer.Option(help="Pace a video file at its own fps, like a camera.")] = False,
    drain_s: Annotated[float, typer.Option(help="At exit, wait this long for the spool to drain.")] = 10.0,
    loop: Annotated[bool, typer.Option(help="Play a video file over and over, like a camera that never ends.")] = False,
    follow_deployments: Annotated[bool, typer.Option(
        help="Run the model the server deploys to this device (edgeloop rollout): download, check and swap it "
             "in between two frames; roll back by itself when it fails.")] = False,
    model_dir: Annotated[Path, typer.Option(help="Where deployed models, engines and the update state live.")]
        = Path("edgeloop-models"),
    poll_s: Annotated[float, typer.Option(help="Seconds between deployment polls (jittered by 20%).")] = 30.0,
    update_backend: Annotated[str, typer.Option(help="Runtime for deployed models: auto (TensorRT where "
                                                "there is a GPU), onnxruntime or tensorrt.")] = "auto",
    probation_frames: Annotated[int, typer.Option(help="A new model's first frames, whose latency is judged.")] = 30,
    trust_root: Annotated[Optional[Path], typer.Option(
        help="The fleet's root.json (`edgeloop keys init`), pinned at install: install only models the fleet's "
             "keys signed for this device.")] = None,
    latency_budget_ms: Annotated[Optional[float], typer.Option(
        help="Roll a new model back when its median inference over probation exceeds this (default: 3x the "
             "previous model's).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the edge agent: detect on a stream, alert, mine hard examples and upload them durably."""
    # Here, not at the top: the agent loads cv2, supervision and scipy (1.5 s), which `--help` and `upload` skip.
    from edge.runner import AgentSetupError, budget_note, run_agent, summary_lines

    band = None
    if rare_band is not None:
        try:
            low, high = (float(v) for v in rare_band.split(","))
        except ValueError:
            raise fail(f"--rare-band {rare_band!r} must be two numbers LOW,HIGH, e.g. 0.001,0.25") from None
        band = (low, high)
    if update_backend not in ("auto", "onnxruntime", "tensorrt"):
        raise fail(f"--update-backend {update_backend!r} must be auto, onnxruntime or tensorrt")
    if model.suffix.lower() == ".pt" and model.is_file():
        model = _onnx_beside(model)
    try:
        summary = run_agent(
            source=source, model=model, server=server, token=token, device=device, camera=camera,
            spool=spool, spool_max_bytes=spool_max_mb * 1024 * 1024, alert_webhook=alert_webhook,
            alert_secret=alert_secret, alert_classes=[c for c in alert_classes.split(",") if c],
            alert_confidence=alert_confidence, operator_port=operator_port, random_rate=random_rate,
            budget_per_hour=budget_per_hour, heartbeat_s=heartbeat_s, max_frames=max_frames, realtime=realtime, drain_s=drain_s,
            live=not as_json, console=err, watch_classes=[c.strip() for c in watch_classes.split(",") if c.strip()],
            rare_band=band, rare_top=rare_top, confidence=confidence, loop=loop, follow_deployments=follow_deployments, model_dir=model_dir,
            poll_s=poll_s, update_backend=update_backend, probation_frames=probation_frames,  # type: ignore[arg-type]
            latency_budget_ms=latency_budget_ms, trust_root=trust_root,
        )
    except AgentSetupError as exc:
        raise fail(str(exc)) from exc
    if note := budget_note(summary):
        err.print(note, markup=False, highlight=False)
    if as_json:
        print(json.dumps(summary, default=str))
    else:
        for line in summary_lines(summary):
            console.print(line, markup=False, highlight=False)
    if summary["refusal"] and not summary["uploaded"]:
        raise typer.Exit(1)  # said as it happened (one `error:` line); nothing reached the server


def _onnx_beside(pt: Path) -> Path:
    """`model.pt` as `model.<sha256[:12]>.onnx` beside it: exported once, reused while the .pt is the same.
    The export needs ultralytics, which a device's `edgeloop[edge]` lacks: then say how to get an ONNX."""
    digest = hashlib.sha256(pt.read_bytes()).hexdigest()
    onnx = pt.with_name(f"{pt.stem}.{digest[:12]}.onnx")
    if onnx.is_file():
        err.print(f"--model {pt}: running {onnx}, its ONNX export", markup=False, highlight=False)
        return onnx
    try:
        from ultralytics import YOLO
    except ImportError:
        raise fail(f"--model {pt} is a PyTorch checkpoint, and this install has no ultralytics to export it "
                   f"(edgeloop[edge]); export it to ONNX where ultralytics is installed (`yolo export model={pt} "
                   "format=onnx`) or publish it from the control plane (`edgeloop publish`), then pass the .onnx") \
            from None
    err.print(f"--model {pt}: exporting it to ONNX once, as {onnx} (reused while the .pt is unchanged)",
              markup=False, highlight=False)
    # ultralytics writes the export beside its input: a private folder beside the .pt keeps a half-written
    # file out of sight and makes the final rename atomic.
    try:
        with tempfile.TemporaryDirectory(prefix=".edgeloop-export-", dir=pt.parent) as tmp:
            copy = Path(shutil.copyfile(pt, Path(tmp) / pt.name))
            with ultralytics_quiet(None):
                exported = Path(YOLO(str(copy)).export(format="onnx", verbose=False))
            os.replace(exported, onnx)
    except Exception as exc:  # a read-only folder, a checkpoint that is not YOLO's: said in one line
        raise fail(f"--model {pt}: the ONNX export failed ({type(exc).__name__}: {exc}); export it yourself "
                   f"with `yolo export model={pt} format=onnx` and pass the .onnx") from exc
    return onnx


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="edgeloop-device")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
