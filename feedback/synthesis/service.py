"""`synthesize`: one generator run through the filters into the catalog, with a progress callback (CLI, flows).

Also `synthesize_for_loop`, the benchmark's entry: N swap images of the rarest class from the workspace's own labels.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from feedback.embeddings.backfill import embed_failures
from feedback.embeddings.choice import default_embedder
from feedback.embeddings.port import Embedder
from feedback.synthesis.clusters import ClusterSpec
from feedback.synthesis.compose.swap import SwapGenerator
from feedback.synthesis.filters import (
    FilterConfig, NearDuplicates, box_hashes, champion_verdict, cluster_similarity, cluster_threshold, frechet_distance,
    label_sanity, new_box_indices, unit,
)
from feedback.synthesis.lineage import Dropped, Kept, finish_run, save_batch, start_run, stored_hashes
from feedback.synthesis.material import decode, material_labels, sample
from feedback.synthesis.port import Generator, LabelledFrame, Rejected, SynthesisRequest, SyntheticImage
from feedback.synthesis.targets import confusable_for, rarest_class
from store.labels import catalog_classes
from store.settings import Workspace
from store.synthesis import image_cameras
from store.vectors import CROP, LABEL_BOX, read_vectors, store_vectors

SYNTHETIC_BOX = "synthetic_box"  # embeddings kind of a kept synthetic image's new box (ref: image sha/k)
FRAME = "frame"  # embeddings kind of a real frame for the domain gap (ref: image sha)
DEFAULT_FILTERS = FilterConfig()
MAX_REAL_FRAMES = 200  # real frames the domain gap compares with; more moves it little and costs a forward each


class SynthesisError(ValueError):
    """A request the workspace cannot serve; the message names the bad value."""


# What a generator cannot start without, from a cluster's prompts (`edgeloop prompts` writes them).
PROMPT_NEEDS: dict[str, tuple[str, str]] = {
    "gemini-edit": ("edit_instruction", "an edit instruction"),
    "qwen-image-edit": ("edit_instruction", "an edit instruction"),
    "gemini": ("prompt", "a prompt"),
    "imagen": ("prompt", "a prompt"),
}


def missing_prompt(generator: str, request: SynthesisRequest) -> str | None:
    """Why `generator` cannot serve `request` for want of what `edgeloop prompts` writes, said for the person
    at the terminal (which command to run first); None when nothing is missing."""
    field_name, what = PROMPT_NEEDS.get(generator, ("", ""))
    if not field_name or getattr(request, field_name):
        return None
    if request.cluster_id is None:
        return (f"--generator {generator} needs {what}, written per failure cluster: run `edgeloop clusters` and "
                "`edgeloop prompts`, then synthesize with --cluster ID or --all")
    return (f"--generator {generator} needs {what} for cluster {request.cluster_id}, which has none yet: run "
            "`edgeloop prompts` first")


@dataclass(frozen=True)
class SynthesisProgress:
    made: int  # results the generator has yielded so far
    requested: int
    kept: int
    rejected: int
    cost_usd: float


@dataclass
class SynthesisReport:
    run_id: str
    generator: str
    target_class: int
    cluster_id: str | None
    requested: int
    kept: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    kept_images: list[str] = field(default_factory=list)
    hard: int = 0  # kept images the champion gets wrong at some new box
    cost_usd: float = 0.0
    domain_gap: dict[str, Any] | None = None
    embedder: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = dict(vars(self))
        out["rejected"] = dict(self.rejected)
        return out


def _vectors(ws: Workspace, embedder: Embedder, kind: str, wanted: dict[str, tuple[np.ndarray, np.ndarray]]
             ) -> dict[str, np.ndarray]:
    """Box vectors by ref, read where stored, else embedded (image, box) and stored under `kind`."""
    with ws.catalog.connect() as con:
        refs, vectors = read_vectors(con, kind, embedder.name, list(wanted))
    found = dict(zip(refs, vectors, strict=True))
    missing = [ref for ref in wanted if ref not in found]
    rows = [(ref, embedder.embed_boxes(wanted[ref][0], wanted[ref][1][None])[0]) for ref in missing]
    store_vectors(ws.catalog, kind, embedder.name, rows)
    found.update(rows)
    return found


def _references(ws: Workspace, embedder: Embedder, frames: Sequence[LabelledFrame], label_ids: dict[str, str],
                target: int, config: FilterConfig) -> NearDuplicates:
    """Real verified crops of the target class and every kept synthetic object, to be unlike."""
    index = NearDuplicates(config)
    wanted = {f"{label_ids[f.image_sha256]}/{k}": (f.image, f.boxes[k]) for f in frames
              for k in np.flatnonzero(f.class_ids == target)}
    real = _vectors(ws, embedder, LABEL_BOX, wanted)
    refs = sorted(wanted)
    index.add([f"real:{r}" for r in refs], [box_hashes(wanted[r][0], wanted[r][1][None])[0] for r in refs],
              np.stack([real[r] for r in refs]) if refs else None)
    hash_refs, hashes = stored_hashes(ws)
    index.add(hash_refs, hashes)
    with ws.catalog.connect() as con:
        refs, vectors = read_vectors(con, SYNTHETIC_BOX, embedder.name)
    index.add([f"synthetic:{r}" for r in refs], None, vectors if refs else None)
    return index


def _cluster_gate(ws: Workspace, embedder: Embedder, cluster: ClusterSpec | None,
                  config: FilterConfig) -> tuple[np.ndarray, float] | None:
    """(centroid, threshold) of the cluster's failure crops in this embedder's space, or None without a cluster."""
    if cluster is None or not cluster.failure_ids:
        return None
    embed_failures(ws, embedder, progress=False)  # crops mining embedded with another model get ours too
    with ws.catalog.connect() as con:
        refs, vectors = read_vectors(con, CROP, embedder.name, list(cluster.failure_ids))
    if not refs:
        return None
    centroid = unit(vectors.mean(axis=0))
    threshold = cluster_threshold(vectors, centroid, config.cluster_quantile) if len(refs) > 1 else \
        config.min_cluster_cosine
    return centroid, threshold


def _cameras(ws: Workspace, shas: Sequence[str]) -> dict[str, str | None]:
    """The camera each image was captured by (None for imported images)."""
    with ws.catalog.connect() as con:
        found = image_cameras(con, shas)
    return {sha: found.get(sha) for sha in shas}


def domain_gap(ws: Workspace, embedder: Embedder, synthetic: np.ndarray, parents: Sequence[str],
               frames: Sequence[LabelledFrame], seed: int) -> dict[str, Any] | None:
    """Fréchet distance between the kept images' frame vectors and real training frames of the same cameras,
    beside the distance between two halves of those real frames (the scale a real batch differs by)."""
    if len(synthetic) < 2:
        return None
    cameras = set(_cameras(ws, parents).values())
    by_camera = _cameras(ws, [f.image_sha256 for f in frames])
    same = [f for f in frames if by_camera[f.image_sha256] in cameras]
    rng = np.random.default_rng(seed)
    same = [same[i] for i in sorted(rng.permutation(len(same))[:MAX_REAL_FRAMES])]
    if len(same) < 4:
        return None
    with ws.catalog.connect() as con:
        refs, vectors = read_vectors(con, FRAME, embedder.name, [f.image_sha256 for f in same])
    found = dict(zip(refs, vectors, strict=True))
    todo = [f for f in same if f.image_sha256 not in found]
    if todo:
        rows = list(zip([f.image_sha256 for f in todo], embedder.embed([f.image for f in todo]), strict=True))
        store_vectors(ws.catalog, FRAME, embedder.name, rows)
        found.update(rows)
    real = np.stack([found[f.image_sha256] for f in same])
    half = rng.permutation(len(real))
    return {"frechet": round(frechet_distance(synthetic, real), 6),
            "real_halves": round(frechet_distance(real[half[: len(real) // 2]], real[half[len(real) // 2:]]), 6),
            "n_synthetic": int(len(synthetic)), "n_real": int(len(real)),
            "cameras": sorted(c or "imported" for c in cameras)}


def synthesize(
    ws: Workspace,
    generator: Generator,
    request: SynthesisRequest,
    *,
    cluster: ClusterSpec | None = None,
    embedder: Embedder | None = None,
    config: FilterConfig = DEFAULT_FILTERS,
    progress: Callable[[SynthesisProgress], None] | None = None,
    max_frames: int | None = 5000,
    batch_size: int = 16,
) -> SynthesisReport:
    """Make `request.count` images with `generator` from the workspace's verified material, filter them, and
    store the kept ones (training only) with lineage; rejected ones are recorded with their reasons.

    Filters, in order: label sanity; near-duplicates of real target-class crops and of kept synthetic ones
    (perceptual hash and embedding cosine of each new object's crop); likeness to the cluster's failure crops
    (when a cluster is given); the champion's verdict at each new box (recorded, never a reason to reject).
    The batch's domain gap is stored with the run.
    """
    with ws.catalog.connect() as con:
        classes = catalog_classes(con)
    if not 0 <= request.target_class < len(classes):
        raise SynthesisError(f"target class {request.target_class} is not one of the catalog's classes {classes}")
    if why := missing_prompt(generator.name, request):
        raise SynthesisError(why)
    if request.count < 1:
        raise SynthesisError(f"count {request.count} must be at least 1")
    if embedder is None:
        embedder = default_embedder(ws)
    labels = sample(material_labels(ws), max_frames=max_frames, prefer=(request.target_class,), seed=request.seed)
    frames = decode(ws, labels)
    label_ids = {x.image_sha256: x.id for x in labels}
    references = _references(ws, embedder, frames, label_ids, request.target_class, config)
    gate = _cluster_gate(ws, embedder, cluster, config)
    report = SynthesisReport(uuid.uuid4().hex, generator.name, request.target_class, request.cluster_id,
                             request.count, embedder=embedder.name)
    start_run(ws, report.run_id, generator.name, request, embedder.name)
    context = {"run_id": report.run_id, "cluster_id": request.cluster_id,
               "failure_ids": list(cluster.failure_ids) if cluster else None,
               "target_class": request.target_class, "target_name": classes[request.target_class],
               "prompt": request.prompt, "negative_prompt": request.negative_prompt,
               "edit_instruction": request.edit_instruction, "generator": generator.name, "seed": request.seed,
               "embedder": embedder.name, "filter_config": vars(config)}
    frame_vectors: list[np.ndarray] = []
    parents: list[str] = []
    pending: list[tuple[int, SyntheticImage, dict[str, Any]]] = []
    dropped: list[Dropped] = []
    made = 0

    def flush() -> None:
        kept = _judge(embedder, references, gate, config, pending, dropped, context, frame_vectors, parents, report)
        save_batch(ws, report.run_id, kept, dropped)
        store_vectors(ws.catalog, SYNTHETIC_BOX, embedder.name,
                      [(f"{k.sha256}/{j}", v) for k in kept for j, v in enumerate(k.vectors)])
        report.kept += len(kept)
        report.kept_images += [k.sha256 for k in kept]
        report.rejected.update(d.reason for d in dropped)
        pending.clear()
        dropped.clear()

    for idx, item in enumerate(generator.generate(request, frames)):
        made += 1
        report.cost_usd += float(item.lineage.get("cost_usd") or 0.0)
        lineage = {**context, "index": idx, **item.lineage, "generator": generator.name}
        if isinstance(item, Rejected):
            dropped.append(Dropped(idx, item.reason, item.lineage.get("detail"), lineage))
        else:
            lineage["frame_size"] = list(item.image.shape[1::-1])
            sanity = label_sanity(item, len(classes), config)
            if sanity.reason is not None:
                dropped.append(Dropped(idx, sanity.reason, sanity.detail, {**lineage, "filters": sanity.scores},
                                       item.image))
            else:
                pending.append((idx, replace(item, lineage=lineage), sanity.scores))
        if len(pending) >= batch_size:
            flush()
        if progress is not None:  # kept and rejected count settled images; the rest wait for their batch
            progress(SynthesisProgress(made, request.count, report.kept,
                                       sum(report.rejected.values()) + len(dropped), report.cost_usd))
        if made >= request.count:
            break
    flush()
    if progress is not None:
        progress(SynthesisProgress(made, request.count, report.kept, sum(report.rejected.values()), report.cost_usd))
    vectors = np.stack(frame_vectors) if frame_vectors else np.zeros((0, 0), np.float32)
    report.domain_gap = domain_gap(ws, embedder, vectors, sorted(set(parents)), frames, request.seed)
    finish_run(ws, report.run_id, kept=report.kept, rejected=sum(report.rejected.values()), cost_usd=report.cost_usd,
               domain_gap=report.domain_gap)
    return report


def _judge(embedder: Embedder, references: NearDuplicates, gate: tuple[np.ndarray, float] | None,
           config: FilterConfig, pending: list[tuple[int, SyntheticImage, dict[str, Any]]], dropped: list[Dropped],
           context: dict[str, Any], frame_vectors: list[np.ndarray], parents: list[str], report: SynthesisReport,
           ) -> list[Kept]:
    """The model-based filters over one batch, in generation order so a kept image counts against the next."""
    if not pending:
        return []
    images = [item.image for _, item, _ in pending]
    if hasattr(embedder, "detect_frames"):
        detections, frames = embedder.detect_frames(images)  # type: ignore[attr-defined]
    else:
        detections, frames = [None] * len(images), embedder.embed(images)
    new_boxes = [np.asarray(item.boxes, np.float64)[new_box_indices(item)] for _, item, _ in pending]
    if hasattr(embedder, "embed_boxes_of"):  # the batch's crops in shared forwards
        box_vectors = embedder.embed_boxes_of(images, new_boxes)  # type: ignore[attr-defined]
    else:
        box_vectors = [embedder.embed_boxes(image, boxes) for image, boxes in zip(images, new_boxes, strict=True)]
    kept = []
    for (idx, item, scores), found, frame_vector, boxes, vectors in zip(pending, detections, frames, new_boxes,
                                                                         box_vectors, strict=True):
        new = new_box_indices(item)
        hashes = box_hashes(item.image, boxes)
        scores = {**scores, "phash": [f"{h:016x}" for h in hashes]}
        outcome = references.check(hashes, vectors)
        scores.update(outcome.scores)
        reason, detail = outcome.reason, outcome.detail
        if reason is None and gate is not None:
            similar = cluster_similarity(vectors, *gate)
            scores.update(similar.scores)
            reason, detail = similar.reason, similar.detail
        if found is not None:
            scores["champion"] = champion_verdict(boxes, np.asarray(item.class_ids)[new], found.xyxy, found.class_id,
                                                  found.confidence, config)
        lineage = {**item.lineage, "filters": scores}
        if reason is not None:
            dropped.append(Dropped(idx, reason, detail, lineage, item.image))
            continue
        references.add([f"{context['run_id'][:8]}#{idx}/{j}" for j in range(len(new))], hashes, vectors)
        report.hard += any(v["hard"] for v in scores.get("champion", []))
        frame_vectors.append(frame_vector)
        parent = item.lineage.get("source_image") or item.lineage.get("source_image_sha256")
        if parent:
            parents.append(parent)
        kept.append(Kept(idx, item.image, np.asarray(item.boxes, np.float64), np.asarray(item.class_ids, np.int64),
                         lineage, vectors))
    return kept


def synthesize_for_loop(ws: Workspace, n: int, seed: int, *, target: int | None = None,
                        confusable: int | None = None, embedder: Embedder | None = None,
                        progress: Callable[[SynthesisProgress], None] | None = None) -> dict[str, Any]:
    """N swap images made only from the workspace's own verified labels, stored for the next dataset version.

    Target: the rarest class (or `target`); confusable: the class the model most often confuses with it in
    verified reviews, else the most alike in shape (or `confusable`). Returns the run's report as a dict.
    """
    target = rarest_class(ws) if target is None else target
    confusable = confusable_for(ws, target) if confusable is None else confusable
    request = SynthesisRequest(target_class=target, count=n, seed=seed, confusable_classes=(confusable,))
    report = synthesize(ws, SwapGenerator(), request, embedder=embedder, progress=progress)
    return {**report.as_dict(), "confusable_classes": [confusable]}
