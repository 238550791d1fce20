"""`edgeloop clusters` and `edgeloop prompts`: the model's blind spots as failure clusters, and the text that
asks a generator for more of each."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import Progress
from rich.table import Column, Table

from feedback.embeddings.choice import default_embedder
from feedback.mining.mine import mine_clusters
from feedback.mining.prompts import Phrasebook, wants_images, write_prompts
from feedback.mining.sheet import write_sheet
from flows.cli.common import (
    ClipModelOpt, JsonOpt, WorkspaceOpt, app, console, emit, err, fail, open_workspace, show_progress,
    ultralytics_to_stderr,
)
from store.clusters import read_clusters, save_prompts
from store.failures import failure_model_versions

# Bin values too common to tell clusters apart in the table (--json has them all).
ORDINARY = {"lighting": "normal", "contrast": "normal", "focus": "sharp", "size": "medium", "position": "off-centre",
            "crowding": "isolated", "shape": "square"}

ModelVersionOpt = Annotated[Optional[str], typer.Option(
    help="Only this deployed model's failures (default: every model's, as one scope).")]


def _check_model_version(ws, model_version: str | None) -> None:
    if model_version is None:
        return
    with ws.catalog.connect() as con:
        known = failure_model_versions(con)
    if model_version not in known:
        raise fail(f"--model-version {model_version!r} has no failure records; versions with failures: "
                   f"{', '.join(known) or 'none (review some captures first)'}")


def cluster_json(cluster, sheet: str | None = None) -> dict[str, Any]:
    d = cluster.description
    return {
        "id": cluster.id, "class": cluster.class_name, "kind": cluster.kind, "noise": cluster.noise,
        "size": cluster.size, "model_version": cluster.model_version, "embedder": cluster.embedder,
        "fixed": {k: v["value"] for k, v in d["bins"].items() if v["fixed"]},
        "attributes": d["bins"], "medians": d["medians"], "colours": d["colours"],
        **{k: d[k] for k in ("confused_with", "camera", "device", "tags", "neighbour") if k in d},
        "medoids": cluster.medoids, "sheet": sheet, "members": list(cluster.members),
    }


@app.command("clusters")
def clusters(
    model_version: ModelVersionOpt = None,
    min_size: Annotated[int, typer.Option(help="Fewest failures that make a cluster; fewer are noise.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the clustering (same seed, same failures: same clusters).")] = 0,
    clip_model: ClipModelOpt = None,
    clip_pretrained: Annotated[Optional[str], typer.Option(
        help="Embed with pretrained CLIP fetched by tag (online only); default: the champion's own features, "
        "or EDGELOOP_CLIP_WEIGHTS.")] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Group what the model got wrong into blind spots, per class and failure kind, and describe each.

    Failure crops are embedded (the champion's features unless CLIP weights are configured), measured
    (light, blur, size, position, crowding, colours) and clustered; each failure lands in one cluster or
    in its group's noise. Re-running keeps the ids of clusters found again. Writes one contact sheet PNG
    of medoid crops per cluster.
    """
    if min_size < 2:
        raise fail(f"--min-size {min_size} must be at least 2")
    ws = open_workspace(workspace)
    _check_model_version(ws, model_version)
    with ultralytics_to_stderr():
        embedder = default_embedder(ws, clip_model=clip_model, clip_pretrained=clip_pretrained)
        found = mine_clusters(ws, embedder, model_version=model_version, seed=seed, min_size=min_size,
                              progress=show_progress(as_json))
    sheets = {}
    with Progress(console=err, disable=not show_progress(as_json), transient=True) as bar:
        task = bar.add_task("writing contact sheets", total=len(found))
        for c in found:
            sheets[c.id] = str(write_sheet(ws, c))
            bar.advance(task)
    items = [cluster_json(c, sheets[c.id]) for c in found]
    out = {"model_version": model_version, "embedder": embedder.name,
           "failures": sum(c.size for c in found), "clusters": sum(not c.noise for c in found),
           "noise": sum(c.size for c in found if c.noise), "items": items}
    if as_json:
        emit(out, True)
        return
    table = Table(Column("id", no_wrap=True), "class", "kind", Column("size", justify="right"), "distinctive",
                  "neighbour", title=f"failure clusters ({model_version or 'all models'}, {embedder.name})",
                  caption="distinctive: what at least 70% of a cluster share, ordinary values left out")
    for c, item in zip(found, items, strict=True):
        distinctive = [f"{v} contrast" if k == "contrast" else v for k, v in item["fixed"].items()
                       if ORDINARY.get(k) != v]
        table.add_row(c.id, c.class_name, c.kind + (" (noise)" if c.noise else ""), str(c.size),
                      ", ".join(distinctive) or "-", (item.get("neighbour") or {}).get("class", ""))
    if not found:
        console.print("no failure records yet: review some captures first (`edgeloop review push` / `pull`)")
        return
    console.print(table)
    console.print(f"contact sheets: {Path(sheets[found[0].id]).parent}/<id>.png")
    console.print(f"{out['failures']} failures: {out['clusters']} clusters, {out['noise']} in noise")


@app.command("prompts")
def prompts(
    cluster: Annotated[Optional[str], typer.Option(help="Only this cluster (noise buckets too); default: every "
                                                       "active cluster of the scope, noise left out.")] = None,
    variants: Annotated[int, typer.Option(help="Prompts per cluster: the first says only what the cluster fixes, "
                                               "the others vary the rest.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the variants.")] = 0,
    model_version: ModelVersionOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write prompts, negative prompts and edit instructions for the failure clusters, stored with lineage.

    Class phrases, edit phrases and the attribute vocabulary come from settings (edgeloop.toml).
    """
    if variants < 1:
        raise fail(f"--variants {variants} must be at least 1")
    ws = open_workspace(workspace)
    with ws.catalog.connect() as con:
        if cluster is not None:
            chosen = read_clusters(con, cluster_id=cluster)
            if not chosen:
                raise fail(f"--cluster {cluster!r} is not a failure cluster id (see `edgeloop clusters`)")
        else:
            chosen = [c for c in read_clusters(con, model_version=model_version) if not c.noise]
            if not chosen:
                raise fail(f"no failure clusters for {model_version or 'all models'}: run `edgeloop clusters"
                           f"{' --model-version ' + model_version if model_version else ''}` first")
    book = Phrasebook.from_settings(ws.settings)
    written = [p for c in chosen for p in write_prompts(c, book, variants=variants, seed=seed)]
    with ws.catalog.connect() as con:
        added = save_prompts(con, written)
    items = [{"id": p.id, "cluster": p.cluster_id, "variant": p.variant, "seed": p.seed,
              "target_class": p.lineage["class"], "kind": p.lineage["kind"], "prompt": p.prompt,
              "negative_prompt": p.negative_prompt, "edit_instruction": p.edit_instruction,
              "writer_version": p.writer_version} for p in written]
    # Why a cluster has no prompts, for people and for --json alike.
    unwanted = {c.id: f"{c.description.get('duplicates', 0):.0%} are second boxes on objects already found; "
                      "lower NMS's IoU or raise the threshold instead" for c in chosen if not wants_images(c)}
    if as_json:
        emit({"prompts": items, "added": added,
              "no_prompts": [{"cluster": k, "reason": v} for k, v in unwanted.items()]}, True)
        return
    for c in chosen:
        console.rule(f"{c.id}  {c.class_name} {c.kind}{' (noise)' if c.noise else ''}  n={c.size}")
        if c.id in unwanted:
            console.print(f"no prompts: {unwanted[c.id]}")
            continue
        mine = [p for p in written if p.cluster_id == c.id]
        console.print(f"[bold]edit:[/] {mine[0].edit_instruction}")
        console.print(f"[bold]negative:[/] {mine[0].negative_prompt}")
        for p in mine:
            console.print(f"  {p.variant}. {p.prompt}")
    console.print(f"{len(written)} prompts for {len(chosen)} clusters ({added} new)")
