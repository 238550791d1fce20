"""Datasets, training and the gate: `import`, `train`, `eval`, `gate`, `models`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import Progress
from rich.table import Table

from feedback.datasets.yolo_import import ImportProblem, import_yolo
from feedback.training.choice import get_backend
from feedback.training.recipe import Recipe
from feedback.training.remote import run_export
from feedback.training.train import TrainingError
from store.datasets import DatasetError
from store.labels import ClassMismatch
from flows.cli.common import (
    EpochsOpt, ImgszOpt, JsonOpt, WorkspaceOpt, app, console, emit, err, fail, failing_on, open_workspace,
    show_progress, ultralytics_to_stderr,
)
from store.models import list_models

# `eval`, `gate` and `models register` import the evaluator where they run: it loads torch and ultralytics
# (several seconds), which every other command and `--help` skip.


@app.command("import")
def import_(
    directory: Annotated[Path, typer.Argument(help="YOLO data set: images/, labels/ and data.yaml or classes.txt.")],
    split: Annotated[str, typer.Option(help="train, or holdout (real validation; sticky).")],
    names: Annotated[Optional[str], typer.Option(help="Comma-separated class names, if the folder has none.")] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Import the rest when some images are not whole "
                                           "JPEG/PNG files, and list those left out (default: import nothing).")]
        = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import an existing YOLO data set as verified labels (provenance: the folder and file).

    Images are checked as strictly as the ingest API checks uploads: a file that is not a whole JPEG or PNG
    refuses the import (nothing is written), unless --skip-bad.
    """
    if split not in ("train", "holdout"):
        raise fail(f"--split {split!r} must be 'train' or 'holdout'")
    with failing_on(ImportProblem, ClassMismatch):
        report = import_yolo(open_workspace(workspace), directory, split,  # type: ignore[arg-type]
                             names=names.split(",") if names else None, progress=show_progress(as_json), skip_bad=skip_bad)
    for bad in report.skipped:
        err.print(f"skipped {bad}", markup=False, highlight=False)
    result = vars(report)
    emit(result, as_json, ", ".join(f"{k.replace('_', ' ')}: {len(v) if isinstance(v, list) else v}"
                                    for k, v in result.items()))


@app.command()
def train(
    profile: Annotated[Optional[str], typer.Option(
        help="cpu (minutes, small images) or gpu (full schedule); default cpu, gpu on Vertex AI with a GPU.")] = None,
    parent: Annotated[Optional[str], typer.Option(help="Model id to fine-tune; default the champion.")] = None,
    scratch: Annotated[bool, typer.Option("--scratch", help="Start from --base (random weights), not a model.")] = False,
    base: Annotated[str, typer.Option(help="Model yaml (or .pt) used when starting from scratch.")] = "yolov8n.yaml",
    epochs: EpochsOpt = None,
    imgsz: ImgszOpt = None,
    dataset: Annotated[Optional[int], typer.Option(help="Dataset version (default: freeze the current labels).")] = None,
    backend: Annotated[str, typer.Option(
        help="local (here) or vertex (a Vertex AI custom job; settings vertex_*).")] = "local",
    recipe: Annotated[str, typer.Option(
        help="rare: where a class is rare or watched, resample its images, train at a size its boxes need, keep "
             "the epoch best for it and choose each class's threshold; plain: every class alike, one threshold.")
    ] = "rare",
    operating_precision: Annotated[float, typer.Option(
        help="The precision each class's threshold is chosen for (rare recipe), on a split carved from training "
             "data.")] = 0.5,
    watch_classes: Annotated[Optional[str], typer.Option(
        help="Comma-separated class names the rare recipe favours even when they are not rare.")] = None,
    export: Annotated[Optional[str], typer.Option(
        hidden=True, help="Job form, what a Vertex AI job runs: train on this dataset export (no catalog).")] = None,
    output_dir: Annotated[Optional[str], typer.Option(hidden=True, help="Job form: where the weights go.")] = None,
    params: Annotated[Optional[str], typer.Option(hidden=True, help="Job form: ultralytics' arguments, JSON.")] = None,
    parent_weights: Annotated[Optional[str], typer.Option(hidden=True, help="Job form: start weights' URL.")] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train a challenger on a dataset version; it is recorded as a candidate for the gate."""
    if export is not None:
        return _train_job(export, output_dir, params, dataset, parent_weights, base, as_json)
    overrides = {k: v for k, v in {"epochs": epochs, "imgsz": imgsz}.items() if v is not None}
    chosen = recipe_option(recipe, operating_precision)
    with failing_on(TrainingError, DatasetError):
        ws = open_workspace(workspace)
        with ultralytics_to_stderr(), Progress(console=err, transient=True, disable=not show_progress(as_json)) as bar:
            task = bar.add_task("training", total=None)

            def show(done: int, total: int | None, what: str) -> None:  # a Vertex job's state, or "training"
                bar.update(task, completed=done, total=total, description=what.removeprefix("JOB_STATE_").lower())

            result = get_backend(backend, ws).train(
                ws, dataset_version=dataset, base=base, profile=profile, overrides=overrides, progress=show,
                parent=None if scratch else (parent or "champion"), recipe=chosen,
                watch=[c for c in (watch_classes or "").split(",") if c])
    out = {"model": result.model_id, "parent": result.parent_id, "dataset_version": result.dataset_version,
           "duration_s": round(result.duration_s, 1), "weights_sha256": result.weights_sha256,
           "imgsz": result.params.get("imgsz"), "thresholds": result.thresholds}
    emit(out | ({"backend": backend, "job": result.job} if result.job else {}), as_json)


def parse_thresholds(text: str | None) -> dict[str, float] | None:
    """`--thresholds name=conf,...`; a malformed pair or a confidence outside (0, 1) is named."""
    if not text:
        return None
    out = {}
    for pair in text.split(","):
        name, _, value = pair.partition("=")
        try:
            conf = float(value)
        except ValueError:
            raise fail(f"--thresholds: {pair!r} is not name=confidence") from None
        if not name or not 0.0 < conf < 1.0:
            raise fail(f"--thresholds: {pair!r} needs a class name and a confidence in (0, 1)")
        out[name.strip()] = conf
    return out


def recipe_option(name: str, operating_precision: float) -> Recipe:
    """`--recipe` and `--operating-precision` as the trainer's Recipe; a bad value is named."""
    if name not in ("rare", "plain"):
        raise fail(f"--recipe {name!r}: choose rare or plain")
    if not 0.0 < operating_precision <= 1.0:
        raise fail(f"--operating-precision {operating_precision}: must lie in (0, 1]")
    return Recipe(operating_precision=operating_precision) if name == "rare" else Recipe.off()


def _train_job(export: str, output_dir: str | None, params: str | None, dataset: int | None,
               parent_weights: str | None, base: str, as_json: bool) -> None:
    """`train --export`: a remote job's side, with no catalog; the host registers what it leaves."""
    if output_dir is None or params is None:
        raise fail("--export needs --output-dir and --params")
    try:
        arguments = json.loads(params)
    except json.JSONDecodeError as exc:
        raise fail(f"--params is not JSON ({exc}): {params[:80]!r}") from exc
    with failing_on(TrainingError, FileNotFoundError), ultralytics_to_stderr():
        result = run_export(export, output_dir, arguments, dataset_version=dataset, parent_weights=parent_weights,
                            base=base)
    emit(result, as_json)


@app.command("eval")
def eval_(
    model: Annotated[Path, typer.Option(help="Weights: ultralytics .pt or exported .onnx.")],
    data: Annotated[Path, typer.Option(help="YOLO folder: images/ and labels/ (real images).")],
    json_out: Annotated[Path, typer.Option("--json", help="Write the metrics JSON here.")],
    coco_predictions: Annotated[Optional[Path], typer.Option(help="Also write predictions, COCO results format.")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Folder for the confusion matrix and galleries.")] = None,
    names: Annotated[Optional[str], typer.Option(help="Comma-separated class names (default: data.yaml or the model's).")] = None,
    thresholds: Annotated[Optional[str], typer.Option(
        help="Per-class operating points, e.g. no_helmet=0.12,helmet=0.4 (`edgeloop models` lists a "
             "model's); other classes at 0.25.")] = None,
) -> None:
    """COCO mAP (pycocotools), precision/recall at the deployed operating point, confusion, galleries."""
    from feedback.evaluation.evaluate import evaluate, format_table

    own = parse_thresholds(thresholds)
    if not model.is_file():
        raise fail(f"--model {model}: no such file")
    if not (data / "images").is_dir():
        raise fail(f"--data {data}: expected an images/ folder (and labels/)")
    with failing_on(ValueError), ultralytics_to_stderr():  # ValueError: e.g. the data's classes are not the model's
        result = evaluate(model, data, names=names.split(",") if names else None, report_dir=report,
                          coco_predictions=coco_predictions, thresholds=own)
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
    from feedback.training.gate_run import GateError, run_gate

    with failing_on(GateError), ultralytics_to_stderr():
        r = run_gate(open_workspace(workspace), challenger, champion_ref=champion, margin=margin, tolerance=tolerance,
                     report_dir=report, progress=show_progress(as_json))
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
    if ctx.invoked_subcommand is not None:  # `models register ...`: the listing is only for `models` alone
        return
    with open_workspace(workspace).catalog.connect() as con:
        rows = list_models(con)
    if as_json:
        print(json.dumps([{"id": m.id, "parent": m.parent_id, "dataset_version": m.dataset_version,
                           "status": m.status, "map50_95": (m.metrics or {}).get("map50_95")} for m in rows]))
        return
    table = Table("model", "parent", "dataset", "status", "mAP@0.5:0.95")
    own = any(m.thresholds for m in rows)
    if own:  # each class's operating point, where some model has its own (the others run at 0.25)
        table.add_column("thresholds", overflow="fold")
    for m in rows:
        score = (m.metrics or {}).get("map50_95")
        cells = [m.id, m.parent_id or "", str(m.dataset_version or ""), m.status,
                 f"{score:.4f}" if score is not None else ""]
        if own:
            cells.append(", ".join(f"{n} {c:.3g}" for n, c in (m.thresholds or {}).items()) or "0.25 (global)")
        table.add_row(*cells)
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
    from feedback.training.gate_run import RegistryError, register_weights

    with failing_on(RegistryError), ultralytics_to_stderr():
        m, new = register_weights(open_workspace(workspace), weights, parent=parent, note=note)
    out = {"id": m.id, "new": new, "origin": m.origin, "parent": m.parent_id, "note": m.note, "status": m.status,
           "classes": m.classes, "imgsz": m.imgsz, "weights_sha256": m.weights_sha256}
    emit(out, as_json, f"{m.id} {'registered' if new else 'was already in the registry'} "
                       f"({m.origin}, {m.status}{', parent ' + m.parent_id if m.parent_id else ''})")
