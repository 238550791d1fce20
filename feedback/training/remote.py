"""Training away from the catalog: a dataset version exported to the blob store for a remote job,
and what that job runs (`edgeloop train --export ...`): fetch, fit, write the weights to its output folder.

The export names images by their blobs, so the job reads them from the bucket itself; the host uploads one JSON.
"""

from __future__ import annotations

import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import fsspec

from feedback.training.train import TrainingError, fit
from store.blobs import BlobStore
from store.datasets import yolo_items
from store.objects import ObjectStore
from store.settings import Workspace

EXPORT_FORMAT = "edgeloop-dataset/1"
WEIGHTS = "weights.pt"  # what a job leaves in its output folder
PROGRESS = "progress.json"  # {"epoch": e, "epochs": n}, rewritten after every epoch


def export_key(version: int) -> str:
    return f"exports/datasets/v{version}.json"


def export_dataset(ws: Workspace, version: int) -> str:
    """Write dataset `version` to the blob store, once (a version is frozen); the export's URL."""
    key = export_key(version)
    if not ws.objects.exists(key):
        names, items = yolo_items(ws.catalog, version)
        manifest = {"format": EXPORT_FORMAT, "version": version, "names": names, "store": ws.objects.url,
                    "items": [[i.image_sha256, i.split, i.suffix, i.label] for i in items]}
        ws.objects.put(key, json.dumps(manifest).encode())
    return join(ws.objects.url, key)


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *parts])


def fetch_export(url: str, root: Path, *, expect_version: int | None = None, threads: int = 16) -> tuple[Path, int]:
    """Write the exported data set at `url` as a YOLO folder under `root`: its data.yaml and dataset version."""
    with fsspec.open(url, "rb") as f:
        manifest = json.load(f)
    if manifest.get("format") != EXPORT_FORMAT:
        raise TrainingError(f"{url}: not an edgeloop dataset export (format {manifest.get('format')!r})")
    if expect_version is not None and manifest["version"] != expect_version:
        raise TrainingError(f"{url} holds dataset v{manifest['version']}, not v{expect_version}")
    blobs = BlobStore(ObjectStore(manifest["store"], fsync=False))
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "labels").mkdir(parents=True, exist_ok=True)

    def write(item: list[str]) -> None:
        sha, split, suffix, label = item
        (root / split / "images" / f"{sha}{suffix}").write_bytes(blobs.get(sha))
        (root / split / "labels" / f"{sha}.txt").write_text(label)

    # Threads: a bucket answers each read in tens of milliseconds, and a data set has thousands.
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(write, manifest["items"]))
    data = {"path": str(root.resolve()), "train": "train/images", "val": "val/images", "names": manifest["names"],
            "edgeloop_dataset_version": manifest["version"]}
    (root / "data.yaml").write_text(json.dumps(data, indent=1) + "\n")
    return root / "data.yaml", int(manifest["version"])


def run_export(
    export_url: str, output_dir: str, params: dict[str, Any], *, dataset_version: int | None = None,
    parent_weights: str | None = None, base: str = "yolov8n.yaml",
) -> dict[str, Any]:
    """What a remote job runs: train on an export from `parent_weights` (a URL) or `base`, and leave the
    weights in `output_dir`, its progress there too, epoch by epoch."""
    fs, out = fsspec.core.url_to_fs(output_dir)
    fs.makedirs(out, exist_ok=True)

    def progress(epoch: int, epochs: int) -> None:
        fs.pipe_file(join(out, PROGRESS), json.dumps({"epoch": epoch, "epochs": epochs}).encode())

    with tempfile.TemporaryDirectory(prefix="edgeloop-job-") as tmp:
        work = Path(tmp)
        data_yaml, version = fetch_export(export_url, work / "data", expect_version=dataset_version)
        start: Path | str = base
        if parent_weights:
            start = work / "parent.pt"
            with fsspec.open(parent_weights, "rb") as f:
                start.write_bytes(f.read())
        t0 = time.perf_counter()
        weights = fit(data_yaml, start, params, work / "run", progress)
        duration = time.perf_counter() - t0
        fs.put_file(str(weights), join(out, WEIGHTS))
    return {"weights": join(output_dir, WEIGHTS), "dataset_version": version, "duration_s": round(duration, 1)}
