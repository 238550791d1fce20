"""Mining run: embed any failure crop not yet embedded, cluster every (class, failure kind) group, describe each
cluster from its members' measured attributes, and save them with ids that survive re-runs.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from rich.progress import Progress

from feedback.embeddings.backfill import embed_failures
from feedback.embeddings.port import Embedder
from feedback.mining.attributes import describe, summarise
from feedback.mining.clusters import EMBEDDING_WEIGHT, MIN_SIZE, NOISE, features, match_previous, medoids, split
from feedback.mining.material import FailureTable, load_failures
from feedback.mining.tags import zero_shot_tags
from store.clusters import Cluster, active_members, read_clusters, save_clusters
from store.failures import verified_box_classes
from store.settings import Workspace
from store.vectors import LABEL_BOX, read_vectors

# A missed class's neighbour is read from its confusions only when they are this many: one or two stray
# confusions say less than which verified crops the cluster resembles.
MIN_CONFUSIONS = 3


def cluster_id(model_version: str | None, class_id: int, kind: str, what: str) -> str:
    """A content id: the same scope, group and members (or "noise") always give the same id."""
    digest = hashlib.sha1(f"{model_version or '*'}|{class_id}|{kind}|{what}".encode()).hexdigest()
    return f"fc-{digest[:12]}"


def mine_clusters(ws: Workspace, embedder: Embedder | str, *, model_version: str | None = None, seed: int = 0,
                  min_size: int = MIN_SIZE, embedding_weight: float = EMBEDDING_WEIGHT,
                  progress: bool = True) -> list[Cluster]:
    """Cluster `model_version`'s failures (None: every model's) and make the result the scope's active set.

    `embedder`: an embedder (crops it has not embedded yet are embedded first; a CLIP one also tags each crop
    with the settings' attribute vocabulary) or the name of one whose vectors are already stored. Every
    failure ends in exactly one cluster or in its group's noise bucket. Deterministic for a given `seed`.
    """
    if min_size < 2:
        raise ValueError(f"min_size {min_size} must be at least 2")
    name = embedder if isinstance(embedder, str) else embedder.name
    if not isinstance(embedder, str):
        embed_failures(ws, embedder, progress=progress)
    table = load_failures(ws, name, model_version=model_version, progress=progress)
    if isinstance(embedder, str) and len(table) and not table.has_vector.any():
        raise ValueError(f"no failure crop is embedded by {name!r}: pass the embedder itself, which embeds them")
    tags = zero_shot_tags(embedder, table.vectors, ws.settings.attribute_vocabulary) \
        if hasattr(embedder, "embed_texts") else [{} for _ in range(len(table))]
    groups: dict[tuple[int, str], list[int]] = {}
    for i, (c, kind) in enumerate(zip(table.class_ids.tolist(), table.kinds, strict=True)):
        groups.setdefault((c, kind), []).append(i)
    with ws.catalog.connect() as con:
        previous = {key: active_members(con, model_version, *key) for key in groups}
    centroids = _class_centroids(ws, name)
    clusters: list[Cluster] = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("clustering failures", total=len(table))
        for (class_id, kind), rows in sorted(groups.items()):
            clusters += _cluster_group(table, np.asarray(rows), class_id, kind, tags, previous[(class_id, kind)],
                                       centroids, model_version=model_version, embedder=name, seed=seed,
                                       min_size=min_size, embedding_weight=embedding_weight)
            bar.advance(task, len(rows))
    with ws.catalog.connect() as con:
        save_clusters(con, model_version, clusters)
        return read_clusters(con, model_version=model_version)


def _cluster_group(table: FailureTable, rows: np.ndarray, class_id: int, kind: str, tags: list[dict[str, str]],
                   previous: dict[str, set[str]], centroids: dict[int, np.ndarray], *, model_version: str | None,
                   embedder: str, seed: int, min_size: int, embedding_weight: float) -> list[Cluster]:
    # Failures without a vector or an image (unreadable frames) cannot be placed: they go to noise.
    usable = rows[table.has_vector[rows] & np.array([np.isfinite(table.attrs[i]["brightness"]) and
                                                      np.isfinite(table.attrs[i]["rel_size"]) for i in rows], bool)]
    labels = np.full(len(table), NOISE)
    x = np.zeros((0, 0))
    result = None
    if len(usable):
        x = features(table.vectors[usable], [table.attrs[i] for i in usable], embedding_weight=embedding_weight)
        result = split(x, min_size=min_size, seed=seed)
        labels[usable] = result.labels
    at = {int(r): j for j, r in enumerate(usable)}
    n_clusters = int(labels[rows].max()) + 1 if len(rows) else 0
    members = [rows[labels[rows] == c] for c in range(n_clusters)]
    ids = match_previous([{table.ids[i] for i in m} for m in members], previous)
    params = {"seed": seed, "min_size": min_size, "embedding_weight": embedding_weight,
              "k": result.k if result else 0, "silhouette": result.silhouette if result else None,
              "null_silhouette": result.null_silhouette if result else None, "method": "kmeans+silhouette-vs-null"}
    out = []
    for c, m in enumerate([*members, rows[labels[rows] == NOISE]]):
        noise = c == n_clusters
        if noise and not len(m):
            continue
        member_ids = tuple(sorted(table.ids[i] for i in m))
        placed = np.array([at[int(i)] for i in m if int(i) in at], np.int64)
        mask = np.zeros(len(x), bool)
        mask[placed] = True
        nearest = [table.ids[usable[j]] for j in medoids(x, mask)] if len(x) else []
        nearest += [table.ids[i] for i in m if int(i) not in at][: max(0, 6 - len(nearest))]
        if noise:
            cid = cluster_id(model_version, class_id, kind, "noise")
        else:
            cid = ids[c] or cluster_id(model_version, class_id, kind, ",".join(member_ids))
        out.append(Cluster(id=cid, model_version=model_version, class_id=class_id, kind=kind, noise=noise,
                           size=len(m), embedder=embedder, description=_describe(table, m, kind, tags, centroids),
                           medoids=nearest, params=params, members=member_ids))
    return out


def _describe(table: FailureTable, m: np.ndarray, kind: str, tags: list[dict[str, str]],
              centroids: dict[int, np.ndarray]) -> dict[str, Any]:
    target = int(table.class_ids[m[0]])
    extras: dict[str, Sequence[Any]] = {"camera": [table.cameras[i] for i in m],
                                        "device": [table.devices[i] for i in m]}
    if kind == "confusion":
        extras["confused_with"] = [table.name(table.predicted[i]) for i in m]
    description = describe([table.attrs[i] for i in m], extras)
    groups = sorted({g for i in m for g in tags[i]})
    description["tags"] = {g: summarise([tags[i].get(g) for i in m]) for g in groups}
    description["class"] = table.name(target)
    description["neighbour"] = _neighbour(table, m, kind, target, centroids)
    if kind == "spurious":
        # Second boxes on found objects want NMS or a threshold, not images: prompts.py tells them apart.
        description["duplicates"] = round(float(table.duplicate[m].mean()), 3)
    return description


def _neighbour(table: FailureTable, m: np.ndarray, kind: str, target: int,
               centroids: dict[int, np.ndarray]) -> dict[str, Any] | None:
    """The class an edit should turn into the target: what the model called these objects (confusion), what
    it calls this class elsewhere (missed: at least MIN_CONFUSIONS of the class's confusions), else the
    verified class whose crops look most like this cluster's. None for spurious and localisation clusters."""
    if kind in ("spurious", "localization"):
        return None
    if kind == "confusion":
        said = Counter(table.predicted[i] for i in m)
        source = "confusions"
    else:
        said = Counter(p for c, k, p in zip(table.class_ids.tolist(), table.kinds, table.predicted, strict=True)
                       if k == "confusion" and c == target)
        source = "class confusions"
    class_id, count = min(said.items(), key=lambda kv: (-kv[1], kv[0])) if said else (None, 0)
    if count >= MIN_CONFUSIONS or (kind == "confusion" and count):
        return {"class_id": int(class_id), "class": table.name(class_id), "source": source}
    placed = m[table.has_vector[m]]
    others = {c: v for c, v in centroids.items() if c != target}
    if not len(placed) or not others:
        return None
    centre = table.vectors[placed].mean(axis=0)
    class_id = max(others, key=lambda c: (float(others[c] @ centre), -c))
    return {"class_id": int(class_id), "class": table.name(class_id), "source": "nearest verified crops"}


def _class_centroids(ws: Workspace, embedder: str) -> dict[int, np.ndarray]:
    """Mean crop vector of each class's verified boxes, where this embedder has embedded them."""
    with ws.catalog.connect() as con:
        refs, vectors = read_vectors(con, LABEL_BOX, embedder)
        if not refs:
            return {}
        classes = verified_box_classes(con)
    by_class: dict[int, list[int]] = {}
    for j, ref in enumerate(refs):
        if ref in classes:
            by_class.setdefault(int(classes[ref]), []).append(j)
    return {c: vectors[idx].mean(axis=0) for c, idx in by_class.items()}
