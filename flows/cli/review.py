"""`edgeloop review push/pull/embed` and `failures`: what people verify, and what the model got wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from edge.terminal import click
from feedback.review import stage
from feedback.review.boxes import prepare_vectors
from feedback.review.failures import failure_summary, format_failures
from feedback.review.oracle import OracleReviewer
from feedback.review.stage import PushResult, Selection
from feedback.review.workflow import PullReport, ReviewError
from flows.cli.common import (
    ClipModelOpt, JsonOpt, WorkspaceOpt, app, console, emit, err, existing_workspace, fail, open_workspace,
    show_progress, ultralytics_to_stderr, workspace_settings,
)
from store.labels import catalog_classes

# The Label Studio bridge is imported where a command talks to Label Studio: its SDK alone takes most of a second,
# which every other command and `--help` skip.
review_app = typer.Typer(help="Choose captures for people to verify (Label Studio), and bring verdicts back.",
                         no_args_is_help=True)
app.add_typer(review_app, name="review")


ReviewerOpt = Annotated[str, typer.Option(help="label-studio, or oracle (simulated annotators: needs --labels).")]
LabelsOpt = Annotated[Optional[Path], typer.Option(help="Ground-truth YOLO labels for the oracle reviewer.")]
LsUrlOpt = Annotated[Optional[str], typer.Option("--label-studio-url", envvar="EDGELOOP_LABEL_STUDIO_URL",
                                                 help="Label Studio base URL.")]
PublicUrlOpt = Annotated[Optional[str], typer.Option(envvar="EDGELOOP_PUBLIC_URL",
                                                     help="Ingest API URL the annotators' browsers reach.")]
ProjectOpt = Annotated[str, typer.Option(help="Label Studio project title (created or reused).")]
LsTokenOpt = Annotated[Optional[str], typer.Option("--label-studio-token", envvar="EDGELOOP_LABEL_STUDIO_TOKEN",
                                                   help="Label Studio API token (owner or manager).")]
ClipOpt = Annotated[Optional[str], typer.Option(
    help="Fetch pretrained CLIP weights by tag when online (e.g. laion2b_s34b_b79k with --clip-model ViT-B-32); "
    "default: EDGELOOP_CLIP_WEIGHTS, else random weights.")]


def _reviewer(settings, reviewer: str, labels: Path | None, url: str | None, token: str | None):  # noqa: ANN001, ANN202
    """The chosen reviewer (`stage.make_reviewer`), checked before any work: an oracle's labels are there, a
    Label Studio is configured, answers and takes the token (else one `error:` line and exit 2)."""
    try:
        chosen = stage.make_reviewer(settings, reviewer, labels, url=url, token=token)
        if not isinstance(chosen, OracleReviewer):
            chosen.ping()  # type: ignore[attr-defined]
    except (ReviewError, ValueError) as exc:
        raise fail(str(exc)) from exc
    return chosen


@review_app.command("embed")
def review_embed(workspace: WorkspaceOpt = None, clip_model: ClipModelOpt = None, clip_pretrained: ClipOpt = None,
                 as_json: JsonOpt = False) -> None:
    """Compute what selection needs and lacks: frame, box, verified-box and failure-crop vectors.

    `review push` does this by itself; run it ahead of time to make a later push quick. The champion
    model's own features are used unless CLIP weights are given.
    """
    ws = open_workspace(workspace)
    with ultralytics_to_stderr():
        name = prepare_vectors(ws, clip_model=clip_model, clip_pretrained=clip_pretrained,
                               progress=show_progress(as_json))
    emit({"embedder": name}, as_json, f"vectors ready from {name}")


def _class_names(ws, names: str) -> tuple[str, ...]:  # noqa: ANN001
    wanted = tuple(n.strip() for n in names.split(",") if n.strip())
    with ws.catalog.connect() as con:
        known = catalog_classes(con)
    if unknown := [n for n in wanted if n not in known]:
        raise fail(f"--watch-classes {','.join(unknown)}: not among the catalog's classes {known}")
    return wanted


@review_app.command("push")
def review_push(
    ctx: typer.Context,
    budget: Annotated[Optional[int], typer.Option(help="How many captures to send to the reviewers.",
                                                  show_default=False)] = None,
    budget_seconds: Annotated[Optional[float], typer.Option(
        help="Instead of --budget: send as many captures as this many seconds of a person's time should verify "
             "(predicted per capture from the boxes it will show and the cost model; see --explain).",
        show_default=False)] = None,
    per_second: Annotated[bool, typer.Option(
        "--per-second/--per-image", help="Rank active picks by value per second of review instead of per image. "
        "Measured on pool/ at random's review time (bench/loop.py, arm active/s): it buys fewer rare boxes per "
        "hour than per-image ranking (seed 0: 59 against 95), so per image stays the default.")] = False,
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
    hunt: Annotated[Optional[str], typer.Option(
        help="A rare-class pass instead: ask yes / no / not sure about the candidate boxes the probe finds likeliest "
             "to be this class (a few seconds each); `review pull` sends every yes and not-sure frame to a full "
             "review and keeps every no as a hard negative.", show_default=False)] = None,
    reviewer: ReviewerOpt = "label-studio",
    labels: LabelsOpt = None,
    public_url: PublicUrlOpt = None,
    project: ProjectOpt = "edgeloop review",
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
    if budget is None and budget_seconds is None:  # click's own words, as when --budget was required
        budget_option = next(p for p in ctx.command.params if p.name == "budget")
        raise click.exceptions.MissingParameter(ctx=ctx, param=budget_option)
    if budget is not None and budget_seconds is not None:
        raise fail("give --budget N (captures) or --budget-seconds S (a person's time), not both")
    if budget is not None and budget < 1:
        raise fail(f"--budget {budget} must be at least 1")
    if budget_seconds is not None and budget_seconds <= 0:
        raise fail(f"--budget-seconds {budget_seconds:g} must be more than 0")
    if strategy not in ("active", "random"):
        raise fail(f"--strategy {strategy!r} must be 'active' or 'random'")
    # The reviewer first: a Label Studio that is not configured or not there is said before minutes of embedding.
    chosen = _reviewer(workspace_settings(workspace), reviewer, labels, label_studio_url, label_studio_token)
    ws = open_workspace(workspace)
    selection = Selection(strategy=strategy, uncertainty=uncertainty, diversity=diversity,  # type: ignore[arg-type]
                          class_balance=class_balance, rare=rare, evidence=evidence, failure=failure_boost,
                          seed=seed, per_second=per_second, watch_classes=_class_names(ws, watch_classes))
    try:
        with ultralytics_to_stderr():
            if hunt is not None:  # an unknown class is the stage's ValueError, naming --hunt
                asked = stage.push_hunt_questions(ws, chosen, hunt, budget=budget, budget_seconds=budget_seconds,
                                                  public_url=public_url, clip_model=clip_model,
                                                  clip_pretrained=clip_pretrained, progress=show_progress(as_json))
                return _hunt_pushed(asked, as_json)
            report = stage.push(ws, chosen, selection, budget=budget, budget_seconds=budget_seconds,
                                public_url=public_url, project_title=project, clip_model=clip_model,
                                clip_pretrained=clip_pretrained, progress=show_progress(as_json))
    except (ReviewError, LookupError, ValueError) as exc:
        raise fail(str(exc)) from exc
    picks = report.pop("picks")
    report.pop("mean_rare")
    out: dict[str, object] = dict(report) | ({"picks": picks} if explain else {})
    if as_json:
        emit(out, True)
        return
    if explain and picks:
        keys = sorted({k for p in picks for k in p["parts"]})
        table = Table("#", "capture", "score", *keys, "expected s", title="why each capture was picked")
        table.columns[1].min_width = 12  # the id a person looks up: shrink the parts' columns first
        for i, p in enumerate(picks, 1):
            table.add_row(str(i), p["capture"][:12], f"{p['score']:.3f}",
                          *(f"{p['parts'].get(k, 0):.3f}" for k in keys), f"{p['expected_s']:.1f}")
        console.print(table)
    # The predicted time where a person asked in seconds or asked why; a count budget's line stays as it was.
    console.print(_push_line(report, timed=budget_seconds is not None or explain))


def _push_line(report: PushResult, timed: bool = False) -> str:
    where = f"{report['reviewer']} project {report['project']}" if report["project"] else report["reviewer"]
    how = report["strategy"] + (f", embedder {report['embedder']}" if report["embedder"] else "")
    line = (f"pushed {report['pushed']} captures to {where} ({how}); {report['already_pushed']} picked were already "
            "pushed")
    return line + (f"; about {_minutes(report['expected_s'])} of a person's time predicted" if timed else "")


def _hunt_pushed(asked: PushResult, as_json: bool) -> None:
    emit({k: asked[k] for k in ("hunt", "asked", "expected_s")}, as_json,  # type: ignore[literal-required]
         f"asked {asked['asked']} yes/no questions about {asked['hunt']} ({asked['reviewer']}); about "
         f"{_minutes(asked['expected_s'])} of a person's time predicted"
         + ("" if asked["asked"] else ": no candidate box the probe can score for it yet"))


@review_app.command("pull")
def review_pull(
    reviewer: ReviewerOpt = "label-studio",
    labels: LabelsOpt = None,
    holdout_share: Annotated[float, typer.Option(
        help="Share of new verified captures that join the real holdout.")] = 0.2,
    label_studio_url: LsUrlOpt = None,
    label_studio_token: LsTokenOpt = None,
    public_url: PublicUrlOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Harvest finished reviews as verified labels and failure records (pulling twice changes nothing).

    Answered hunt questions come first: each yes or not-sure frame becomes a full review task, which the same pull
    collects where the reviewer answers at once (the oracle)."""
    if not 0.0 <= holdout_share < 1.0:
        raise fail(f"--holdout-share {holdout_share} must lie in [0, 1)")
    chosen = _reviewer(workspace_settings(workspace), reviewer, labels, label_studio_url, label_studio_token)
    ws = existing_workspace(workspace)  # pull only reads until there is something to pull
    try:
        report, hunted = (PullReport(), None) if ws is None else stage.pull(ws, chosen, holdout_share=holdout_share,
                                                                           public_url=public_url)
    except (ReviewError, LookupError, ValueError) as exc:
        raise fail(str(exc)) from exc
    if report.tasks == 0:
        err.print(f"nothing was pushed to {chosen.name} for review yet: run `edgeloop review push --budget N` first")
    if as_json:
        emit(stage.pull_result(report, hunted), True)
        return
    if hunted:
        console.print(_hunt_line(hunted))
    if report.tasks:
        console.print(_pull_line(report))


def _hunt_line(hunted) -> str:  # noqa: ANN001
    sent = hunted.to_review.pushed if hunted.to_review else 0
    return (f"hunt: {hunted.yes} yes, {hunted.no} no (hard negatives), {hunted.unsure} not sure, {hunted.cancelled} "
            f"cancelled in {_minutes(hunted.seconds)}; {sent} frames sent to a full review; {hunted.pending} "
            "questions still open")


def _pull_line(report) -> str:  # noqa: ANN001 (feedback.review.workflow.PullReport)
    return (f"pulled {report.verified} verified ({report.boxes} boxes, {report.failures} failures, {report.holdout} to "
            f"the holdout), {report.skipped} skipped, {report.cancelled} cancelled, {report.unchanged} unchanged; "
            f"people's time {_minutes(report.seconds)}"
            + (f" ({report.measured} timed by Label Studio, the rest by the cost model)" if report.measured else
               " (the cost model's)" if report.seconds else "")
            + "".join(f", {name} {row['boxes']} boxes at {row['boxes_per_hour']:g}/hour"
                      for name, row in report.effort_by_class.items() if row["boxes_per_hour"] is not None)
            + f"; {report.pending} of {report.tasks} tasks still pending")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


@app.command()
def failures(
    model_version: Annotated[Optional[str], typer.Option(help="Only this deployed model's failures.")] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What the deployed model got wrong on reviewed captures, by class and kind."""
    summary = failure_summary(open_workspace(workspace).catalog, model_version=model_version)
    emit(summary, as_json, format_failures(summary))
