"""One generation job for a list of failure clusters, the generator loaded once: for a GPU Prefect work pool or a
Vertex AI custom job, e.g. `python -m feedback.synthesis.batch --clusters all --generator gligen --n 100 --out URL`.

Kept images go through `synthesize` (filters, lineage, the catalog) into the workspace, which EDGELOOP_* variables
point at (storage_url may be gs://); the job's report, one JSON object, is printed and written to `--out` (fsspec).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from feedback.synthesis.clusters import ClusterError, ClusterSpec, active_cluster_ids, load_cluster
from feedback.synthesis.generators import make_generator
from feedback.synthesis.port import Generator, SynthesisRequest
from feedback.synthesis.service import synthesize
from feedback.synthesis.targets import confusable_for
from store.labels import catalog_classes
from store.settings import Settings, Workspace

Job = tuple[SynthesisRequest, ClusterSpec | None]


@dataclass
class BatchReport:
    generator: str
    runs: list[dict[str, Any]] = field(default_factory=list)  # each cluster's SynthesisReport
    failed: dict[str, str] = field(default_factory=dict)  # cluster id (or class) -> why it made nothing

    @property
    def kept(self) -> int:
        return sum(int(r["kept"]) for r in self.runs)


def _confusable(ws: Workspace, target: int) -> tuple[int, ...]:
    try:
        return (confusable_for(ws, target),)
    except LookupError:
        return ()  # generators that need one say so; the others (gligen, qwen-image) do without


def cluster_jobs(ws: Workspace, cluster_ids: Sequence[str] | None, n: int, seed: int = 0,
                 max_cost_usd: float | None = None) -> list[Job]:
    """A request per cluster (every active one when `cluster_ids` is None), prompted by its seed-th prompt."""
    jobs: list[Job] = []
    for cid in active_cluster_ids(ws) if cluster_ids is None else cluster_ids:
        spec = load_cluster(ws, cid)
        prompt = spec.prompts[seed % len(spec.prompts)] if spec.prompts else {}
        confusable = ((spec.confusable_class,) if spec.confusable_class is not None
                      else _confusable(ws, spec.target_class))
        jobs.append((SynthesisRequest(
            target_class=spec.target_class, count=n, seed=seed, cluster_id=spec.id, prompt=prompt.get("prompt"),
            negative_prompt=prompt.get("negative_prompt"), edit_instruction=prompt.get("edit_instruction"),
            confusable_classes=confusable, attributes=spec.attributes, max_cost_usd=max_cost_usd), spec))
    return jobs


def class_job(ws: Workspace, class_name: str, n: int, seed: int = 0, max_cost_usd: float | None = None) -> Job:
    """A request for a class without a cluster (a site that has not mined its failures yet)."""
    with ws.catalog.connect() as con:
        classes = catalog_classes(con)
    if class_name not in classes:
        raise ClusterError(f"--class {class_name!r} is not one of the catalog's classes {classes}")
    target = classes.index(class_name)
    return SynthesisRequest(target_class=target, count=n, seed=seed, confusable_classes=_confusable(ws, target),
                            max_cost_usd=max_cost_usd), None


def run_batch(ws: Workspace, generator: Generator, jobs: Sequence[Job], *,
              progress: Callable[[str, Any], None] | None = None, **synthesize_options: Any) -> BatchReport:
    """Every job through `synthesize` with the one generator; a job that fails is recorded and the rest go on."""
    report = BatchReport(generator.name)
    for request, spec in jobs:
        key = request.cluster_id or f"class {request.target_class}"
        step = (lambda p, key=key: progress(key, p)) if progress else None
        try:
            run = synthesize(ws, generator, request, cluster=spec, progress=step, **synthesize_options)
        except (ValueError, LookupError) as exc:  # SynthesisError, the adapters' material errors, a missing cluster
            report.failed[key] = f"{type(exc).__name__}: {exc}"
            continue
        report.runs.append(run.as_dict())
    return report


def write_report(report: BatchReport, url: str) -> None:
    """The report as JSON at `url`: a path, or any fsspec URL (gs:// needs gcsfs in the job's image)."""
    import fsspec

    with fsspec.open(url, "w") as f:
        json.dump(asdict(report), f, default=str)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m feedback.synthesis.batch", description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--clusters", help="comma-separated failure cluster ids, or 'all' (every active one)")
    which.add_argument("--class", dest="class_name", help="a target class, without a cluster")
    parser.add_argument("--generator", required=True, help="a registered generator: gligen, sd-inpaint, swap, ...")
    parser.add_argument("--n", type=int, required=True, help="images to make per cluster")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-cost-usd", type=float, default=None, help="cloud generators stop before spending more")
    parser.add_argument("--workspace", type=Path, default=None, help="default: EDGELOOP_WORKSPACE or ./.edgeloop")
    parser.add_argument("--out", default=None, help="where the JSON report goes too (a path or gs://...)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n {args.n} must be at least 1")

    ws = Workspace(Settings(workspace=args.workspace) if args.workspace else Settings())
    try:
        if args.class_name is not None:
            jobs = [class_job(ws, args.class_name, args.n, args.seed, args.max_cost_usd)]
        else:
            ids = None if args.clusters == "all" else [c.strip() for c in args.clusters.split(",") if c.strip()]
            jobs = cluster_jobs(ws, ids, args.n, args.seed, args.max_cost_usd)
        generator = make_generator(args.generator, ws)
    except (ClusterError, ValueError, LookupError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not jobs:
        print("error: no active missed or confusion cluster to generate for", file=sys.stderr)
        return 2
    report = run_batch(ws, generator, jobs)
    print(json.dumps(asdict(report), default=str))
    if args.out:
        write_report(report, args.out)
    return 1 if report.failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
