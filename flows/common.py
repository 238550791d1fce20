"""What every flow shares: opening the workspace a flow was given, concurrency limits, the skipped result.

Flows take plain parameters (strings, numbers, pydantic models) so that deployments and the Prefect UI can set them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypedDict

from prefect.cache_policies import CacheKeyFnPolicy

from store.catalog import workspace_identity as catalog_identity
from store.settings import Settings, Workspace

# Global concurrency limits (`edgeloop deploy` creates them): one catalog-heavy stage at a time, and one
# paid generation job at a time, however many flow runs the schedules start.
CATALOG_LIMIT = "edgeloop-catalog-writer"
GENERATION_LIMIT = "edgeloop-generation-spend"


class Skipped(TypedDict):
    """A stage's result when it had nothing to do: why. Each stage flow decides this itself, in one place."""

    skipped: str


def open_workspace(workspace: str | None) -> Workspace:
    return Workspace(Settings(workspace=Path(workspace)) if workspace else Settings())


def workspace_identity(workspace: str | None) -> str:
    """The id the workspace's catalog was made with (migration 0010): unlike its path, it changes when a
    workspace is deleted and made again, as `edgeloop demo` does on every run."""
    with open_workspace(workspace).catalog.connect() as con:
        return catalog_identity(con)


def _this_workspace(context: object, inputs: dict) -> str:
    return workspace_identity(inputs["workspace"])


# Add to a cached task's policy (its first parameter must be `workspace`): Prefect keeps task results
# outside the workspace, and INPUTS alone sees only the path, so a recreated workspace at the same path
# (or None, meaning the settings' one) would get the old workspace's model or images back.
THIS_WORKSPACE = CacheKeyFnPolicy(cache_key_fn=_this_workspace)


@contextmanager
def limited(name: str) -> Iterator[None]:
    """Hold one slot of a global concurrency limit; without a Prefect server (or the limit) it does not wait."""
    from prefect.concurrency.sync import concurrency

    with concurrency(name, occupy=1, strict=False):
        yield
