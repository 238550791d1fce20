"""The `ingest` Prefect flow: load what the API dropped in the inbox into the catalog.

Thin by design: the work is `store.inbox.load_inbox`, which is idempotent, so a retry is safe.
"""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow, task

from flows.common import open_workspace
from store.inbox import load_inbox


@task(name="load-inbox", retries=3, retry_delay_seconds=10)
def load_inbox_into_catalog(workspace: str | None) -> dict[str, int]:
    ws = open_workspace(workspace)
    return asdict(load_inbox(ws.catalog, ws.inbox))


@flow(name="ingest", log_prints=True)
def ingest_flow(workspace: str | None = None) -> dict[str, int]:
    """Run every few minutes (see `edgeloop` deployments); safe to overlap with itself."""
    report = load_inbox_into_catalog(workspace)
    print(f"ingest: {report}")
    return report
