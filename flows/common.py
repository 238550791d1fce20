"""What every flow shares: opening the workspace a flow was given, the reviewer it names, concurrency limits.

Flows take plain parameters (strings, numbers) so that deployments and the Prefect UI can set them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from store.settings import Settings, Workspace

# Global concurrency limits (`edgeloop deploy` creates them): one catalog-heavy stage at a time, and one
# paid generation job at a time, however many flow runs the schedules start.
CATALOG_LIMIT = "edgeloop-catalog-writer"
GENERATION_LIMIT = "edgeloop-generation-spend"


def open_workspace(workspace: str | None) -> Workspace:
    return Workspace(Settings(workspace=Path(workspace)) if workspace else Settings())


def make_reviewer(ws: Workspace, reviewer: str, labels: str | None):  # noqa: ANN201 - a Reviewer adapter
    """`label-studio` (settings) or `oracle` (ground-truth labels folder: benchmarks and the demo)."""
    from feedback.review.labelstudio import LabelStudioReviewer
    from feedback.review.oracle import OracleReviewer

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
