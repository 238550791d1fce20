"""Choosing which captures people review: operator flags first, then uncertain, rare and unlike each other.

Annotators' time is the scarce resource; `select_captures` documents the score, `select_indices` the picking.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import duckdb
import numpy as np
import pyarrow as pa

from feedback.review.embeddings import KIND, settings_embedder_name
from store.settings import Workspace

log = logging.getLogger(__name__)

TRIGGER_WEIGHTS = {"flicker": 0.75, "uncertainty": 0.25, "random": 0.0, "operator": 0.0}
EPS = 0.05
MAX_NOVELTY = 2.0  # cosine distance between opposite unit vectors
POOL_PER_PICK = 20


@dataclass
class SelectionConfig:
    strategy: Literal["active", "random"] = "active"
    uncertainty: bool = True
    diversity: bool = True
    class_balance: bool = True
    seed: int = 0  # for the random strategy


@dataclass
class Candidate:
    capture_id: str
    score: float  # novelty · (EPS + priority) at the time of the pick; priority without diversity; 0 for random
    parts: dict[str, float]  # uncertainty, class_balance, diversity (novelty at pick), operator (1 or 0)


def select_captures(ws: Workspace, budget: int, config: SelectionConfig | None = None) -> list[Candidate]:
    """Up to `budget` captures for review, in the order people should see them.

    Candidates: captures whose image has no review task and no verified label yet (by sha256, so a
    frame uploaded twice is offered once, as its earliest capture). `random` takes a seeded uniform
    sample, operator-flagged first, and ignores every score: it is the baseline active is judged by.

    `active` scores each candidate i, then picks with `select_indices`:

    - margin_i   = max over its detections of 1 - |2·confidence - 1|: 1 at 0.5, 0 at 0 or 1 (0 without detections);
    - triggers_i = min(1, sum of TRIGGER_WEIGHTS over its upload reasons): flicker 0.75, uncertainty 0.25,
                   random and operator 0 (operator is a flag, not a score);
    - uncertainty_i   = (margin_i + triggers_i) / 2, in [0, 1];
    - class_balance_i = max over its predicted classes c of w_c / max_k w_k, w_c = 1 / sqrt(1 + n_c), n_c the
                        boxes of class c in the latest verified label of every real image (synthetic images are
                        cheap to make more of; verified real ones are what is scarce). k runs over the catalog's
                        classes and every predicted one, so the rarest class scores 1. 0 without detections;
    - priority_i = uncertainty_i + class_balance_i, a switched-off part counting 0; in [0, 2];
    - flagged_i  = a person flagged the frame on the device (trigger 'operator').

    Diversity uses the vectors of the configured CLIP model (`Settings.clip_*`, see `embeddings.py`); run
    `embed_captures` first. A candidate without one counts as maximally novel (see `select_indices`).
    """
    config = config or SelectionConfig()
    with ws.catalog.connect() as con:
        ids, margin, triggers, balance, flagged = _candidate_scores(con)
    if budget <= 0 or not len(ids):
        return []

    if config.strategy == "random":
        rng = np.random.default_rng(config.seed)
        order = np.lexsort((rng.permutation(len(ids)), ~flagged))[:budget]
        return [Candidate(str(ids[i]), 0.0, {"operator": float(flagged[i])}) for i in order]

    uncertainty = (margin + np.minimum(triggers, 1.0)) / 2
    priority = np.zeros(len(ids), np.float32)
    if config.uncertainty:
        priority += uncertainty
    if config.class_balance:
        priority += balance
    pool = pool_indices(priority, flagged, budget)
    vectors = _pool_vectors(ws, ids[pool]) if config.diversity else None
    picks, novelty = _select(vectors, priority[pool], flagged[pool], budget, diversity=config.diversity)

    out = []
    for pick, nov in zip(pool[picks], novelty, strict=True):
        parts = {"operator": float(flagged[pick])}
        if config.uncertainty:
            parts["uncertainty"] = float(uncertainty[pick])
        if config.class_balance:
            parts["class_balance"] = float(balance[pick])
        if config.diversity:
            parts["diversity"] = float(nov)
            score = float(nov) * (EPS + float(priority[pick]))
        else:
            score = float(priority[pick])
        out.append(Candidate(str(ids[pick]), score, parts))
    return out


def select_indices(
    embeddings: np.ndarray | None, priority: np.ndarray, flagged: np.ndarray, budget: int, *, diversity: bool = True
) -> np.ndarray:
    """Indices of up to `budget` rows, in pick order.

    `embeddings`: (N, D) float, rows of unit length (they are normalised again here); an all-zero row means
    "no vector", None means none at all. `priority`: (N,) >= 0. `flagged`: (N,) bool.

    The budget fills in two phases, flagged rows first, then the rest; each repeats the score-weighted
    farthest-point (greedy k-center) step:

        next      = argmax_i novelty_i · (EPS + priority_i)      over the phase's unpicked rows, EPS = 0.05
        novelty_i = min over picked s of (1 - cos(x_i, x_s)), clipped to [0, 2]; 2 while nothing is picked

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
            np.multiply(novelty, weight, out=score)
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


def _candidate_scores(con: duckdb.DuckDBPyConnection) -> tuple[np.ndarray, ...]:
    """(ids, margin, trigger weight sum, class balance, operator flag) of every candidate, ordered by id."""
    weights = pa.table({"reason": list(TRIGGER_WEIGHTS), "weight": list(TRIGGER_WEIGHTS.values())})
    con.register("trigger_weights", weights)
    columns = con.execute(
        """
        WITH excluded AS (
            SELECT c.sha256 FROM review_tasks r JOIN captures c ON c.id = r.capture_id
            UNION SELECT image_sha256 FROM labels WHERE status = 'verified'
        ),
        candidates AS (
            SELECT id FROM captures WHERE sha256 NOT IN (SELECT sha256 FROM excluded)
            QUALIFY row_number() OVER (PARTITION BY sha256 ORDER BY captured_at, id) = 1
        ),
        latest_real AS (
            SELECT l.id FROM labels l JOIN images i ON i.sha256 = l.image_sha256
            WHERE l.status = 'verified' AND i.origin = 'real'
            QUALIFY row_number() OVER (PARTITION BY l.image_sha256 ORDER BY l.created_at DESC, l.id) = 1
        ),
        verified_boxes AS (
            SELECT b.class_id, b.label_id FROM label_boxes b JOIN latest_real l ON l.id = b.label_id
        ),
        class_weights AS (
            SELECT k.class_id, 1 / sqrt(1 + count(b.label_id)) AS w
            FROM (SELECT id AS class_id FROM classes UNION SELECT DISTINCT class_id FROM detections) k
            LEFT JOIN verified_boxes b USING (class_id)
            GROUP BY k.class_id
        ),
        det AS (
            SELECT d.capture_id, max(1 - abs(2 * d.confidence - 1)) AS margin, max(w.w) AS w
            FROM detections d JOIN class_weights w USING (class_id)
            GROUP BY d.capture_id
        ),
        trg AS (
            SELECT t.capture_id, sum(coalesce(w.weight, 0)) AS weight, bool_or(t.reason = 'operator') AS flagged
            FROM triggers t LEFT JOIN trigger_weights w USING (reason)
            GROUP BY t.capture_id
        )
        SELECT c.id,
               coalesce(det.margin, 0) AS margin,
               coalesce(trg.weight, 0) AS triggers,
               coalesce(det.w / (SELECT max(w) FROM class_weights), 0) AS balance,
               coalesce(trg.flagged, false) AS flagged
        FROM candidates c
        LEFT JOIN det ON det.capture_id = c.id
        LEFT JOIN trg ON trg.capture_id = c.id
        ORDER BY c.id
        """
    ).fetchnumpy()
    con.unregister("trigger_weights")
    return (
        np.asarray(columns["id"], dtype=object),
        *(np.asarray(columns[name], dtype=np.float32) for name in ("margin", "triggers", "balance")),
        np.asarray(columns["flagged"], dtype=bool),
    )


def _pool_vectors(ws: Workspace, ids: np.ndarray) -> np.ndarray | None:
    """The pool's vectors from the configured CLIP model, zero rows where a capture has none."""
    model = settings_embedder_name(ws.settings)
    with ws.catalog.connect() as con:
        con.register("pool", pa.table({"i": np.arange(len(ids)), "ref": pa.array(list(ids), pa.string())}))
        table = con.sql(
            "SELECT p.i, e.vector FROM pool p JOIN embeddings e ON e.ref = p.ref"
            " WHERE e.kind = $kind AND e.model = $model",
            params={"kind": KIND, "model": model},
        ).to_arrow_table()
        con.unregister("pool")
    if table.num_rows == 0:
        log.warning("no candidate has an embedding from %s: selecting on priority alone (run embed_captures)", model)
        return None
    if table.num_rows < len(ids):
        log.warning("%d of %d candidates have no embedding from %s: they count as maximally novel "
                    "(run embed_captures first)", len(ids) - table.num_rows, len(ids), model)
    flat = table.column("vector").combine_chunks().flatten().to_numpy()
    rows = table.column("i").to_numpy()
    vectors = np.zeros((len(ids), flat.size // table.num_rows), np.float32)
    vectors[rows] = flat.reshape(table.num_rows, -1)
    return vectors
