"""The flows as Prefect sees them: runs read back from a real (ephemeral) Prefect API, not from our return values.

Were `@flow` or `@task` dropped from flows/*.py, the stages would still compute the same dicts; only Prefect's
own records show that the runs, the cache and the retries are Prefect's.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterFlowRunId
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort, TaskRunSort

from feedback.datasets.yolo_import import import_yolo
from feedback.review.stage import Selection
from feedback.scenes import write_yolo_dataset
from flows.retrain import challenger, dataset_version, retrain_flow
from flows.review import review_push_flow, verified_labels
from store.settings import Settings, Workspace
from tests.flows.test_review_cli import _camera
from tests.flows.test_retrain import make_site

pytestmark = pytest.mark.usefixtures("prefect_api")


def _task_runs_of(flow_run_id: UUID, expect: int = 0, wait_s: float = 60.0) -> dict[str, list]:
    """The flow run's task runs by name. Prefect 3 records task runs from events, written after the flow returns
    (a moment later on a busy machine): wait, bounded, until `expect` of them are there in a final state."""
    deadline = time.monotonic() + wait_s
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(task_run_filter=TaskRunFilter(
                flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id])), sort=TaskRunSort.EXPECTED_START_TIME_ASC,
                limit=50)
        if (len(runs) >= expect and all(r.state and r.state.is_final() for r in runs)) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    by_name: dict[str, list] = {}
    for run in runs:
        by_name.setdefault(run.name.rsplit("-", 1)[0], []).append(run)  # "gate-verdict-4c1" -> "gate-verdict"
    return by_name


def _final_task_run(task_run_id: UUID, wait_s: float = 60.0) -> tuple:
    """A task run and its state history once Prefect has recorded its final state (events land a moment later)."""
    deadline = time.monotonic() + wait_s
    while True:
        with get_client(sync_client=True) as client:
            run = client.read_task_run(task_run_id)
            history = client.read_task_run_states(task_run_id)
        if (run.state and run.state.is_final()) or time.monotonic() > deadline:
            return run, history
        time.sleep(0.5)


def test_retrain_is_a_flow_run_of_named_task_runs_and_its_challenger_is_cached(tmp_path: Path,
                                                                              scene_pt: Path) -> None:
    data = tmp_path / "data"
    write_yolo_dataset(data / "base", range(6))
    write_yolo_dataset(data / "holdout", range(100, 103))
    path = tmp_path / "ws"
    make_site(path, data, scene_pt)

    state = retrain_flow(str(path), epochs=1, imgsz=64, return_state=True)
    assert state.is_completed()
    summary = state.result()
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                                      sort=FlowRunSort.START_TIME_DESC, limit=5)
        flow = client.read_flow(run.flow_id)
    assert flow.name == "retrain" and run.state.type == StateType.COMPLETED
    assert run.parameters["epochs"] == 1 and run.parameters["imgsz"] == 64
    tasks = _task_runs_of(flow_run_id, expect=3)
    assert sorted(tasks) == ["challenger", "dataset-version", "gate-verdict"]
    assert all(len(runs) == 1 and runs[0].state.type == StateType.COMPLETED for runs in tasks.values())
    assert tasks["challenger"][0].state.name == "Completed"  # trained, not taken from a cache

    # The same challenger inputs again: Prefect answers from its cache, and nothing is trained a second time.
    ws = Workspace(Settings(workspace=path, fsync=False))
    version = summary["dataset_version"]
    assert dataset_version(str(path)) == version  # nothing new: the same frozen version
    again = challenger(str(path), version, "cpu", 1, 64, 0, "local", None, return_state=True)
    cached, history = _final_task_run(again.state_details.task_run_id)
    assert cached.id != tasks["challenger"][0].id
    assert cached.state.name == "Cached" and cached.state.type == StateType.COMPLETED
    assert [s.name for s in history][-1] == "Cached"
    assert again.result() == summary["trained"]
    with ws.catalog.connect() as con:
        assert con.execute("SELECT model_id FROM training_runs").fetchall() == [(summary["trained"]["model"],)]


def test_a_pull_whose_labels_arrive_late_is_retried_by_prefect(tmp_path: Path) -> None:
    """The oracle's labels folder is missing on the first attempt (a real failure of `make_reviewer`) and
    appears while Prefect decides on the retry: the task run's history shows the retry, then success."""
    ws = Workspace(Settings(workspace=tmp_path / "ws", fsync=False))
    import_yolo(ws, write_yolo_dataset(tmp_path / "d", range(2)), "train", progress=False)
    labels = tmp_path / "labels"
    _camera(ws, labels, 3)
    pushed = review_push_flow(str(ws.settings.workspace), budget=3, reviewer="oracle", labels=str(labels),
                              selection=Selection(strategy="random"))
    assert pushed["pushed"] == 3
    late = tmp_path / "labels-in-transit"
    labels.rename(late)
    failed_attempts: list[str] = []

    def labels_arrive(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's retry_condition_fn
        failed_attempts.append(state.message or "")
        shutil.move(late, labels)  # the copy finished while the task waited to retry
        return True

    pull = verified_labels.with_options(retry_delay_seconds=0, retry_condition_fn=labels_arrive)
    state = pull(str(ws.settings.workspace), "oracle", str(labels), 0.0, return_state=True)
    assert state.is_completed() and state.result()["verified"] == 3
    assert len(failed_attempts) == 1 and "ground-truth labels" in failed_attempts[0]
    run, states = _final_task_run(state.state_details.task_run_id)
    history = [s.name for s in states]
    assert run.run_count == 2 and run.state.type == StateType.COMPLETED
    assert {"AwaitingRetry", "Retrying"} & set(history), history
    assert history.index("Completed") > max(history.index(n) for n in ("AwaitingRetry", "Retrying") if n in history)
    with ws.catalog.connect() as con:
        assert con.execute("SELECT count(*) FROM review_tasks WHERE status = 'verified'").fetchone() == (3,)
