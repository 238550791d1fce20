"""`edgeloop synthesize` and `edgeloop synthetic report`: training images for blind spots, and what became of them.

Thin shells over `feedback.synthesis.service` and `feedback.synthesis.summary`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from feedback.synthesis.clusters import ClusterError, active_cluster_ids, load_cluster
from feedback.synthesis.generators import make_generator
from feedback.synthesis.port import SynthesisRequest
from feedback.synthesis.service import missing_prompt
from feedback.synthesis.service import synthesize as run_synthesis
from feedback.synthesis.summary import synthesis_summary, write_contact_sheets
from feedback.synthesis.targets import confusable_for
from flows.cli.common import (
    JsonOpt, WorkspaceOpt, app, console, emit, err, fail, open_workspace, show_progress, ultralytics_to_stderr,
)
from store.labels import catalog_classes

synthetic_app = typer.Typer(help="What synthesis kept and rejected.", no_args_is_help=True)
app.add_typer(synthetic_app, name="synthetic")


def _class_id(classes: list[str], name: str, option: str) -> int:
    if name not in classes:
        raise fail(f"{option} {name!r} is not one of the catalog's classes {classes}")
    return classes.index(name)


def _requests(ws, cluster: str | None, all_clusters: bool, class_name: str | None, confusable: str | None,
              n: int, seed: int, max_cost_usd: float | None) -> list:  # noqa: ANN001
    """(request, cluster spec or None) for each run the options ask for."""
    with ws.catalog.connect() as con:
        classes = catalog_classes(con)
    swap_from = None
    if confusable:
        swap_from = tuple(_class_id(classes, c.strip(), "--confusable") for c in confusable.split(","))
    if class_name is not None:
        target = _class_id(classes, class_name, "--class")
        try:
            swap_from = swap_from or (confusable_for(ws, target),)
        except LookupError as exc:
            raise fail(str(exc)) from exc
        return [(SynthesisRequest(target_class=target, count=n, seed=seed, confusable_classes=swap_from,
                                  max_cost_usd=max_cost_usd), None)]
    try:
        ids = active_cluster_ids(ws) if all_clusters else [cluster]
        specs = [load_cluster(ws, cid) for cid in ids]
    except (ClusterError, LookupError) as exc:
        raise fail(str(exc)) from exc
    if not specs:
        raise fail("no active missed or confusion cluster to synthesise for (run `edgeloop clusters` first)")
    out = []
    for spec in specs:
        prompt = spec.prompts[seed % len(spec.prompts)] if spec.prompts else {}
        try:
            neighbours = swap_from or ((spec.confusable_class,) if spec.confusable_class is not None
                                       else (confusable_for(ws, spec.target_class),))
        except LookupError as exc:
            raise fail(f"cluster {spec.id}: {exc}") from exc
        out.append((SynthesisRequest(
            target_class=spec.target_class, count=n, seed=seed, cluster_id=spec.id, prompt=prompt.get("prompt"),
            negative_prompt=prompt.get("negative_prompt"), edit_instruction=prompt.get("edit_instruction"),
            confusable_classes=neighbours, attributes=spec.attributes, max_cost_usd=max_cost_usd), spec))
    return out


@app.command()
def synthesize(
    n: Annotated[int, typer.Option("--n", help="Images to make per cluster (or for the class).")],
    cluster: Annotated[Optional[str], typer.Option(help="A failure cluster id (see `edgeloop clusters`).")] = None,
    all_clusters: Annotated[bool, typer.Option("--all", help="Every active missed or confusion cluster.")] = False,
    class_name: Annotated[Optional[str], typer.Option("--class", help="A target class, without a cluster.")] = None,
    generator: Annotated[str, typer.Option(help="swap, paste, gemini-edit, gemini or imagen.")] = "swap",
    confusable: Annotated[Optional[str], typer.Option(
        help="Classes swap turns into the target (comma-separated); default: what the model confuses it with, "
             "else the class most alike in shape.")] = None,
    seed: Annotated[int, typer.Option(help="Seed: the same seed and material make the same images.")] = 0,
    max_cost_usd: Annotated[Optional[float], typer.Option(help="Cloud generators stop before spending more.")] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Make training images for the model's blind spots, filter them, and store the kept ones (training only).

    The offline generators copy only the workspace's own verified labels: `swap` turns confusable objects
    into the target class in place, `paste` inserts target-class crops into verified frames.
    """
    if sum([cluster is not None, all_clusters, class_name is not None]) != 1:
        raise fail("give exactly one of --cluster ID, --all or --class NAME")
    if n < 1:
        raise fail(f"--n {n} must be at least 1")
    if max_cost_usd is not None and max_cost_usd < 0:
        raise fail(f"--max-cost-usd {max_cost_usd} must not be negative")
    ws = open_workspace(workspace)
    with ws.catalog.connect() as con:
        classes = catalog_classes(con)
    runs = _requests(ws, cluster, all_clusters, class_name, confusable, n, seed, max_cost_usd)
    # Before the generator is built: a cloud one needs credentials, and the fix here is another command.
    if why := next(filter(None, (missing_prompt(generator, request) for request, _ in runs)), None):
        raise fail(why)
    try:
        chosen = make_generator(generator, ws)
    except ValueError as exc:
        raise fail(str(exc)) from exc
    reports = []
    for request, spec in runs:
        label = f"{chosen.name} {spec.id if spec else classes[request.target_class]}"
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("kept {task.fields[kept]} rejected {task.fields[rejected]}"), TimeRemainingColumn())
        progress = Progress(*columns, console=err, transient=True, disable=not show_progress(as_json))
        with progress as bar, ultralytics_to_stderr():
            task = bar.add_task(label, total=request.count, kept=0, rejected=0)

            def show(p, task=task) -> None:  # noqa: ANN001
                bar.update(task, completed=p.made, kept=p.kept, rejected=p.rejected)

            try:
                report = run_synthesis(ws, chosen, request, cluster=spec, progress=show)
            except (ValueError, LookupError) as exc:  # every adapter's "cannot make this from that material"
                raise fail(str(exc)) from exc
        reports.append(report.as_dict())
    if as_json:
        emit(reports[0] if class_name is not None or cluster is not None else {"runs": reports}, True)
        return
    table = Table("run", "generator", "for", "kept", "hard", "rejected", "domain gap (real halves)")
    for r in reports:
        gap = r["domain_gap"]
        table.add_row(r["run_id"][:12], r["generator"], r["cluster_id"] or classes[r["target_class"]],
                      str(r["kept"]), str(r["hard"]),
                      ", ".join(f"{k} {v}" for k, v in r["rejected"].items()) or "0",
                      f"{gap['frechet']:.3g} ({gap['real_halves']:.3g})" if gap else "-")
    console.print(table)


@synthetic_app.command("report")
def synthetic_report(
    out: Annotated[Optional[Path], typer.Option(help="Folder for the contact sheets (default: "
                                                     "WORKSPACE/synthesis/sheets).")] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Kept and rejected images by reason and by cluster, each run's domain gap, and contact sheets (PNG)."""
    ws = open_workspace(workspace)
    summary = synthesis_summary(ws)
    sheets = write_contact_sheets(ws, out or ws.settings.workspace / "synthesis" / "sheets")
    summary["sheets"] = [str(p) for p in sheets]
    if as_json:
        emit(summary, True)
        return
    table = Table("cluster or class", "kept", "rejected", title="synthetic images")
    for group, counts in summary["by_cluster"].items():
        table.add_row(group, str(counts["kept"]), ", ".join(f"{k} {v}" for k, v in counts["rejected"].items()) or "0")
    console.print(table)
    reasons = ", ".join(f"{k} {v}" for k, v in summary["rejected_by_reason"].items())
    console.print(f"kept {summary['kept']} ({summary['kept_hard']} hard for the champion), rejected "
                  f"{summary['rejected']}" + (f" ({reasons})" if reasons else ""), markup=False, highlight=False)
    if d := summary["latest_dataset"]:
        console.print(f"latest data set v{d['version']}: {d['n_synthetic']} of {d['n_train']} training images "
                      f"synthetic ({d['synthetic_share']:.0%}" + (f", cap {d['cap']:.0%})" if d["cap"] else ")"),
                      markup=False, highlight=False)
    for path in summary["sheets"]:
        console.print(f"contact sheet: {path}")
