"""The `edgeloop` command line: devices, the ingest API, inbox loading, status, uploads, demo.

Each command is a thin shell over a `store`/`feedback` function; errors name the bad value.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="edgeloop",
    help="Improve edge object detectors from their own mistakes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
devices_app = typer.Typer(help="Register edge devices and manage their upload tokens.", no_args_is_help=True)
app.add_typer(devices_app, name="devices")
review_app = typer.Typer(help="Choose captures for people to verify (Label Studio), and bring verdicts back.",
                         no_args_is_help=True)
app.add_typer(review_app, name="review")

console = Console()
err = Console(stderr=True)

WorkspaceOpt = Annotated[
    Optional[Path],
    typer.Option("--workspace", "-w", help="Workspace folder (default: $EDGELOOP_WORKSPACE or ./.edgeloop)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]


def emit(result: object, as_json: bool, human: object | None = None) -> None:
    """`--json`: the result as one JSON line on stdout; otherwise `human` (or the result) for people."""
    if as_json:
        print(json.dumps(result, default=str))
    else:
        console.print(result if human is None else human)


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def _workspace(path: Path | None):  # -> store.settings.Workspace (imported lazily: `edge` installs lack it)
    from store.settings import Settings, Workspace

    settings = Settings(workspace=path) if path else Settings()
    return Workspace(settings)


# ----------------------------------------------------------------------------- devices


@devices_app.command("add")
def devices_add(name: str, workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Register device NAME and print its upload token (shown only this once)."""
    from store.devices import DeviceError, add_device

    ws = _workspace(workspace)
    try:
        token = add_device(ws.catalog, ws.objects, name)
    except DeviceError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        print(json.dumps({"device": name, "token": token}))
    else:
        console.print(f"device [bold]{name}[/] registered. Token (store it now, it is not kept):")
        print(token)


@devices_app.command("list")
def devices_list(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """List registered devices and whether they are revoked."""
    from store.devices import list_devices

    rows = list_devices(_workspace(workspace).catalog)
    if as_json:
        print(json.dumps([{"device": d.name, "created_at": d.created_at.isoformat(),
                           "revoked_at": d.revoked_at.isoformat() if d.revoked_at else None} for d in rows]))
        return
    table = Table("device", "created", "revoked")
    for d in rows:
        table.add_row(d.name, f"{d.created_at:%Y-%m-%d %H:%M}", f"{d.revoked_at:%Y-%m-%d %H:%M}" if d.revoked_at else "")
    console.print(table)


@devices_app.command("revoke")
def devices_revoke(name: str, workspace: WorkspaceOpt = None) -> None:
    """Revoke NAME's token; the ingest API refuses it within seconds."""
    from store.devices import DeviceError, revoke_device

    ws = _workspace(workspace)
    try:
        revoke_device(ws.catalog, ws.objects, name)
    except DeviceError as exc:
        raise fail(str(exc)) from exc
    console.print(f"device [bold]{name}[/] revoked")


# ----------------------------------------------------------------------------- server side


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes (the API is stateless).")] = 1,
    workspace: WorkspaceOpt = None,
) -> None:
    """Run the ingest API (uvicorn) that devices upload hard examples to."""
    import uvicorn

    if workspace:
        # Workers are separate processes: they read their settings from the environment.
        os.environ["EDGELOOP_WORKSPACE"] = str(workspace)
    uvicorn.run("feedback.ingest.api:create_app", factory=True, host=host, port=port, workers=workers,
                log_level="info", access_log=False)


@app.command()
def ingest(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Load the inbox the API wrote into the catalog (idempotent; safe to run concurrently)."""
    from rich.progress import Progress

    from store.inbox import load_inbox

    ws = _workspace(workspace)
    with Progress(console=err, transient=True, disable=as_json) as progress:
        task = progress.add_task("loading inbox", total=None)
        report = load_inbox(ws.catalog, ws.inbox, progress=lambda done, total: progress.update(task, completed=done, total=total))
    result = {k: v for k, v in vars(report).items()}
    emit(result, as_json, ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in result.items()))


@app.command()
def status(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Counts of captures by device, trigger and predicted class, and the inbox backlog."""
    from store.status import status_counts

    ws = _workspace(workspace)
    counts = status_counts(ws.catalog, ws.inbox)
    if as_json:
        print(json.dumps(counts, default=str))
        return
    for key, value in counts.items():
        if isinstance(value, dict) and value and all(not isinstance(v, dict) for v in value.values()):
            table = Table(key.replace("_", " "), "count")
            for name, n in value.items():
                table.add_row(str(name), str(n))
            console.print(table)
        else:
            console.print(f"[bold]{key.replace('_', ' ')}[/]: {json.dumps(value, default=str)}")


# ----------------------------------------------------------------------------- review

ReviewerOpt = Annotated[str, typer.Option(help="label-studio, or oracle (simulated annotators: needs --labels).")]
LabelsOpt = Annotated[Optional[Path], typer.Option(help="Ground-truth YOLO labels for the oracle reviewer.")]
LsUrlOpt = Annotated[Optional[str], typer.Option("--label-studio-url", envvar="EDGELOOP_LABEL_STUDIO_URL",
                                                 help="Label Studio base URL.")]
LsTokenOpt = Annotated[Optional[str], typer.Option("--label-studio-token", envvar="EDGELOOP_LABEL_STUDIO_TOKEN",
                                                   help="Label Studio API token (owner or manager).")]
ClipOpt = Annotated[Optional[str], typer.Option(
    help="Fetch pretrained CLIP weights by tag when online (e.g. laion2b_s34b_b79k with --clip-model ViT-B-32); "
    "default: EDGELOOP_CLIP_WEIGHTS, else random weights.")]
ClipModelOpt = Annotated[Optional[str], typer.Option(help="open_clip model name (default: settings).")]


def _reviewer(ws, reviewer: str, labels: Path | None, url: str | None, token: str | None):  # noqa: ANN001, ANN202
    from feedback.review.labelstudio import LabelStudioReviewer
    from feedback.review.oracle import OracleReviewer

    if reviewer == "oracle":
        if labels is None or not labels.is_dir():
            raise fail(f"--reviewer oracle needs --labels DIR of ground-truth label files (got {labels})")
        return OracleReviewer(labels)
    if reviewer != "label-studio":
        raise fail(f"--reviewer {reviewer!r} must be 'label-studio' or 'oracle'")
    settings = ws.settings.model_copy(update={k: v for k, v in
                                              {"label_studio_url": url, "label_studio_token": token}.items() if v})
    return LabelStudioReviewer.from_settings(settings)


@review_app.command("embed")
def review_embed(workspace: WorkspaceOpt = None, clip_model: ClipModelOpt = None, clip_pretrained: ClipOpt = None,
                 as_json: JsonOpt = False) -> None:
    """Compute what selection needs and lacks: frame, box, verified-box and failure-crop vectors.

    `review push` does this by itself; run it ahead of time to make a later push quick. The champion
    model's own features are used unless CLIP weights are given.
    """
    from feedback.review.boxes import prepare_vectors

    ws = _workspace(workspace)
    with _ultralytics_to_stderr():
        name = prepare_vectors(ws, clip_model=clip_model, clip_pretrained=clip_pretrained, progress=not as_json)
    emit({"embedder": name}, as_json, f"vectors ready from {name}")


def _class_ids(ws, names: str) -> tuple[int, ...]:  # noqa: ANN001
    from store.labels import catalog_classes

    wanted = [n.strip() for n in names.split(",") if n.strip()]
    with ws.catalog.connect() as con:
        known = catalog_classes(con)
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise fail(f"--watch-classes {','.join(unknown)}: not among the catalog's classes {known}")
    return tuple(known.index(n) for n in wanted)


@review_app.command("push")
def review_push(
    budget: Annotated[int, typer.Option(help="How many captures to send to the reviewers.")],
    strategy: Annotated[str, typer.Option(help="active (see the parts below) or random (the baseline).")] = "active",
    uncertainty: Annotated[bool, typer.Option(help="Favour captures the model was unsure about.")] = True,
    diversity: Annotated[bool, typer.Option(help="Spread picks over scenes (k-center on frame embeddings).")] = True,
    class_balance: Annotated[bool, typer.Option(help="Favour classes rare among verified labels, "
                                                      "including ones the model may be missing.")] = True,
    rare: Annotated[bool, typer.Option(help="Favour captures whose boxes the probe calls a rare class.")] = True,
    evidence: Annotated[bool, typer.Option(help="Favour captures with sub-threshold device evidence "
                                                "for rare classes.")] = True,
    failure_boost: Annotated[bool, typer.Option(help="Favour boxes like verified missed/confused ones.")] = True,
    watch_classes: Annotated[str, typer.Option(help="Comma-separated classes to hunt whatever their counts.")] = "",
    explain: Annotated[bool, typer.Option("--explain", help="Show each pick's score parts.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the random strategy.")] = 0,
    reviewer: ReviewerOpt = "label-studio",
    labels: LabelsOpt = None,
    public_url: Annotated[Optional[str], typer.Option(envvar="EDGELOOP_PUBLIC_URL",
                                                      help="Ingest API URL the annotators' browsers reach.")] = None,
    project: Annotated[str, typer.Option(help="Label Studio project title (created or reused).")] = "edgeloop review",
    label_studio_url: LsUrlOpt = None,
    label_studio_token: LsTokenOpt = None,
    clip_model: ClipModelOpt = None,
    clip_pretrained: ClipOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Pick the captures most worth a person's time and create pre-annotated review tasks.

    Active selection computes what it needs by itself (embeddings, the box probe), then scores each
    candidate; `--explain` shows how every pick scored.
    """
    from feedback.review.boxes import prepare_vectors
    from feedback.review.selection import SelectionConfig
    from feedback.review.workflow import ReviewError, push_for_review

    if budget < 1:
        raise fail(f"--budget {budget} must be at least 1")
    if strategy not in ("active", "random"):
        raise fail(f"--strategy {strategy!r} must be 'active' or 'random'")
    ws = _workspace(workspace)
    chosen = _reviewer(ws, reviewer, labels, label_studio_url, label_studio_token)
    name = None
    if strategy == "active":
        with _ultralytics_to_stderr():
            name = prepare_vectors(ws, clip_model=clip_model, clip_pretrained=clip_pretrained, progress=not as_json)
    config = SelectionConfig(strategy=strategy, uncertainty=uncertainty, diversity=diversity,  # type: ignore[arg-type]
                             class_balance=class_balance, rare=rare, evidence=evidence, failure=failure_boost,
                             seed=seed, embedder=name, watch_classes=_class_ids(ws, watch_classes))
    try:
        report = push_for_review(ws, budget, reviewer=chosen, selection=config, public_url=public_url,
                                 project_title=project)
    except (ReviewError, LookupError) as exc:
        raise fail(str(exc)) from exc
    out: dict[str, object] = {"pushed": report.pushed, "already_pushed": report.already_pushed,
                              "reviewer": report.reviewer, "project": report.project, "strategy": report.strategy,
                              "embedder": name}
    if explain:
        out["picks"] = [{"capture": p.capture_id, "score": round(p.score, 4),
                         "parts": {k: round(v, 4) for k, v in p.parts.items()}} for p in report.picks]
    if as_json:
        emit(out, True)
        return
    if explain and report.picks:
        keys = sorted({k for p in report.picks for k in p.parts})
        table = Table("#", "capture", "score", *keys, title="why each capture was picked")
        for i, p in enumerate(report.picks, 1):
            table.add_row(str(i), p.capture_id[:12], f"{p.score:.3f}", *(f"{p.parts.get(k, 0):.3f}" for k in keys))
        console.print(table)
    console.print({k: v for k, v in out.items() if k != "picks"})


@review_app.command("pull")
def review_pull(
    reviewer: ReviewerOpt = "label-studio",
    labels: LabelsOpt = None,
    holdout_share: Annotated[float, typer.Option(help="Share of new verified captures that join the real holdout.")] = 0.2,
    label_studio_url: LsUrlOpt = None,
    label_studio_token: LsTokenOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Harvest finished reviews as verified labels and failure records (pulling twice changes nothing)."""
    from feedback.review.workflow import ReviewError, pull_reviews

    if not 0.0 <= holdout_share < 1.0:
        raise fail(f"--holdout-share {holdout_share} must lie in [0, 1)")
    ws = _workspace(workspace)
    try:
        report = pull_reviews(ws, reviewer=_reviewer(ws, reviewer, labels, label_studio_url, label_studio_token),
                              holdout_share=holdout_share)
    except (ReviewError, LookupError) as exc:
        raise fail(str(exc)) from exc
    emit(vars(report), as_json)


# ----------------------------------------------------------------------------- datasets, training, gate


@contextlib.contextmanager
def _ultralytics_to_stderr() -> Iterator[None]:
    """ultralytics logs and draws progress on stdout; here both go to stderr, so stdout carries
    only our result (`--json` output stays parseable). Everything is put back afterwards."""
    import logging

    from ultralytics.utils import LOGGER

    handlers = [h for h in LOGGER.handlers if isinstance(h, logging.StreamHandler)]
    saved = [h.stream for h in handlers]
    for handler in handlers:
        handler.stream = sys.stderr  # not setStream(): it flushes the old stream, which may be closed
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for handler, stream in zip(handlers, saved, strict=True):
            handler.stream = stream


@app.command("import")
def import_(
    directory: Annotated[Path, typer.Argument(help="YOLO data set: images/, labels/ and data.yaml or classes.txt.")],
    split: Annotated[str, typer.Option(help="train, or holdout (real validation; sticky).")],
    names: Annotated[Optional[str], typer.Option(help="Comma-separated class names, if the folder has none.")] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import an existing YOLO data set as verified labels (provenance: the folder and file)."""
    from feedback.datasets.yolo_import import ImportProblem, import_yolo
    from store.labels import ClassMismatch

    if split not in ("train", "holdout"):
        raise fail(f"--split {split!r} must be 'train' or 'holdout'")
    try:
        report = import_yolo(_workspace(workspace), directory, split,  # type: ignore[arg-type]
                             names=names.split(",") if names else None, progress=not as_json)
    except (ImportProblem, ClassMismatch) as exc:
        raise fail(str(exc)) from exc
    result = vars(report)
    emit(result, as_json, ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in result.items()))


@app.command()
def train(
    profile: Annotated[str, typer.Option(help="cpu (minutes, small images) or gpu (full schedule).")] = "cpu",
    parent: Annotated[Optional[str], typer.Option(help="Model id to fine-tune; default the champion.")] = None,
    scratch: Annotated[bool, typer.Option("--scratch", help="Start from --base (random weights), not a model.")] = False,
    base: Annotated[str, typer.Option(help="Model yaml (or .pt) used when starting from scratch.")] = "yolov8n.yaml",
    epochs: Annotated[Optional[int], typer.Option(help="Override the profile's epochs.")] = None,
    imgsz: Annotated[Optional[int], typer.Option(help="Override the profile's image size.")] = None,
    dataset: Annotated[Optional[int], typer.Option(help="Dataset version (default: freeze the current labels).")] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train a challenger on a dataset version; it is recorded as a candidate for the gate."""
    from rich.progress import Progress

    from feedback.training.train import TrainingError
    from feedback.training.train import train as train_model
    from store.datasets import DatasetError

    overrides = {k: v for k, v in {"epochs": epochs, "imgsz": imgsz}.items() if v is not None}
    try:
        with _ultralytics_to_stderr(), Progress(console=err, transient=True, disable=as_json) as bar:
            task = bar.add_task("training", total=None)
            result = train_model(_workspace(workspace), dataset_version=dataset, base=base, profile=profile,
                                 parent=None if scratch else (parent or "champion"), overrides=overrides,
                                 progress=lambda e, n: bar.update(task, completed=e, total=n))
    except (TrainingError, DatasetError) as exc:
        raise fail(str(exc)) from exc
    out = {"model": result.model_id, "parent": result.parent_id, "dataset_version": result.dataset_version,
           "duration_s": round(result.duration_s, 1), "weights_sha256": result.weights_sha256}
    emit(out, as_json)


@app.command("eval")
def eval_(
    model: Annotated[Path, typer.Option(help="Weights: ultralytics .pt or exported .onnx.")],
    data: Annotated[Path, typer.Option(help="YOLO folder: images/ and labels/ (real images).")],
    json_out: Annotated[Path, typer.Option("--json", help="Write the metrics JSON here.")],
    coco_predictions: Annotated[Optional[Path], typer.Option(help="Also write predictions, COCO results format.")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Folder for the confusion matrix and galleries.")] = None,
    names: Annotated[Optional[str], typer.Option(help="Comma-separated class names (default: data.yaml or the model's).")] = None,
) -> None:
    """COCO mAP (pycocotools), precision/recall at the deployed operating point, confusion, galleries."""
    from feedback.evaluation.evaluate import evaluate, format_table

    if not model.is_file():
        raise fail(f"--model {model}: no such file")
    if not (data / "images").is_dir():
        raise fail(f"--data {data}: expected an images/ folder (and labels/)")
    try:
        with _ultralytics_to_stderr():
            result = evaluate(model, data, names=names.split(",") if names else None, report_dir=report,
                              coco_predictions=coco_predictions)
    except ValueError as exc:  # e.g. the data's classes are not the model's
        raise fail(str(exc)) from exc
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(result, indent=2))
    console.print(format_table(result))


@app.command()
def gate(
    challenger: Annotated[str, typer.Argument(help="Model id (m-...) or a .pt file.")],
    champion: Annotated[Optional[str], typer.Option(help="Compare against this model instead of the champion.")] = None,
    margin: Annotated[float, typer.Option(help="mAP@0.5:0.95 gain the challenger needs.")] = 0.005,
    tolerance: Annotated[float, typer.Option(help="Largest AP@0.5 drop allowed for any class.")] = 0.02,
    report: Annotated[Optional[Path], typer.Option(help="Folder for both models' evaluation reports.")] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Promote the challenger only if it beats the champion on the real holdout with no class regressing."""
    from feedback.evaluation.evaluate import format_table
    from feedback.training.promote import GateError, run_gate

    try:
        with _ultralytics_to_stderr():
            r = run_gate(_workspace(workspace), challenger, champion_ref=champion, margin=margin,
                         tolerance=tolerance, report_dir=report, progress=not as_json)
    except GateError as exc:
        raise fail(str(exc)) from exc
    out = {"promoted": r.decision.promoted, "reasons": r.decision.reasons, "challenger": r.challenger_id,
           "champion": r.champion_id, "dataset_version": r.dataset_version,
           "margin": r.decision.margin, "tolerance": r.decision.tolerance,
           "challenger_map50_95": r.challenger_metrics["map50_95"],
           "champion_map50_95": r.champion_metrics["map50_95"] if r.champion_metrics else None}
    if as_json:
        print(json.dumps(out))
        return
    console.print(f"[bold]challenger {r.challenger_id}[/]\n{format_table(r.challenger_metrics)}")
    if r.champion_metrics:
        console.print(f"[bold]champion {r.champion_id}[/]\n{format_table(r.champion_metrics)}")
    verdict = "[green]PROMOTED[/]" if r.decision.promoted else "[red]REFUSED[/]"
    console.print(f"{verdict}: " + "; ".join(r.decision.reasons))


models_app = typer.Typer(help="The model registry: lineage, dataset version, status and holdout mAP.")
app.add_typer(models_app, name="models")


@models_app.callback(invoke_without_command=True)
def models(ctx: typer.Context, workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """The model registry: lineage, dataset version, status and holdout mAP."""
    from store.models import list_models

    if ctx.invoked_subcommand is not None:  # `models register ...`: the listing is only for `models` alone
        return
    with _workspace(workspace).catalog.connect() as con:
        rows = list_models(con)
    if as_json:
        print(json.dumps([{"id": m.id, "parent": m.parent_id, "dataset_version": m.dataset_version,
                           "status": m.status, "map50_95": (m.metrics or {}).get("map50_95")} for m in rows]))
        return
    table = Table("model", "parent", "dataset", "status", "mAP@0.5:0.95")
    for m in rows:
        score = (m.metrics or {}).get("map50_95")
        table.add_row(m.id, m.parent_id or "", str(m.dataset_version or ""), m.status,
                      f"{score:.4f}" if score is not None else "")
    console.print(table)


@models_app.command("register")
def models_register(
    weights: Annotated[Path, typer.Argument(help="An ultralytics .pt trained elsewhere (a GPU box, a cloud job).")],
    parent: Annotated[Optional[str], typer.Option(help="The registered model it was tuned from (m-...).")] = None,
    note: Annotated[Optional[str], typer.Option(help="Where and how it was trained, for people.")] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record a checkpoint trained elsewhere as a candidate (lineage "external"); then `gate` it."""
    from feedback.training.promote import RegistryError, register_weights

    try:
        with _ultralytics_to_stderr():
            m, new = register_weights(_workspace(workspace), weights, parent=parent, note=note)
    except RegistryError as exc:
        raise fail(str(exc)) from exc
    out = {"id": m.id, "new": new, "origin": m.origin, "parent": m.parent_id, "note": m.note, "status": m.status,
           "classes": m.classes, "imgsz": m.imgsz, "weights_sha256": m.weights_sha256}
    emit(out, as_json, f"{m.id} {'registered' if new else 'was already in the registry'} "
                       f"({m.origin}, {m.status}{', parent ' + m.parent_id if m.parent_id else ''})")


@app.command()
def failures(
    model_version: Annotated[Optional[str], typer.Option(help="Only this deployed model's failures.")] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What the deployed model got wrong on reviewed captures, by class and kind."""
    from feedback.review.failures import failure_summary, format_failures

    summary = failure_summary(_workspace(workspace).catalog, model_version=model_version)
    emit(summary, as_json, format_failures(summary))


# ----------------------------------------------------------------------------- device side


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
    from edge.report import UploadError, upload_files

    try:
        results = upload_files(images, server=server, token=token, trigger=trigger, note=note,
                               camera=camera, model_version=model_version, progress=not as_json)
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
    model: Annotated[Path, typer.Option(help="Detector: .onnx (ONNX Runtime) or .engine (TensorRT).")],
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
    alert_confidence: Annotated[float, typer.Option(help="Confidence an alert class must reach.")] = 0.85,
    operator_port: Annotated[Optional[int], typer.Option(help="Serve POST /flag on 127.0.0.1:PORT (0: any).")] = None,
    random_rate: Annotated[float, typer.Option(help="Share of frames uploaded as the unbiased sample.")] = 0.01,
    budget_per_hour: Annotated[float, typer.Option(help="Hard-example uploads allowed per hour.")] = 120.0,
    watch_classes: Annotated[str, typer.Option(help="Comma-separated rare classes: upload frames where the model "
                                               "almost saw one (evidence in --rare-band).")] = "",
    rare_band: Annotated[str, typer.Option(help="LOW,HIGH: evidence band of --watch-classes, below the "
                                           "detection threshold.")] = "0.001,0.25",
    heartbeat_s: Annotated[float, typer.Option(help="Seconds between heartbeats.")] = 30.0,
    max_frames: Annotated[Optional[int], typer.Option(help="Stop after N frames (default: run until stopped).")] = None,
    realtime: Annotated[bool, typer.Option(help="Pace a video file at its own fps, like a camera.")] = False,
    drain_s: Annotated[float, typer.Option(help="At exit, wait this long for the spool to drain.")] = 10.0,
    as_json: JsonOpt = False,
) -> None:
    """Run the edge agent: detect on a stream, alert, mine hard examples and upload them durably."""
    from edge.runner import AgentSetupError, run_agent

    try:
        low, high = (float(v) for v in rare_band.split(","))
    except ValueError:
        raise fail(f"--rare-band {rare_band!r} must be two numbers LOW,HIGH, e.g. 0.001,0.25") from None
    try:
        summary = run_agent(
            source=source, model=model, server=server, token=token, device=device, camera=camera,
            spool=spool, spool_max_bytes=spool_max_mb * 1024 * 1024, alert_webhook=alert_webhook,
            alert_secret=alert_secret, alert_classes=[c for c in alert_classes.split(",") if c],
            alert_confidence=alert_confidence, operator_port=operator_port, random_rate=random_rate,
            budget_per_hour=budget_per_hour, heartbeat_s=heartbeat_s, max_frames=max_frames, realtime=realtime, drain_s=drain_s,
            live=not as_json, console=err, watch_classes=[c.strip() for c in watch_classes.split(",") if c.strip()],
            rare_band=(low, high),
        )
    except AgentSetupError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        print(json.dumps(summary, default=str))
    else:
        console.print_json(json.dumps(summary, default=str))


# ----------------------------------------------------------------------------- demo


@app.command()
def demo(
    workspace: Annotated[Path, typer.Option("--workspace", "-w", help="Where the demo keeps its data (recreated).")] = Path("edgeloop-demo"),
    seed: Annotated[int, typer.Option(help="Seed of the generated scenes.")] = 0,
    quick: Annotated[bool, typer.Option("--quick", help="Tiny sizes: checks the wiring in a minute; the models learn little.")] = False,
) -> None:
    """Run the whole loop offline on generated scenes, and show what each stage did."""
    from dataclasses import replace

    from flows.demo import QUICK, DemoError, DemoPlan, run_demo

    out = Console(file=sys.stdout)  # bound now: ultralytics' chatter is about to be sent to stderr
    try:
        with _ultralytics_to_stderr():
            run_demo(workspace, replace(QUICK if quick else DemoPlan(), seed=seed), console=out)
    except DemoError as exc:
        raise fail(str(exc)) from exc


def main() -> None:  # pragma: no cover - console entry point alias
    app(prog_name="edgeloop")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
