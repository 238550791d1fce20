"""The review stages as Prefect flows: push the captures most worth a person's time, pull finished verdicts.

Both run `feedback.review.stage`, as `edgeloop review push/pull` do; Label Studio's calls retry; pulling twice
changes nothing.
"""

from __future__ import annotations

from prefect import flow, task

from feedback.review import stage
from feedback.review.boxes import prepare_vectors
from feedback.review.stage import PullResult, PushResult, Selection
from flows.common import CATALOG_LIMIT, Skipped, limited, open_workspace


@task(name="selection-vectors", retries=1)
def selection_vectors(workspace: str | None) -> str:
    """Embeddings and box scans active selection reads (only what is missing is computed)."""
    return prepare_vectors(open_workspace(workspace), progress=False)


@task(name="review-tasks", retries=3, retry_delay_seconds=30)
def review_tasks(workspace: str | None, budget: int, selection: Selection, embedder: str | None, reviewer: str,
                 labels: str | None, budget_seconds: float | None = None) -> PushResult:
    ws = open_workspace(workspace)
    with limited(CATALOG_LIMIT):
        return stage.push(ws, stage.make_reviewer(ws.settings, reviewer, labels), selection, budget=budget,
                          budget_seconds=budget_seconds, embedder=embedder)


@flow(name="review-push", log_prints=True)
def review_push_flow(workspace: str | None = None, budget: int = 100, reviewer: str = "label-studio",
                     labels: str | None = None, selection: Selection | None = None,
                     budget_seconds: float | None = None) -> PushResult | Skipped:
    """Choose up to `budget` captures (or `budget_seconds` of a person's predicted time) and create pre-annotated
    review tasks (hourly by default); `selection` holds every switch `edgeloop review push` has."""
    if skip := stage.push_skip(open_workspace(workspace)):
        return {"skipped": skip}
    selection = selection or Selection()
    embedder = selection_vectors(workspace) if selection.strategy == "active" else None
    report = review_tasks(workspace, budget, selection, embedder, reviewer, labels, budget_seconds)
    print(f"review push: {report['pushed']} new tasks ({report['already_pushed']} already pushed)")
    return report


@task(name="verified-labels", retries=3, retry_delay_seconds=30)
def verified_labels(workspace: str | None, reviewer: str, labels: str | None, holdout_share: float) -> PullResult:
    ws = open_workspace(workspace)
    with limited(CATALOG_LIMIT):
        return stage.pull_result(*stage.pull(ws, stage.make_reviewer(ws.settings, reviewer, labels),
                                             holdout_share=holdout_share))


@flow(name="review-pull", log_prints=True)
def review_pull_flow(workspace: str | None = None, reviewer: str = "label-studio", labels: str | None = None,
                     holdout_share: float = 0.2) -> PullResult | Skipped:
    """Harvest answered hunt questions and finished reviews as verified labels and failure records (every 10
    minutes by default)."""
    if skip := stage.pull_skip(open_workspace(workspace)):
        return {"skipped": skip}
    report = verified_labels(workspace, reviewer, labels, holdout_share)
    print(f"review pull: {report}")
    return report
