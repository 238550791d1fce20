"""The human-review round trip: send chosen captures to a reviewer, bring verdicts back as labels.

The reviewer is a port (`Reviewer`) with two adapters: Label Studio for people, the oracle for benchmarks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal, Protocol

import duckdb
import numpy as np
import supervision as sv

from edge.protocol import utc_now
from feedback.review.effort import CostModel, TaskEffort, skip_effort, summarise, task_effort
from feedback.review.failures import record_failures
from feedback.review.selection import SelectionConfig, select_captures
from store.hunt_tasks import confirmed_boxes
from store.labels import (
    add_image, add_label, assign_split, catalog_classes, ensure_classes, holdout_by_hash, label_hash,
)
from store.models import champion, list_models
from store.review_history import shown_detections
from store.review_tasks import (
    add_pushed_tasks, cancel_task, count_pushed, pushed_among, resolve_task, review_captures, review_detections,
    reviewer_tasks, task_states,
)
from store.settings import Workspace
from store.signing import signed_blob_url, signing_key

Verdict = Literal["verified", "skipped", "cancelled"]

DEFAULT_PROJECT = "edgeloop review"
URL_TTL_S = 14 * 24 * 3600  # annotators' image links last one review round; the API answers 403 "expired" after


class ReviewError(Exception):
    """Review could not go ahead; the message says what to fix."""


class ReviewConfigError(ReviewError):
    """Something the review needs is not configured (URL, token, class list) or does not match."""


class ReviewServiceError(ReviewError):
    """The review service (Label Studio) is down, too slow, or refused a request."""


@dataclass(frozen=True)
class ReviewItem:
    """One capture as a reviewer sees it: the image, its size, and what the edge model said."""

    capture_id: str
    sha256: str
    width: int
    height: int
    image_url: str | None = None  # signed and expiring; None for reviewers that show no images
    source_uri: str | None = None
    source_frame: int | None = None
    model_version: str | None = None
    # What the task shows before anyone edits it: the edge's detections (xyxy px, class_id, confidence).
    detections: sv.Detections = field(default_factory=sv.Detections.empty)


@dataclass(frozen=True)
class PushedTask:
    """A task the reviewer accepted earlier, as the workflow knows it."""

    task_id: str
    item: ReviewItem


@dataclass(frozen=True)
class ReviewResult:
    """One finished task: skipped, or verified boxes in pixels with catalog class ids."""

    task_id: str
    capture_id: str
    # skipped: the annotator pressed Skip (Label Studio's `was_cancelled`) or the oracle has no answer;
    # cancelled: the task vanished from the reviewer (deleted in Label Studio) before anyone finished it.
    status: Verdict
    boxes: sv.Detections = field(default_factory=sv.Detections.empty)  # verified: xyxy px and catalog class_id
    annotator: str | None = None
    annotation_id: str | None = None
    updated_at: datetime | None = None
    lead_time_s: float | None = None  # seconds the reviewer spent, where the tool measured it (Label Studio)


class Reviewer(Protocol):
    """Where captures go to be verified. Adapters: `LabelStudioReviewer`, `OracleReviewer`."""

    name: str  # recorded in review_tasks.reviewer
    shows_images: bool  # False: no public URL is needed to push

    def ensure_project(self, title: str, classes: Sequence[str]) -> str | None: ...

    def push(self, project: str | None, items: Sequence[ReviewItem], classes: Sequence[str]) -> list[str]:
        """Create one task per item (or find the one a failed push left); task ids in item order."""
        ...

    def pull(
        self, project: str | None, classes: Sequence[str], tasks: Sequence[PushedTask] | None = None
    ) -> list[ReviewResult]:
        """Results of the finished tasks among `tasks` (all of the project's when None)."""
        ...


class Pick(Protocol):
    """A capture chosen for review and why (selection's `Candidate` is one)."""

    capture_id: str
    score: float
    parts: dict[str, float]


@dataclass(frozen=True)
class Listed:
    """A capture picked by name rather than by selection, e.g. the demo reviewing everything."""

    capture_id: str
    score: float = 0.0
    parts: dict[str, float] = field(default_factory=dict)


@dataclass
class PushReport:
    reviewer: str
    project: str | None
    strategy: str
    tasks: dict[str, str] = field(default_factory=dict)  # capture id -> task id, pushed now
    already_pushed: int = 0  # picks that had a review task already
    picks: list[Pick] = field(default_factory=list)  # what selection chose, with each score's parts

    @property
    def pushed(self) -> int:
        return len(self.tasks)


@dataclass
class PullReport:
    verified: int = 0  # new verified labels (first verdicts and changed ones)
    skipped: int = 0
    cancelled: int = 0
    unchanged: int = 0  # finished tasks whose verdict was stored already
    pending: int = 0  # pushed tasks nobody has finished yet
    boxes: int = 0
    failures: int = 0
    holdout: int = 0  # new verified labels whose image is on the holdout side
    tasks: int = 0  # every task ever pushed to this reviewer: 0 means there was nothing to pull yet
    seconds: float = 0.0  # people's time behind the new verdicts (measured lead_time, else the cost model)
    measured: int = 0  # new verdicts whose seconds Label Studio measured (the rest: the cost model's)
    effort_by_class: dict[str, dict[str, float]] = field(default_factory=dict)  # boxes, seconds, boxes per hour
    efforts: list[dict] = field(default_factory=list, repr=False)  # each new verdict's, as stored


# ----------------------------------------------------------------------------- push


def push_for_review(
    ws: Workspace,
    budget: int,
    *,
    reviewer: Reviewer,
    selection: SelectionConfig | None = None,
    public_url: str | None = None,
    project_title: str = DEFAULT_PROJECT,
    budget_seconds: float | None = None,
) -> PushReport:
    """Choose up to `budget` captures (operator-flagged first), or as many as `budget_seconds` of a person's
    predicted time allow, and send them to `reviewer`."""
    config = selection or SelectionConfig()
    picks = select_captures(ws, budget, config, budget_seconds)
    report = push_captures(ws, picks, reviewer=reviewer, strategy=config.strategy, public_url=public_url,
                           project_title=project_title)
    report.picks = list(picks)
    return report


def push_captures(
    ws: Workspace,
    picks: Sequence[Pick],
    *,
    reviewer: Reviewer,
    strategy: str,
    public_url: str | None = None,
    project_title: str = DEFAULT_PROJECT,
    extra_boxes: Mapping[str, sv.Detections] | None = None,
) -> PushReport:
    """Create review tasks for `picks`; review_tasks rows are written only once the reviewer took them.
    `extra_boxes` (capture id -> boxes) join a capture's pre-annotation: a hunt's confirmed boxes."""
    with ws.catalog.connect() as con:
        classes = catalog_classes(con) or _adopt_model_classes(con)
        done = pushed_among(con, [p.capture_id for p in picks])
        fresh = [p for p in dict((p.capture_id, p) for p in picks).values() if p.capture_id not in done]
        items = load_items(con, [p.capture_id for p in fresh])
    for i, item in enumerate(items):
        if extra_boxes and item.capture_id in extra_boxes:
            items[i] = replace(item, detections=sv.Detections.merge([item.detections, extra_boxes[item.capture_id]]))
    report = PushReport(reviewer=reviewer.name, project=None, strategy=strategy, already_pushed=len(done))
    if not fresh:
        return report
    if not classes:
        raise ReviewConfigError("the catalog has no class list yet and no model to take one from: import a "
                                "labelled data set (`edgeloop import`) or register a model (`edgeloop gate`)")
    if reviewer.shows_images:
        items = with_urls(ws, items, public_url)

    report.project = reviewer.ensure_project(project_title, classes)
    task_ids = reviewer.push(report.project, items, classes)
    if len(task_ids) != len(items):
        raise ReviewServiceError(f"{reviewer.name} answered {len(task_ids)} task ids for {len(items)} captures")

    with ws.catalog.connect() as con:
        add_pushed_tasks(con, reviewer.name, report.project, strategy, utc_now(), [
            (p.capture_id, task_id, p.score, p.parts) for p, task_id in zip(fresh, task_ids, strict=True)])
    report.tasks = {p.capture_id: task_id for p, task_id in zip(fresh, task_ids, strict=True)}
    return report


def _adopt_model_classes(con: duckdb.DuckDBPyConnection) -> list[str]:
    """A workspace with captures but no imported labels labels in the deployed model's classes: the champion's,
    else the newest registered model's. Adopted into the catalog, so every later import must match them."""
    model = champion(con) or next(reversed(list_models(con)), None)
    if model is None:
        return []
    classes = list(model.classes)
    ensure_classes(con, classes)
    return classes


def with_urls(ws: Workspace, items: list[ReviewItem], public_url: str | None) -> list[ReviewItem]:
    base = public_url or ws.settings.public_url
    if not base:
        raise ReviewConfigError(
            "annotators' browsers need the ingest API's public address to load images: pass --public-url "
            "or set EDGELOOP_PUBLIC_URL (public_url in edgeloop.toml)"
        )
    key = signing_key(ws.objects)
    return [replace(item, image_url=signed_blob_url(base, item.sha256, key, ttl_s=URL_TTL_S)) for item in items]


def load_items(con: duckdb.DuckDBPyConnection, capture_ids: list[str], *, detections: bool = True) -> list[ReviewItem]:
    """ReviewItems for `capture_ids`, in that order; LookupError names any the catalog lacks."""
    rows = review_captures(con, capture_ids)
    missing = [c for c in capture_ids if c not in rows]
    if missing:
        raise LookupError(f"{len(missing)} capture(s) are not in the catalog, e.g. {missing[0]!r}")
    found: dict[str, list[tuple]] = {c: [] for c in capture_ids}
    if detections:
        for row in review_detections(con, capture_ids):
            found[row[0]].append(row[1:])
    items = []
    for c in capture_ids:
        _, sha, width, height, uri, frame, model_version = rows[c]
        dets = np.asarray(found[c], dtype=np.float64).reshape(-1, 6)
        items.append(ReviewItem(
            capture_id=c, sha256=sha, width=int(width), height=int(height), source_uri=uri,
            source_frame=None if frame is None else int(frame), model_version=model_version,
            detections=sv.Detections(dets[:, 2:], confidence=dets[:, 1], class_id=dets[:, 0].astype(np.int64)),
        ))
    return items


# ----------------------------------------------------------------------------- pull


def pull_reviews(ws: Workspace, *, reviewer: Reviewer, holdout_share: float = 0.2) -> PullReport:
    """Store every new verdict as a label, in one catalog transaction; safe to repeat.

    Everything is fetched from the reviewer before the catalog is touched, so a reviewer that
    fails half-way leaves the catalog as it was and the next pull picks up from the same place.
    """
    with ws.catalog.connect() as con:
        classes = catalog_classes(con)
        rows = reviewer_tasks(con, reviewer.name)
        items = {item.capture_id: item for item in load_items(con, [r[0] for r in rows], detections=False)}
    by_project: dict[str | None, list[PushedTask]] = {}
    for capture_id, project, task_id in rows:
        by_project.setdefault(project, []).append(PushedTask(task_id, items[capture_id]))
    results = [r for project, tasks in by_project.items() for r in reviewer.pull(project, classes, tasks)]

    report = PullReport(tasks=len(rows))
    cost = CostModel.from_settings(ws.settings.review_seconds)
    with ws.catalog.connect() as con:
        con.begin()  # all of this pull's verdicts, or (on any error) none of them
        # The tasks' state is read inside the transaction: a concurrent pull may have stored some verdicts.
        state = task_states(con, reviewer.name)
        for result in results:
            row = state.get((result.capture_id, result.task_id))
            if row is not None:  # None: not ours, e.g. a duplicate task a failed push left behind
                _store(con, result, row, reviewer.name, holdout_share, report, cost)
        report.pending = count_pushed(con, reviewer.name)
        con.commit()
    report.effort_by_class = summarise(report.efforts, classes, cost)["by_class"]
    return report


def _store(con: duckdb.DuckDBPyConnection, result: ReviewResult, row: tuple, reviewer: str, holdout_share: float,
           report: PullReport, cost: CostModel) -> None:
    """Record one result against its task's stored state `row`; a verdict seen before changes nothing."""
    status, project, current_hash, sha, width, height, media_type = row
    resolved_at = result.updated_at or utc_now()

    if result.status == "cancelled":
        if status == "pushed":
            cancel_task(con, result.capture_id, resolved_at)
            report.cancelled += 1
        else:
            report.unchanged += 1  # a verdict outlives its task
        return

    verified = result.status == "verified"
    boxes = result.boxes.xyxy.astype(np.float64) if verified else np.zeros((0, 4))
    class_ids = result.boxes.class_id.astype(np.int64) if verified else np.zeros(0, np.int64)
    # The same verdict again (a second pull, an annotation re-submitted unchanged) is not a new label.
    if status == result.status and (not verified or current_hash == label_hash(sha, boxes, class_ids)):
        report.unchanged += 1
        return

    add_image(con, sha, width, height, media_type, "real", f"capture:{result.capture_id}")
    if verified:
        wanted = "holdout" if holdout_by_hash(sha, holdout_share) else "train"
        report.holdout += assign_split(con, sha, wanted) == "holdout"
    provenance = {
        "capture": result.capture_id, "reviewer": reviewer, "project": project, "task": result.task_id,
        "annotation": result.annotation_id,
        "updated_at": result.updated_at.isoformat() if result.updated_at else None,
    }
    label_id = add_label(con, sha, boxes, class_ids, source="review", status=result.status,
                         annotator=result.annotator, provenance=provenance)
    if verified:
        report.verified += 1
        report.boxes += len(boxes)
        report.failures += record_failures(con, result.capture_id, label_id)
        shown = _shown(con, result.capture_id)
        effort = task_effort(boxes, class_ids, shown[:, 2:], shown[:, 0], shown[:, 1], cost, result.lead_time_s)
    else:
        report.skipped += 1
        effort = skip_effort(cost, result.lead_time_s)
    _count_effort(report, effort)
    resolve_task(con, result.capture_id, result.status, resolved_at, label_id, effort.as_json())


def _shown(con: duckdb.DuckDBPyConnection, capture_id: str) -> np.ndarray:
    """The pre-annotation a capture's task showed, as (class, confidence, x1, y1, x2, y2) rows: the device's boxes,
    and any a person confirmed in the rare-class pass (a hunt's yes)."""
    confirmed = [(k, 1.0, *box) for k, box in confirmed_boxes(con, capture_id)]
    return np.vstack([shown_detections(con, capture_id), np.asarray(confirmed, np.float64).reshape(-1, 6)])


def _count_effort(report: PullReport, effort: TaskEffort) -> None:
    report.seconds += effort.seconds
    report.measured += effort.source == "lead_time"
    report.efforts.append(effort.as_json())
