"""The rare-class pass: a yes / no / not-sure question per candidate box ("is this a no_helmet?"), seconds each.

A yes or not-sure sends the frame to a full review (a yes pre-annotated with the box); a no is a hard negative.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal, Protocol

import numpy as np
import supervision as sv

from edge.protocol import utc_now
from feedback.review.effort import CostModel
from feedback.review.failures import box_iou
from feedback.review.oracle import OracleReviewer, label_file, read_yolo_labels
from feedback.review.selection import fit_catalog_probe
from feedback.review.workflow import Listed, PushReport, Reviewer, ReviewItem, load_items, push_captures, with_urls
from store.hunt_tasks import HuntRow, add_hunt_tasks, open_hunts, resolve_hunt, unasked_boxes
from store.labels import catalog_classes
from store.settings import Workspace
from store.vectors import BOX, read_vectors

Answer = Literal["yes", "no", "unsure", "cancelled"]
HUNT_PROJECT = "edgeloop hunt"


@dataclass(frozen=True)
class Question:
    """One candidate box to ask about, on its frame (the reviewer shows the whole frame, the box drawn)."""

    ref: str  # <capture id>/<idx>
    item: ReviewItem  # the frame; its boxes are just the one asked about
    class_id: int
    score: float  # the probe's P(class) for the box


@dataclass(frozen=True)
class Verdict:
    ref: str
    task_id: str
    answer: Answer
    annotator: str | None = None
    lead_time_s: float | None = None
    updated_at: datetime | None = None


class HuntReviewer(Protocol):
    """Where the questions go: `OracleHunt` (the answers' files) or `LabelStudioHunt`."""

    name: str
    shows_images: bool

    def ensure_hunt_project(self, title: str, class_name: str) -> str | None: ...

    def push_hunt(self, project: str | None, questions: Sequence[Question], class_name: str) -> list[str]: ...

    def pull_hunt(self, project: str | None, asked: Sequence[tuple[str, Question]]) -> list[Verdict]: ...


@dataclass
class HuntReport:
    asked: int = 0
    yes: int = 0
    no: int = 0
    unsure: int = 0
    cancelled: int = 0
    pending: int = 0
    seconds: float = 0.0
    measured: int = 0
    to_review: PushReport | None = None  # the frames a yes or not-sure sent to a full review
    refs: list[str] = field(default_factory=list)


def choose_questions(ws: Workspace, class_id: int, model: str, *, budget: int | None = None,
                     budget_seconds: float | None = None, cost: CostModel | None = None) -> list[Question]:
    """The unasked candidate boxes the probe finds likeliest to be `class_id`, best first, as many as `budget`
    questions or `budget_seconds` of a person's time (one question costs what checking a box costs)."""
    cost = cost or CostModel()
    each = cost.seconds["kept"]
    if budget_seconds is not None:
        budget = min(budget or 10**9, int(budget_seconds // each))
    with ws.catalog.connect() as con:
        boxes = unasked_boxes(con, model)
        refs, vectors = read_vectors(con, BOX, model)
        probe = fit_catalog_probe(con, model, [class_id])
        if not boxes or not budget or class_id not in probe.classes:
            return []
        row = {r: i for i, r in enumerate(refs)}
        known = [b for b in boxes if b.ref in row]  # a box not embedded yet cannot be scored
        scores = probe.score(vectors[[row[b.ref] for b in known]])[:, probe.classes.index(class_id)]
        order = np.argsort(-scores, kind="stable")[:budget]
        chosen = [known[i] for i in order]
        items = {i.capture_id: i for i in load_items(con, sorted({b.capture_id for b in chosen}), detections=False)}
    return [Question(b.ref, replace(items[b.capture_id], detections=_one_box(b.box, class_id, float(s))), class_id,
                     float(s))
            for b, s in zip(chosen, scores[order], strict=True)]


def push_hunt(ws: Workspace, questions: Sequence[Question], *, reviewer: HuntReviewer, class_name: str,
              public_url: str | None = None) -> int:
    """Send the questions; rows are written once the reviewer took them. Returns how many were asked."""
    if not questions:
        return 0
    if reviewer.shows_images:
        items = with_urls(ws, [q.item for q in questions], public_url)
        questions = [replace(q, item=i) for q, i in zip(questions, items, strict=True)]
    project = reviewer.ensure_hunt_project(f"{HUNT_PROJECT}: {class_name}", class_name)
    task_ids = reviewer.push_hunt(project, questions, class_name)
    with ws.catalog.connect() as con:
        add_hunt_tasks(con, reviewer.name, project, questions[0].class_id, utc_now(), [
            (q.ref, q.item.capture_id, tuple(map(float, q.item.detections.xyxy[0])), q.score, t)
            for q, t in zip(questions, task_ids, strict=True)])
    return len(questions)


def pull_hunt(ws: Workspace, *, reviewer: HuntReviewer, full_review: Reviewer, public_url: str | None = None,
              cost: CostModel | None = None) -> HuntReport:
    """Store every verdict; a yes or not-sure sends its frame to `full_review` (a yes with the box drawn in)."""
    cost = cost or CostModel()
    with ws.catalog.connect() as con:
        rows = open_hunts(con, reviewer.name)
        items = {i.capture_id: i for i in load_items(con, sorted({r.capture_id for r in rows}), detections=False)}
        classes = catalog_classes(con)
    asked = {r.id: r for r in rows}
    by_project: dict[str | None, list[tuple[str, Question]]] = {}
    for r in rows:
        by_project.setdefault(r.project, []).append((r.task_id or r.id, _question(r, items[r.capture_id])))
    verdicts = [v for project, pairs in by_project.items() for v in reviewer.pull_hunt(project, pairs)]
    report = HuntReport(asked=len(rows))
    review: dict[str, Listed] = {}
    extra: dict[str, sv.Detections] = {}
    with ws.catalog.connect() as con:
        for v in verdicts:
            row = asked[v.ref]
            measured = v.lead_time_s is not None and v.lead_time_s > 0
            seconds = float(v.lead_time_s) if measured else cost.seconds["kept"]
            effort = {"seconds": seconds, "source": "lead_time" if measured else "cost_model", "answer": v.answer}
            resolve_hunt(con, v.ref, v.answer, v.updated_at or utc_now(), None if v.answer == "cancelled" else effort)
            setattr(report, v.answer, getattr(report, v.answer) + 1)
            if v.answer == "cancelled":
                continue
            report.seconds += seconds
            report.measured += measured
            report.refs.append(v.ref)
            if v.answer in ("yes", "unsure"):
                review.setdefault(row.capture_id, Listed(row.capture_id, 1.0, {"hunt": 1.0}))
            if v.answer == "yes":  # the person's yes becomes part of what the full review starts from
                extra[row.capture_id] = sv.Detections.merge([extra.get(row.capture_id, sv.Detections.empty()),
                                                             _one_box(row.box, row.class_id, 1.0)])
    report.pending = len(rows) - len(verdicts)
    if review and classes:
        report.to_review = push_captures(ws, list(review.values()), reviewer=full_review, strategy="hunt",
                                         public_url=public_url, extra_boxes=extra)
    return report


def _question(row: HuntRow, item: ReviewItem) -> Question:
    return Question(row.id, replace(item, detections=_one_box(row.box, row.class_id, 1.0)), row.class_id, 1.0)


def _one_box(box: Sequence[float], class_id: int, confidence: float) -> sv.Detections:
    """The box a question is about, as the frame's only detection (the reviewer shows just that one)."""
    return sv.Detections(np.asarray([box], np.float64), confidence=np.asarray([confidence]),
                         class_id=np.asarray([class_id], np.int64))


class OracleHunt:
    """Answers each question from the ground-truth files: yes where a true box of the class overlaps the asked
    one (IoU >= 0.5), no otherwise (and no without a label file: nothing of the class is known there)."""

    name = "oracle"
    shows_images = False

    def __init__(self, oracle: OracleReviewer) -> None:
        self.labels_dir = oracle.labels_dir

    def ensure_hunt_project(self, title: str, class_name: str) -> None:
        return None

    def push_hunt(self, project: str | None, questions: Sequence[Question], class_name: str) -> list[str]:
        return [q.ref for q in questions]

    def pull_hunt(self, project: str | None, asked: Sequence[tuple[str, Question]]) -> list[Verdict]:
        return [Verdict(q.ref, task_id, self._answer(q), annotator="oracle") for task_id, q in asked]

    def _answer(self, q: Question) -> Answer:
        item = q.item
        path = label_file(self.labels_dir, item.source_uri or item.capture_id, item.source_frame)
        if not path.is_file():
            return "no"
        boxes, class_ids = read_yolo_labels(path, item.width, item.height)
        same = boxes[class_ids == q.class_id]
        return "yes" if len(same) and box_iou(item.detections.xyxy[:1], same).max() >= 0.5 else "no"
