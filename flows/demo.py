"""`edgeloop demo`: the whole loop, offline on a CPU, on scenes the project generates itself.

Each stage prints what it did. Stages join as they are built; today: register, upload, ingest.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edge.client import IngestClient, UploadRejected
from edge.protocol import CaptureMeta, Heartbeat, SourceRef, utc_now
from feedback.ingest.serving import BackgroundServer
from feedback.scenes import CLASSES, encode_jpeg, render_scene
from store.devices import add_device
from store.inbox import load_inbox
from store.settings import Settings, Workspace
from store.status import status_counts

_MARKER = ".edgeloop-demo"
DEVICE = "demo-cam-01"


class DemoError(Exception):
    pass


def prepare_workspace(path: Path) -> Workspace:
    """Start from an empty workspace; refuse to wipe a folder the demo did not create."""
    if path.exists():
        if not (path / _MARKER).exists():
            raise DemoError(f"{path} exists and is not a demo workspace; pass --workspace with a new folder")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / _MARKER).write_text("created by `edgeloop demo`; it recreates this folder on every run\n")
    return Workspace(Settings(workspace=path))


def run_demo(path: Path, *, frames: int = 40, seed: int = 0, console: Console | None = None) -> dict[str, object]:
    console = console or Console()
    ws = prepare_workspace(path)
    console.rule("[bold]edgeloop demo")
    console.print(f"workspace: {path.resolve()}  (classes: {', '.join(CLASSES)})")

    token = add_device(ws.catalog, ws.objects, DEVICE)
    console.print(f"[bold]1. register[/] device {DEVICE!r}; its token is stored only as a hash")

    scenes = [render_scene(seed + i) for i in range(frames)]
    summary: dict[str, object] = {"workspace": str(path)}
    with BackgroundServer(ws.settings) as url, IngestClient(url, token) as client:
        console.print(f"[bold]2. serve[/] ingest API at {url}")
        new = duplicates = 0
        for i, scene in enumerate(scenes):
            h, w = scene.image.shape[:2]
            # No model is deployed yet, so the device reports the unbiased random sample only.
            meta = CaptureMeta(
                device=DEVICE, camera="gate-1", captured_at=utc_now(), frame_width=w, frame_height=h,
                model_version="none", triggers=["random"], source=SourceRef(uri=f"scene_{scene.seed:06d}", frame_index=i),
            )
            accepted = client.upload_capture(meta, encode_jpeg(scene.image), "image/jpeg")
            new, duplicates = new + (not accepted.duplicate), duplicates + accepted.duplicate
        again = client.upload_capture(meta, encode_jpeg(scenes[-1].image), "image/jpeg")
        client.heartbeat(Heartbeat(device=DEVICE, sent_at=utc_now(), model_version="none", fps=0.0,
                                   inference_ms_p50=0.0, inference_ms_p99=0.0, queue_depth=0))
        with IngestClient(url, "not-a-token") as stranger:
            try:
                stranger.upload_capture(meta, encode_jpeg(scenes[0].image), "image/jpeg")
                refused = "accepted?!"
            except UploadRejected as exc:
                refused = f"HTTP {exc.status} {exc.reason}"
        console.print(f"[bold]3. upload[/] {new} new captures; re-sending one answered duplicate={again.duplicate}; "
                      f"a stranger's upload was refused with {refused}")
        summary.update(uploaded=new, duplicate_resend=again.duplicate, stranger=refused)

    first = load_inbox(ws.catalog, ws.inbox)
    second = load_inbox(ws.catalog, ws.inbox)
    console.print(f"[bold]4. ingest[/] loaded {first.captures_added} captures and {first.heartbeats_added} heartbeat "
                  f"into the catalog; a second run added {second.captures_added}")
    summary.update(ingested=first.captures_added, ingested_again=second.captures_added)

    counts = status_counts(ws.catalog, ws.inbox)
    table = Table("device", "captures", title="5. status")
    for device, n in counts["captures_by_device"].items():
        table.add_row(device, str(n))
    console.print(table)
    console.print(f"inbox backlog: {counts['inbox_backlog']}")
    return summary
