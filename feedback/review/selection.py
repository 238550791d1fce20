"""Choosing which captures people review: operator flags first, then uncertain, likely rare and unlike each other.

Annotators' time is the scarce resource; `select_captures` documents the score, `select_indices` the picking.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import duckdb
import numpy as np

from feedback.embeddings.clip import settings_embedder_name
from feedback.embeddings.port import unit_rows
from feedback.review.effort import CostModel, expected_seconds
from feedback.review.probe import Probe, fit_probe, rare_classes
from store.failures import failure_ids
from store.hunt_tasks import hard_negative_refs
from store.review_tasks import candidate_signals, scanned_confidence, verified_counts
from store.settings import Workspace
from store.vectors import BOX, CAPTURE, CROP, LABEL_BOX, label_box_classes, read_vectors

log = logging.getLogger(__name__)

TRIGGER_WEIGHTS = {"flicker": 0.75, "uncertainty": 0.25, "rare_class": 0.25, "random": 0.0, "operator": 0.0}
# How much each part of a capture's priority counts (see `select_captures`). The probe's answer weighs most:
# on PPE it alone finds 2.7x the rare boxes random does, sub-threshold evidence alone 2.2x (NOTES.md).
WEIGHTS = {"uncertainty": 0.5, "rare": 2.0, "evidence": 1.0, "class_balance": 0.5, "failure": 0.5}
EPS = 0.05
MAX_NOVELTY = 2.0  # cosine distance between opposite unit vectors
POOL_PER_PICK = 20
# Cosine distance beyond which two captures count as different scenes: nearer ones are (near-)duplicates and
# lose credit in proportion; farther ones compete on priority alone. A larger radius makes diversity trade
# priority for spread (at MAX_NOVELTY, every distance counts, the plain score-weighted k-center).
DUPLICATE_RADIUS = 0.02


@dataclass
class SelectionConfig:
    """Which parts of the active score are on (each can be switched off for ablation)."""

    strategy: Literal["active", "random"] = "active"
    uncertainty: bool = True
    diversity: bool = True
    class_balance: bool = True
    rare: bool = True  # the box probe's "this box is really a rare class"
    evidence: bool = True  # the device's sub-threshold evidence for rare classes
    failure: bool = True  # boxes near verified missed/confused boxes
    seed: int = 0  # for the random strategy
    embedder: str | None = None  # name of the vectors to use; None: the configured CLIP model's
    watch_classes: Sequence[int] = field(default_factory=tuple)  # rare whatever their verified counts
    # Rank by value per second of a person's time (priority / expected effort) instead of value per image.
    per_second: bool = False
    cost: CostModel = field(default_factory=CostModel)  # prices the expected effort


@dataclass
class Candidate:
    capture_id: str
    score: float  # novelty · (EPS + priority) at the time of the pick; priority without diversity; 0 for random
    parts: dict[str, float]  # each part's value in [0, 1], diversity (novelty at pick), operator (1 or 0)
    expected_s: float = 0.0  # the review's predicted cost in a person's seconds (`effort.expected_seconds`)


def select_captures(ws: Workspace, budget: int, config: SelectionConfig | None = None,
                    budget_seconds: float | None = None) -> list[Candidate]:
    """Up to `budget` captures for review, in the order people should see them; with `budget_seconds`, the
    first of those whose predicted review seconds add up to no more than it.

    Candidates: captures whose image has no review task and no verified label yet (by sha256, so a
    frame uploaded twice is offered once, as its earliest capture). `random` takes a seeded uniform
    sample, operator-flagged first, and ignores every score: it is the baseline active is judged by.

    `active` scores each candidate i, each part in [0, 1], then picks with `select_indices`:

    - uncertainty_i = (margin_i + triggers_i) / 2: margin_i = max over its detections of 1 - |2·conf - 1|;
      triggers_i = min(1, sum of TRIGGER_WEIGHTS over its upload reasons) (operator is a flag, not a score);
    - rare_i = max over its candidate boxes b and rare classes c of P_c(b), the box probe's probability
      (`probe.py`: logistic regression on the embedder's crops of verified boxes, refit on every call).
      Candidate boxes are what `boxes.scan_candidates` found (the deployed model at a low confidence).
      Rare classes: `watch_classes` and those with under RARE_SHARE of the commonest class's verified boxes;
    - evidence_i = max over rare c of the percentile rank, among candidates, of the device's sub-threshold
      evidence for c (`captures.class_evidence`, the per-class maximum score over the frame); 0 without it;
    - class_balance_i = max over classes c of expected_ic · w_c / max_k w_k, w_c = 1 / sqrt(1 + n_c), n_c the
      verified boxes of c in real images; expected_ic = 1 if the device predicted c, else the probe's P_c for
      rare classes (so a class the model never predicts still counts), else 0;
    - failure_i = max over its candidate boxes and verified missed/confused failure crops of their cosine
      similarity, after centring both on the mean verified-box vector, clipped to [0, 1];
    - priority_i = sum over the parts that are on of WEIGHTS[part] · part_i;
    - flagged_i = a person flagged the frame on the device (trigger 'operator').

    With `config.per_second`, priority_i is divided by expected_s_i / median expected_s (value per second of a
    person's time, at the same scale); expected_s_i is `effort.expected_seconds` of the boxes the task will
    show, the model's doubt about them and what the champion's scan sees beyond them.

    Diversity is k-center over the capture vectors of `config.embedder` (detector ones centred), see
    `select_indices`; a candidate without a vector counts as maximally novel. Parts that need vectors
    (rare, failure) count 0 where none were computed: run `boxes.scan_candidates` and
    `backfill.embed_verified_boxes` first (`review push` does).
    """
    config = config or SelectionConfig()
    model = config.embedder or settings_embedder_name(ws.settings)
    with ws.catalog.connect() as con:
        c = candidate_signals(con, TRIGGER_WEIGHTS)
        ids, flagged = c["id"], c["flagged"]
        if budget <= 0 or not len(ids):
            return []
        seen = scanned_confidence(con, model)
        expected = expected_seconds(c["shown"], c["doubt"], np.asarray([seen.get(i, 0.0) for i in ids]), config.cost)
        expected = np.maximum(expected, 0.1)  # a cost model may price an empty frame at 0 s
        if budget_seconds is not None:  # no more picks than the cheapest reviews could fill
            budget = min(budget, int(np.ceil(budget_seconds / expected.min())))
        if config.strategy == "random":
            rng = np.random.default_rng(config.seed)
            order = np.lexsort((rng.permutation(len(ids)), ~flagged))[:budget]
            return _within(budget_seconds, [Candidate(str(ids[i]), 0.0, {"operator": float(flagged[i])},
                                                      float(expected[i])) for i in order])
        parts = _parts(con, c, config, model)

    priority = np.zeros(len(ids), np.float32)
    for name, values in parts.items():
        priority += np.float32(WEIGHTS[name]) * values
    if config.per_second:
        priority *= (np.median(expected) / expected).astype(np.float32)
    pool = pool_indices(priority, flagged, budget)
    vectors = _pool_vectors(ws, ids[pool], model) if config.diversity else None
    picks, novelty = _select(vectors, priority[pool], flagged[pool], budget, diversity=config.diversity)

    out = []
    for pick, nov in zip(pool[picks], novelty, strict=True):
        explained = {"operator": float(flagged[pick]), **{name: float(v[pick]) for name, v in parts.items()}}
        if config.diversity:
            explained["diversity"] = float(nov)
            score = float(nov) * (EPS + float(priority[pick]))
        else:
            score = float(priority[pick])
        out.append(Candidate(str(ids[pick]), score, explained, float(expected[pick])))
    return _within(budget_seconds, out)


def _within(budget_seconds: float | None, picks: list[Candidate]) -> list[Candidate]:
    """The picks, in order, while their predicted seconds fit the budget (all of them without one)."""
    if budget_seconds is None:
        return picks
    spent = np.cumsum([p.expected_s for p in picks])
    return picks[: int(np.searchsorted(spent, budget_seconds, side="right"))]


def select_indices(
    embeddings: np.ndarray | None, priority: np.ndarray, flagged: np.ndarray, budget: int, *, diversity: bool = True
) -> np.ndarray:
    """Indices of up to `budget` rows, in pick order.

    `embeddings`: (N, D) float, rows of unit length (they are normalised again here); an all-zero row means
    "no vector", None means none at all. `priority`: (N,) >= 0. `flagged`: (N,) bool.

    The budget fills in two phases, flagged rows first, then the rest; each repeats the score-weighted
    farthest-point (greedy k-center) step:

        next      = argmax_i min(novelty_i, R) · (EPS + priority_i)   over the phase's unpicked rows, EPS = 0.05
        novelty_i = min over picked s of (1 - cos(x_i, x_s)), clipped to [0, 2]; 2 while nothing is picked
        R         = DUPLICATE_RADIUS (0.02): a capture farther than R from every pick competes on priority alone

    Why the radius: with R = 2 (plain score-weighted k-center) spread beats priority everywhere, and on the PPE
    pool (detector vectors, whose nearest-neighbour distances have a median of 0.026) active selection then
    acquired 130 rare boxes in 150 picks against 211 with R = 0.02 and 206 without diversity at all.

    Ten frames of one scene are one choice: once one is picked, the others' novelty drops to ~0. A row
    without a vector keeps novelty 2, as different from everything as can be, so it competes on priority
    alone and is never suppressed as a duplicate; picking it lowers nobody's novelty. EPS lets a row of
    priority 0 still win on novelty. Ties go to the lower index. Without diversity (or vectors): flagged
    first, then priority descending, then index.

    Only the flagged rows and the POOL_PER_PICK · budget others of highest priority enter the greedy step
    (the prefilter of Zhdanov 2019, "Diverse mini-batch active learning"); within that pool it is exact,
    over the full vectors. The cost is then O(budget² · dim) however many rows there are (about 2-4 s for
    budget 1000 at dim 512 on a 2-core machine), and `select_captures` reads only the pool's vectors. The
    price: if more than POOL_PER_PICK · budget near-identical frames all outrank everything else, the
    pool holds one scene.
    """
    return _select(embeddings, priority, flagged, budget, diversity=diversity)[0]


def pool_indices(priority: np.ndarray, flagged: np.ndarray, budget: int) -> np.ndarray:
    """Sorted indices of the captures the greedy step considers: every flagged one, and the
    POOL_PER_PICK · budget others of highest priority (ties at the cut broken arbitrarily but deterministically)."""
    size = POOL_PER_PICK * max(budget, 0)
    rest = np.flatnonzero(~flagged)
    if len(rest) > size:
        # argpartition is O(N): no full sort of a million priorities.
        rest = rest[np.argpartition(-priority[rest], size - 1)[:size]] if size else rest[:0]
    return np.sort(np.concatenate([np.flatnonzero(flagged), rest]))


def _select(
    embeddings: np.ndarray | None, priority: np.ndarray, flagged: np.ndarray, budget: int, *, diversity: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(picked indices, novelty of each at its pick); novelty is MAX_NOVELTY throughout without diversity."""
    priority = np.asarray(priority, dtype=np.float32)
    flagged = np.asarray(flagged, dtype=bool)
    n = len(priority)
    if flagged.shape != (n,) or (embeddings is not None and len(embeddings) != n):
        raise ValueError("embeddings, priority and flagged must have one row per capture")
    budget = min(max(budget, 0), n)
    if not diversity or embeddings is None:
        # lexsort: the last key is the primary one: flagged first, then priority, then index.
        order = np.lexsort((np.arange(n), -priority, ~flagged))[:budget]
        return order, np.full(len(order), MAX_NOVELTY, np.float32)
    pool = pool_indices(priority, flagged, budget)
    picks, novelty = _greedy(np.asarray(embeddings)[pool], priority[pool], flagged[pool], budget)
    return pool[picks], novelty


def _greedy(
    vectors: np.ndarray, priority: np.ndarray, flagged: np.ndarray, budget: int
) -> tuple[np.ndarray, np.ndarray]:
    n = len(priority)
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1)
    has_vector = norms > 0  # False for zero rows and NaN
    unit = np.zeros_like(vectors)
    np.divide(vectors, norms[:, None], out=unit, where=has_vector[:, None])
    no_vector = ~has_vector

    weight = EPS + priority
    novelty = np.full(n, MAX_NOVELTY, np.float32)
    blocked = np.ones(n, bool)  # not in the current phase, or picked already
    score = np.empty(n, np.float32)
    distance = np.empty(n, np.float32)
    picks: list[int] = []
    at_pick: list[float] = []
    for phase in (flagged, ~flagged):
        blocked[:] = True
        blocked[phase] = False
        blocked[picks] = True
        for _ in range(min(int(phase.sum()), budget - len(picks))):
            np.minimum(novelty, DUPLICATE_RADIUS, out=score)
            np.multiply(score, weight, out=score)
            np.putmask(score, blocked, -np.inf)
            i = int(np.argmax(score))
            picks.append(i)
            at_pick.append(float(novelty[i]))
            blocked[i] = True
            if has_vector[i]:
                # 1 - cos for unit vectors; einsum rather than BLAS gemv, which contends badly for
                # two cores and is no faster for one vector (measured on the 2-core build machine).
                np.einsum("ij,j->i", unit, unit[i], out=distance)
                np.subtract(1.0, distance, out=distance)
                np.clip(distance, 0.0, MAX_NOVELTY, out=distance)
                np.putmask(distance, no_vector, MAX_NOVELTY)  # a capture without a vector stays maximally novel
                np.minimum(novelty, distance, out=novelty)
    return np.asarray(picks, dtype=np.int64), np.asarray(at_pick, dtype=np.float32)


def _parts(con: duckdb.DuckDBPyConnection, c: dict[str, np.ndarray], config: SelectionConfig,
           model: str) -> dict[str, np.ndarray]:
    n = len(c["id"])
    counts = verified_counts(con)
    rare = rare_classes(counts, config.watch_classes)
    parts: dict[str, np.ndarray] = {}
    if config.uncertainty:
        parts["uncertainty"] = (c["margin"] + np.minimum(c["triggers"], 1.0)) / 2

    need_boxes = config.rare or config.class_balance or config.failure
    boxes = _candidate_boxes(con, c["id"], model) if need_boxes else None
    probe_p = np.zeros((n, len(rare)), np.float32)  # per capture, max over its boxes of P_c, c in `rare`
    if boxes is not None and (config.rare or config.class_balance) and rare:
        probe = fit_catalog_probe(con, model, rare)
        if probe.classes:
            scores = probe.score(boxes["vectors"]).astype(np.float32)
            cols = [rare.index(k) for k in probe.classes]
            np.maximum.at(probe_p, (boxes["row"][:, None], np.asarray(cols)[None, :]), scores)
    if config.rare:
        parts["rare"] = probe_p.max(axis=1) if rare else np.zeros(n, np.float32)
    if config.evidence:
        parts["evidence"] = _evidence(c["evidence"], rare)
    if config.class_balance:
        parts["class_balance"] = _balance(c["predicted"], counts, rare, probe_p)
    if config.failure:
        parts["failure"] = _failure(con, boxes, model, n)
    return parts


def _candidate_boxes(con: duckdb.DuckDBPyConnection, ids: np.ndarray, model: str) -> dict[str, np.ndarray] | None:
    """The candidates' scanned boxes: row (index into `ids`) and vector of each; None if none was scanned."""
    refs, vectors = read_vectors(con, BOX, model)
    if not refs:
        return None
    row_of = {str(capture_id): i for i, capture_id in enumerate(ids)}
    rows = np.asarray([row_of.get(ref.rsplit("/", 1)[0], -1) for ref in refs])
    keep = rows >= 0  # boxes of captures that are no longer candidates
    return {"row": rows[keep], "vectors": vectors[keep]}


def fit_catalog_probe(con: duckdb.DuckDBPyConnection, model: str, rare: list[int]) -> Probe:
    """The probe as the catalog teaches it now: verified boxes, and the boxes a person said are not the rare
    class they were asked about (hunt verdicts), as negatives; refit on every call, so between batches."""
    refs, vectors = read_vectors(con, LABEL_BOX, model)
    if not refs:
        log.warning("no verified box has a vector from %s: the probe has nothing to learn from", model)
        return Probe({}, {}, {})
    class_ids = np.asarray(label_box_classes(con, refs))
    negatives = set(hard_negative_refs(con, rare))
    if negatives:
        box_refs, box_vectors = read_vectors(con, BOX, model)
        keep = [i for i, r in enumerate(box_refs) if r in negatives]
        if keep:  # -1: no class, so "other" for every rare class's probe
            vectors = np.concatenate([vectors, box_vectors[keep]])
            class_ids = np.concatenate([class_ids, np.full(len(keep), -1, class_ids.dtype)])
    return fit_probe(vectors, class_ids, rare)


def _evidence(evidence: np.ndarray, rare: list[int]) -> np.ndarray:
    """Max over rare classes of the percentile rank of the device's evidence (0 where a device sent none)."""
    n = len(evidence)
    out = np.zeros(n, np.float32)
    for k in rare:
        values = np.asarray([e[k] if e is not None and len(e) > k else np.nan for e in evidence], np.float64)
        has = ~np.isnan(values)
        if has.sum() > 1:
            ranks = values[has].argsort().argsort()
            out[has] = np.maximum(out[has], ranks / (has.sum() - 1))
    return out


def _balance(predicted: np.ndarray, counts: dict[int, int], rare: list[int], probe_p: np.ndarray) -> np.ndarray:
    every = sorted(set(counts) | {int(k) for p in predicted for k in p})
    if not every:
        return np.zeros(len(predicted), np.float32)
    weight = {k: 1 / np.sqrt(1 + counts.get(k, 0)) for k in every}
    top = max(weight.values())
    expected = np.zeros((len(predicted), len(every)), np.float32)
    col = {k: j for j, k in enumerate(every)}
    for i, p in enumerate(predicted):
        for k in p:
            expected[i, col[int(k)]] = 1.0
    for j, k in enumerate(rare):
        if k in col:
            expected[:, col[k]] = np.maximum(expected[:, col[k]], probe_p[:, j])
    return (expected * np.asarray([weight[k] / top for k in every], np.float32)).max(axis=1)


def _failure(con: duckdb.DuckDBPyConnection, boxes: dict[str, np.ndarray] | None, model: str, n: int) -> np.ndarray:
    out = np.zeros(n, np.float32)
    if boxes is None:
        return out
    wanted = failure_ids(con, ("missed", "confusion"))
    _, crops = read_vectors(con, CROP, model, wanted) if wanted else ([], None)
    _, verified = read_vectors(con, LABEL_BOX, model)
    if crops is None or not len(crops):
        return out
    # Pooled detector features are all of one sign, so raw cosines crowd near 1; centring spreads them.
    centre = verified.mean(axis=0) if len(verified) else boxes["vectors"].mean(axis=0)
    sims = unit_rows(boxes["vectors"] - centre) @ unit_rows(crops - centre).T
    np.maximum.at(out, boxes["row"], np.clip(sims.max(axis=1), 0, 1).astype(np.float32))
    return out


def _pool_vectors(ws: Workspace, ids: np.ndarray, model: str) -> np.ndarray | None:
    """The pool's capture vectors from `model`, centred on their mean; zero rows where a capture has none."""
    with ws.catalog.connect() as con:
        refs, found = read_vectors(con, CAPTURE, model, [str(i) for i in ids])
    if not refs:
        log.warning("no candidate has an embedding from %s: selecting on priority alone (embed captures first)",
                    model)
        return None
    if len(refs) < len(ids):
        log.warning("%d of %d candidates have no embedding from %s: they count as maximally novel",
                    len(ids) - len(refs), len(ids), model)
    if model.startswith("detector:"):
        # Pooled detector features are all of one sign: every pair looks alike until they are centred.
        found = found - found.mean(axis=0)
    row_of = {str(capture_id): i for i, capture_id in enumerate(ids)}
    vectors = np.zeros((len(ids), found.shape[1]), np.float32)
    vectors[[row_of[r] for r in refs]] = found
    return vectors
