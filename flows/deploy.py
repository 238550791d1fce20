"""Deployments with schedules: what `edgeloop deploy` serves (ingest, review pull and push, the nightly cycle).

Cron defaults live in `Settings.schedule_*` (overridable in edgeloop.toml); `prefect.yaml` covers work pools.
"""

from __future__ import annotations

from typing import Any

import prefect
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

from feedback.review.stage import Selection
from flows.common import CATALOG_LIMIT, GENERATION_LIMIT
from flows.cycle import improvement_cycle
from flows.ingest import ingest_flow
from flows.review import review_pull_flow, review_push_flow
from store.settings import Settings


def deployments(settings: Settings, *, reviewer: str = "label-studio", budget: int = 100,
                selection: Selection | None = None, cycle: dict[str, Any] | None = None) -> list:
    """One RunnerDeployment per scheduled flow, each bound to this workspace; review push and the nightly cycle
    pick captures with the same `selection` (the UI can change it per run)."""
    workspace = str(settings.workspace.resolve())
    picking = {"budget": budget, "selection": (selection or Selection()).model_dump(mode="json")}
    return [
        ingest_flow.to_deployment("ingest", cron=settings.schedule_ingest, parameters={"workspace": workspace}),
        review_pull_flow.to_deployment("review-pull", cron=settings.schedule_review_pull,
                                       parameters={"workspace": workspace, "reviewer": reviewer}),
        review_push_flow.to_deployment("review-push", cron=settings.schedule_review_push,
                                       parameters={"workspace": workspace, "reviewer": reviewer, **picking}),
        improvement_cycle.to_deployment("nightly", cron=settings.schedule_cycle,
                                        parameters={"workspace": workspace, "reviewer": reviewer, **picking,
                                                    **(cycle or {})}),
    ]


def ensure_limits() -> None:
    """The global concurrency limits the flows hold (one slot each); creating them twice changes nothing."""
    with get_client(sync_client=True) as client:
        existing = {limit.name for limit in client.read_global_concurrency_limits(limit=200)}
        for name in (CATALOG_LIMIT, GENERATION_LIMIT):
            if name not in existing:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


def serve(settings: Settings, *, reviewer: str = "label-studio", budget: int = 100, selection: Selection | None = None,
          cycle: dict[str, Any] | None = None) -> None:
    """Register the deployments with the Prefect API and run their flows here until stopped (Ctrl-C)."""
    ensure_limits()
    prefect.serve(*deployments(settings, reviewer=reviewer, budget=budget, selection=selection, cycle=cycle))
