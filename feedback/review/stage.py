"""The review stages as one typed service: what `edgeloop review push/pull`, the review flows and the cycle all run.

Selection's switches travel as one `Selection` (pydantic, so a flow parameter that deployments and the UI can set).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, ValidationError

from feedback.review.boxes import prepare_vectors
from feedback.review.effort import CostModel
from feedback.review.hunt import HuntReport, HuntReviewer, OracleHunt, choose_questions, pull_hunt, push_hunt
from feedback.review.oracle import OracleReviewer
from feedback.review.selection import SelectionConfig
from feedback.review.workflow import DEFAULT_PROJECT, PullReport, Reviewer, pull_reviews, push_for_review
from store.hunt_tasks import hunt_counts
from store.labels import catalog_classes
from store.review_tasks import count_candidates, count_pushed
from store.settings import Settings, Workspace


class Selection(BaseModel):
    """How `review push` picks captures: the strategy, and each part of the active score (off for ablation)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: Literal["active", "random"] = "active"
    uncertainty: bool = True  # captures the model was unsure about
    diversity: bool = True  # spread over scenes (k-center on frame embeddings)
    class_balance: bool = True  # classes rare among verified labels
    rare: bool = True  # boxes the probe calls a rare class
    evidence: bool = True  # the device's sub-threshold evidence for rare classes
    failure: bool = True  # boxes like verified missed or confused ones
    per_second: bool = False  # rank by value per second of review, not per image (measured worse: bench/loop.py)
    watch_classes: tuple[str, ...] = ()  # hunted whatever their verified counts; () = the workspace's
    seed: int = 0  # the random strategy's

    @classmethod
    def parse(cls, text: str, **given: Any) -> Selection:
        """`key=value,...` (as `edgeloop cycle --selection` takes it) over `given`; a bad key or value is a
        ValueError naming it. Lists (watch_classes) separate their items with `+`."""
        fields = dict(given)
        for pair in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = pair.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in cls.model_fields:
                raise ValueError(f"--selection {pair!r}: expected KEY=VALUE with KEY one of {', '.join(cls.model_fields)}")
            fields[key] = [v for v in value.split("+") if v] if key == "watch_classes" else value.strip()
        try:
            return cls(**fields)
        except ValidationError as exc:
            problem = exc.errors()[0]
            raise ValueError(f"--selection {'.'.join(map(str, problem['loc']))}: {problem['msg']}") from exc

    def config(self, ws: Workspace, embedder: str | None, cost: CostModel) -> SelectionConfig:
        """The selection code's own config: class names become the catalog's ids (an unknown one is a ValueError)."""
        with ws.catalog.connect() as con:
            names = catalog_classes(con)
        watched = self.watch_classes or tuple(c for c in ws.settings.watch_classes if c in names)
        if unknown := [c for c in watched if c not in names]:
            raise ValueError(f"watch class(es) {','.join(unknown)}: not among the catalog's classes {names}")
        return SelectionConfig(strategy=self.strategy, uncertainty=self.uncertainty, diversity=self.diversity,
                               class_balance=self.class_balance, rare=self.rare, evidence=self.evidence,
                               failure=self.failure, seed=self.seed, embedder=embedder,
                               watch_classes=tuple(names.index(c) for c in watched), per_second=self.per_second,
                               cost=cost)


class PushResult(TypedDict, total=False):
    pushed: int
    already_pushed: int
    reviewer: str
    project: str | None
    strategy: str
    embedder: str | None
    expected_s: float  # predicted seconds of a person's time for what was pushed
    mean_rare: float | None
    picks: list[dict[str, Any]]  # capture, score, expected_s, parts
    hunt: str  # a rare-class pass: the class asked about, and how many questions
    asked: int


class PullResult(TypedDict, total=False):
    verified: int
    skipped: int  # tasks people skipped (a stage with nothing to do is a flows.common.Skipped instead)
    cancelled: int
    unchanged: int
    pending: int
    boxes: int
    failures: int
    holdout: int
    tasks: int
    seconds: float
    measured: int
    effort_by_class: dict[str, dict[str, float]]
    hunt: dict[str, Any]  # the rare-class pass's verdicts, where questions were open


def cost_model(settings: Settings) -> CostModel:
    return CostModel.from_settings(settings.review_seconds)


def make_reviewer(settings: Settings, name: str, labels: str | Path | None, *, url: str | None = None,
                  token: str | None = None) -> Reviewer:
    """`label-studio` (settings, or `url`/`token` over them) or `oracle` (a folder of ground-truth labels: the
    demo and the benchmarks). A bad name or a missing folder is a ValueError naming it."""
    if name == "oracle":
        if not labels or not Path(labels).is_dir():
            raise ValueError(f"--reviewer oracle needs --labels DIR, a folder of ground-truth labels (got {labels})")
        return OracleReviewer(Path(labels))
    if name != "label-studio":
        raise ValueError(f"--reviewer {name!r} must be 'label-studio' or 'oracle'")
    # The Label Studio SDK takes most of a second to import: only where a command talks to it.
    from feedback.review.labelstudio import LabelStudioReviewer

    given = {k: v for k, v in {"label_studio_url": url, "label_studio_token": token}.items() if v}
    return LabelStudioReviewer.from_settings(settings.model_copy(update=given))


def hunter_for(reviewer: Reviewer) -> HuntReviewer:
    """The review adapter's hunt side: the same answers (oracle) or the same Label Studio."""
    if isinstance(reviewer, OracleReviewer):
        return OracleHunt(reviewer)
    from feedback.review.labelstudio_hunt import LabelStudioHunt  # the Label Studio SDK, as above

    return LabelStudioHunt(reviewer)  # type: ignore[arg-type]


def push_skip(ws: Workspace) -> str | None:
    """Why a scheduled push has nothing to do, or None."""
    with ws.catalog.connect() as con:
        return None if count_candidates(con) else "no capture waits for review"


def pull_skip(ws: Workspace) -> str | None:
    """Why a scheduled pull has nothing to do (no review task or hunt question is open), or None."""
    with ws.catalog.connect() as con:
        return None if count_pushed(con) or hunt_counts(con).get("pushed", 0) else "no review task is open"


def push(ws: Workspace, reviewer: Reviewer, selection: Selection | None = None, *, budget: int | None = None,
         budget_seconds: float | None = None, embedder: str | None = None, public_url: str | None = None,
         project_title: str = DEFAULT_PROJECT, clip_model: str | None = None, clip_pretrained: str | None = None,
         progress: bool = False) -> PushResult:
    """Pick up to `budget` captures (or `budget_seconds` of a person's predicted time) and push them, pre-annotated.

    Active selection prepares the vectors it reads unless `embedder` names vectors a caller prepared."""
    selection = selection or Selection()
    if embedder is None and selection.strategy == "active":
        embedder = prepare_vectors(ws, clip_model=clip_model, clip_pretrained=clip_pretrained, progress=progress)
    config = selection.config(ws, embedder if selection.strategy == "active" else None, cost_model(ws.settings))
    report = push_for_review(ws, budget or 1_000_000, reviewer=reviewer, selection=config, public_url=public_url,
                             project_title=project_title, budget_seconds=budget_seconds)
    rare = [p.parts.get("rare", 0.0) for p in report.picks]
    return {"pushed": report.pushed, "already_pushed": report.already_pushed, "reviewer": report.reviewer,
            "project": report.project, "strategy": report.strategy, "embedder": config.embedder,
            "expected_s": round(sum(getattr(p, "expected_s", 0.0) for p in report.picks), 1),
            "mean_rare": round(sum(rare) / len(rare), 4) if rare else None,
            "picks": [{"capture": p.capture_id, "score": round(p.score, 4),
                       "expected_s": round(getattr(p, "expected_s", 0.0), 1),
                       "parts": {k: round(v, 4) for k, v in p.parts.items()}} for p in report.picks]}


def push_hunt_questions(ws: Workspace, reviewer: Reviewer, class_name: str, *, budget: int | None = None,
                        budget_seconds: float | None = None, public_url: str | None = None,
                        clip_model: str | None = None, clip_pretrained: str | None = None,
                        progress: bool = False) -> PushResult:
    """The rare-class pass: yes / no / not-sure questions about the boxes the probe finds likeliest `class_name`."""
    with ws.catalog.connect() as con:
        names = catalog_classes(con)
    if class_name not in names:
        raise ValueError(f"--hunt {class_name}: not among the catalog's classes {names}")
    cost = cost_model(ws.settings)
    embedder = prepare_vectors(ws, clip_model=clip_model, clip_pretrained=clip_pretrained, progress=progress)
    questions = choose_questions(ws, names.index(class_name), embedder, budget=budget, budget_seconds=budget_seconds,
                                 cost=cost)
    hunter = hunter_for(reviewer)
    asked = push_hunt(ws, questions, reviewer=hunter, class_name=class_name, public_url=public_url)
    return {"hunt": class_name, "asked": asked, "reviewer": hunter.name, "embedder": embedder,
            "expected_s": asked * cost.seconds["kept"]}


def pull(ws: Workspace, reviewer: Reviewer, *, holdout_share: float = 0.2,
         public_url: str | None = None) -> tuple[PullReport, HuntReport | None]:
    """Answered hunt questions first (each yes or not-sure frame becomes a full review task, which this same pull
    collects where the reviewer answers at once), then every finished review; pulling twice changes nothing."""
    hunted = None
    with ws.catalog.connect() as con:
        questions_open = hunt_counts(con).get("pushed", 0)
    if questions_open:
        hunted = pull_hunt(ws, reviewer=hunter_for(reviewer), full_review=reviewer, public_url=public_url,
                           cost=cost_model(ws.settings))
    return pull_reviews(ws, reviewer=reviewer, holdout_share=holdout_share), hunted


def pull_result(report: PullReport, hunted: HuntReport | None) -> PullResult:
    """The pull as the stage's result (each task's effort stays in the catalog; the result keeps the sums)."""
    out: dict[str, Any] = {k: v for k, v in vars(report).items() if k != "efforts"}
    return out | ({"hunt": hunt_summary(hunted)} if hunted else {})  # type: ignore[return-value]


def hunt_summary(hunted: HuntReport) -> dict[str, Any]:
    return {"asked": hunted.asked, "yes": hunted.yes, "no": hunted.no, "unsure": hunted.unsure,
            "cancelled": hunted.cancelled, "pending": hunted.pending, "seconds": hunted.seconds,
            "to_review": hunted.to_review.pushed if hunted.to_review else 0}
