"""What every flow shares: opening the workspace a flow was given, the reviewer it names, concurrency limits.

Flows take plain parameters (strings, numbers) so that deployments and the Prefect UI can set them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect.cache_policies import CacheKeyFnPolicy

from feedback.review.labelstudio import LabelStudioReviewer
from feedback.review.oracle import OracleReviewer
from store.catalog import workspace_identity as catalog_identity
from store.settings import Settings, Workspace

# Global concurrency limits (`edgeloop deploy` creates them): one catalog-heavy stage at a time, and one
# paid generation job at a time, however many flow runs the schedules start.
CATALOG_LIMIT = "edgeloop-catalog-writer"
GENERATION_LIMIT = "edgeloop-generation-spend"


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


def make_reviewer(ws: Workspace, reviewer: str, labels: str | None):  # noqa: ANN201 - a Reviewer adapter
    """`label-studio` (settings) or `oracle` (ground-truth labels folder: benchmarks and the demo)."""
    if reviewer == "oracle":
        if not labels or not Path(labels).is_dir():
            raise ValueError(f"the oracle reviewer needs a folder of ground-truth labels (got {labels!r})")
        return OracleReviewer(Path(labels))
    if reviewer != "label-studio":
        raise ValueError(f"reviewer {reviewer!r} must be 'label-studio' or 'oracle'")
    return LabelStudioReviewer.from_settings(ws.settings)


@contextmanager
def limited(name: str) -> Iterator[None]:
    """Hold one slot of a global concurrency limit; without a Prefect server (or the limit) it does not wait."""
    from prefect.concurrency.sync import concurrency

    with concurrency(name, occupy=1, strict=False):
        yield
