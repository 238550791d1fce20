"""The review stages as Prefect flows: push the captures most worth a person's time, pull finished verdicts.

Label Studio is an outside service, so its calls retry; pulling twice changes nothing.
"""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow, task

from feedback.review.boxes import prepare_vectors
from feedback.review.selection import SelectionConfig
from feedback.review.workflow import pull_reviews, push_for_review
from flows.common import CATALOG_LIMIT, limited, make_reviewer, open_workspace
from store.labels import catalog_classes


@task(name="selection-vectors", retries=1)
def selection_vectors(workspace: str | None) -> str:
    """Embeddings and box scans active selection reads (only what is missing is computed)."""
    return prepare_vectors(open_workspace(workspace), progress=False)


@task(name="review-tasks", retries=3, retry_delay_seconds=30)
def review_tasks(workspace: str | None, budget: int, strategy: str, embedder: str | None, reviewer: str,
                 labels: str | None, seed: int, watch_classes: list[str] | None = None) -> dict:
    ws = open_workspace(workspace)
    with ws.catalog.connect() as con:
        names = catalog_classes(con)
    # The cycle's watched classes are hunted whatever their verified counts, as `review push --watch-classes`.
    watch = tuple(names.index(c) for c in (watch_classes or ws.settings.watch_classes) if c in names)
    with limited(CATALOG_LIMIT):
        report = push_for_review(ws, budget, reviewer=make_reviewer(ws, reviewer, labels),
                                 selection=SelectionConfig(strategy=strategy, seed=seed, embedder=embedder,  # type: ignore[arg-type]
                                                           watch_classes=watch))
    rare = [p.parts.get("rare", 0.0) for p in report.picks]
    return {"pushed": report.pushed, "already_pushed": report.already_pushed, "project": report.project,
            "strategy": strategy, "embedder": embedder,
            "picks": [{"capture": p.capture_id, "score": round(p.score, 4),
                       "parts": {k: round(v, 4) for k, v in p.parts.items()}} for p in report.picks],
            "mean_rare": round(sum(rare) / len(rare), 4) if rare else None}


@flow(name="review-push", log_prints=True)
def review_push_flow(workspace: str | None = None, budget: int = 100, strategy: str = "active",
                     reviewer: str = "label-studio", labels: str | None = None, seed: int = 0,
                     watch_classes: list[str] | None = None) -> dict:
    """Choose up to `budget` captures and create pre-annotated review tasks (hourly by default)."""
    embedder = selection_vectors(workspace) if strategy == "active" else None
    report = review_tasks(workspace, budget, strategy, embedder, reviewer, labels, seed, watch_classes)
    print(f"review push: {report['pushed']} new tasks ({report['already_pushed']} already pushed)")
    return report


@task(name="verified-labels", retries=3, retry_delay_seconds=30)
def verified_labels(workspace: str | None, reviewer: str, labels: str | None, holdout_share: float) -> dict:
    ws = open_workspace(workspace)
    with limited(CATALOG_LIMIT):
        pulled = asdict(pull_reviews(ws, reviewer=make_reviewer(ws, reviewer, labels), holdout_share=holdout_share))
    pulled.pop("efforts")  # each task's effort is in the catalog; the stage's result keeps the sums
    return pulled


@flow(name="review-pull", log_prints=True)
def review_pull_flow(workspace: str | None = None, reviewer: str = "label-studio", labels: str | None = None,
                     holdout_share: float = 0.2) -> dict:
    """Harvest finished reviews as verified labels and failure records (every 10 minutes by default)."""
    report = verified_labels(workspace, reviewer, labels, holdout_share)
    print(f"review pull: {report}")
    return report
