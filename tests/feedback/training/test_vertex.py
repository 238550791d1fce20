"""The Vertex AI training backend against a local server speaking the Vertex REST API (tests/.../vertex_stub.py),
through google-cloud-aiplatform's own REST transport: the job spec it receives, the states it walks through,
and what gets registered (or not) from the weights the job leaves. Local folders stand in for the gs:// buckets.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from feedback.datasets.yolo_import import import_yolo
from feedback.scenes import CLASSES, write_yolo_dataset
from feedback.training.choice import get_backend
from feedback.training.gate_run import register_weights
from feedback.training.train import TrainingError
from feedback.training.vertex import VertexBackend, VertexJobError
from store.datasets import build_dataset
from store.models import get_model, list_models
from store.settings import Settings, Workspace
from tests.feedback.training.vertex_stub import (
    CANCELLED, FAILED, PENDING, RUNNING, STEP, SUCCEEDED, VertexStub, runs_container, writes_weights,
)

TOKEN = "stub-token"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("scenes")
    return write_yolo_dataset(root / "t", range(8)), write_yolo_dataset(root / "h", range(500, 502))


def settings(tmp: Path, endpoint: str | None = None, **more: Any) -> Settings:
    """A workspace whose blob store is a file:// URL, as a gs:// one would be, and a Vertex set-up."""
    values: dict[str, Any] = {
        "workspace": tmp / "ws", "storage_url": (tmp / "bucket").as_uri(), "vertex_project": "edge-proj",
        "vertex_region": "europe-west4", "vertex_staging_bucket": (tmp / "staging").as_uri(),
        "vertex_machine_type": "g2-standard-8", "vertex_accelerator_type": "NVIDIA_L4", "vertex_accelerator_count": 2,
        "vertex_image": "europe-docker.pkg.dev/edge-proj/edgeloop/train:1", "vertex_api_endpoint": endpoint,
        "vertex_token": TOKEN, "vertex_poll_s": 45.0}
    return Settings(**(values | more))


@pytest.fixture
def ws(tmp_path: Path, data: tuple[Path, Path]) -> Workspace:
    ws = Workspace(settings(tmp_path))
    import_yolo(ws, data[0], "train", progress=False)
    import_yolo(ws, data[1], "holdout", progress=False)
    return ws


@pytest.fixture(scope="module")
def job_weights(scene_pt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Other bytes than `scene_pt` (a new save carries a new date), same classes: what a job hands back."""
    from ultralytics import YOLO

    path = tmp_path_factory.mktemp("job") / "trained.pt"
    YOLO(str(scene_pt)).save(str(path))
    assert path.read_bytes() != scene_pt.read_bytes()
    return path


class Polls:
    """The backend's sleep: records each wait instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def backend(ws: Workspace, stub: VertexStub, polls: Polls) -> VertexBackend:
    ws.settings.vertex_api_endpoint = stub.url
    return VertexBackend.from_settings(ws.settings, sleep=polls)


def counts(ws: Workspace) -> tuple[int, int]:
    with ws.catalog.connect() as con:
        return (con.execute("SELECT count(*) FROM models").fetchone()[0],
                con.execute("SELECT count(*) FROM training_runs").fetchone()[0])


def test_job_spec_states_and_lineage(ws: Workspace, scene_pt: Path, job_weights: Path) -> None:
    parent, _ = register_weights(ws, scene_pt)
    seen: list[tuple[int, int | None, str]] = []
    polls = Polls()
    with VertexStub([PENDING, RUNNING, RUNNING, SUCCEEDED], writes_weights(job_weights, epochs=7)) as stub:
        result = backend(ws, stub, polls).train(ws, parent=parent.id, overrides={"epochs": 7}, seed=5,
                                                progress=lambda *p: seen.append(p))
    [create] = [r for r in stub.requests if r.method == "POST"]
    assert create.path.startswith("/v1/projects/edge-proj/locations/europe-west4/customJobs")
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in stub.requests)

    # The job spec as Vertex received it.
    [job] = stub.submitted
    [pool] = job.job_spec.worker_pool_specs
    assert (pool.machine_spec.machine_type, pool.machine_spec.accelerator_type.name,
            pool.machine_spec.accelerator_count, pool.replica_count) == ("g2-standard-8", "NVIDIA_L4", 2, 1)
    assert pool.container_spec.image_uri == "europe-docker.pkg.dev/edge-proj/edgeloop/train:1"
    assert list(pool.container_spec.command) == ["edgeloop"]
    args = list(pool.container_spec.args)
    opt = {args[i]: args[i + 1] for i in range(1, len(args) - 1) if args[i].startswith("--") and args[i] != "--json"}
    assert args[0] == "train" and opt["--dataset"] == "1" == str(result.dataset_version)
    base_output = job.job_spec.base_output_directory.output_uri_prefix
    assert base_output.startswith((ws.settings.vertex_staging_bucket or "") + "/edgeloop/edgeloop-train-v1-")
    assert opt["--output-dir"] == base_output + "/model"
    assert job.display_name == base_output.rsplit("/", 1)[1] and job.labels["dataset-version"] == "1"
    # The start weights: the parent's own blob, in the bucket.
    with fsspec.open(opt["--parent-weights"], "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == parent.weights_sha256
    # The export the job reads: dataset v1, every image of it in the bucket's blob store.
    assert opt["--export"].startswith(ws.objects.url + "/")
    with fsspec.open(opt["--export"], "rb") as f:
        export = json.load(f)
    with ws.catalog.connect() as con:
        items = con.execute("SELECT image_sha256, split FROM dataset_items WHERE version = 1").fetchall()
    assert export["version"] == 1 and export["names"] == list(CLASSES)
    assert sorted((sha, split) for sha, split, _, _ in export["items"]) == sorted(items)
    assert all(ws.blobs.exists(sha) for sha, *_ in export["items"])
    params = json.loads(opt["--params"])
    assert params == result.params and params["epochs"] == 7 and params["seed"] == 5
    assert params["device"] == 0  # an accelerator: the gpu profile by default

    # Its states as the backend saw them, one sleep of vertex_poll_s between two reads; epochs from the job.
    assert [s for *_, s in seen] == [PENDING, RUNNING, RUNNING, SUCCEEDED]
    assert seen[-1][:2] == (7, 7)
    assert polls.waits == [45.0] * 3

    # The job's weights, registered with their lineage.
    sha = hashlib.sha256(job_weights.read_bytes()).hexdigest()
    assert result.weights_sha256 == sha and ws.blobs.get(sha) == job_weights.read_bytes()
    assert result.job == job.name and result.parent_id == parent.id
    with ws.catalog.connect() as con:
        model = get_model(con, result.model_id)
        run = con.execute("SELECT parent_id, dataset_version, profile, params, duration_s, weights_sha256 "
                          "FROM training_runs WHERE model_id = ?", [result.model_id]).fetchone()
    assert (model.origin, model.parent_id, model.dataset_version) == ("vertex", parent.id, 1)
    assert model.status == "candidate"
    assert model.classes == list(CLASSES) and job.name in (model.note or "") and "NVIDIA_L4" in (model.note or "")
    assert run[:3] == (parent.id, 1, "gpu") and json.loads(run[3]) == params and run[5] == sha
    # Its duration is the job's, from start to end as Vertex reported them (the stub's clock: a minute a read):
    # running from the second read to the fourth.
    assert run[4] == result.duration_s == (2 * STEP).total_seconds()


@pytest.mark.parametrize("end", [FAILED, CANCELLED])
def test_a_job_that_ends_badly_names_itself_and_registers_nothing(ws: Workspace, job_weights: Path,
                                                                  end: str) -> None:
    before, polls = counts(ws), Polls()
    # The job even left weights before it ended: they are not taken.
    with (
        VertexStub([PENDING, RUNNING, end], writes_weights(job_weights), error="CUDA out of memory") as stub,
        pytest.raises(VertexJobError) as raised,
    ):
        backend(ws, stub, polls).train(ws, parent=None)
    [job] = stub.submitted
    message = str(raised.value)
    assert job.name in message and end in message and "nothing was registered" in message
    assert ("CUDA out of memory" in message) == (end == FAILED)
    assert counts(ws) == before
    assert not ws.blobs.exists(hashlib.sha256(job_weights.read_bytes()).hexdigest())


def test_a_job_that_succeeds_without_weights_registers_nothing(ws: Workspace) -> None:
    before = counts(ws)
    with (
        VertexStub([PENDING, SUCCEEDED], worker=None) as stub,
        pytest.raises(VertexJobError, match="left no weights at .*/model/weights.pt"),
    ):
        backend(ws, stub, Polls()).train(ws, parent=None)
    assert counts(ws) == before


def test_weights_in_other_classes_are_refused(ws: Workspace, tmp_path: Path) -> None:
    from ultralytics import YOLO

    coco = tmp_path / "coco80.pt"
    YOLO("yolov8n.yaml").save(str(coco))  # 80 classes, not the catalog's
    before = counts(ws)
    with (
        VertexStub([RUNNING, SUCCEEDED], writes_weights(coco)) as stub,
        pytest.raises(VertexJobError, match="not the catalog's"),
    ):
        backend(ws, stub, Polls()).train(ws, parent=None)
    assert counts(ws) == before and not ws.blobs.exists(hashlib.sha256(coco.read_bytes()).hexdigest())


def test_reads_the_api_refuses_for_a_while_are_retried(ws: Workspace, job_weights: Path) -> None:
    seen: list[str] = []
    with VertexStub([RUNNING, SUCCEEDED], writes_weights(job_weights), failing_reads=2) as stub:
        result = backend(ws, stub, Polls()).train(ws, parent=None, progress=lambda *p: seen.append(p[2]))
    assert seen == ["unreadable", "unreadable", RUNNING, SUCCEEDED]
    with ws.catalog.connect() as con:
        assert get_model(con, result.model_id).origin == "vertex"
    with (
        VertexStub([RUNNING, SUCCEEDED], writes_weights(job_weights), failing_reads=50) as stub,
        pytest.raises(VertexJobError, match="lost track of Vertex AI job .*customJobs/1000"),
    ):
        backend(ws, stub, Polls()).train(ws, parent=None)


def test_what_is_missing_is_named(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="EDGELOOP_VERTEX_IMAGE"):
        VertexBackend.from_settings(settings(tmp_path, vertex_image=None))
    with pytest.raises(TrainingError, match="'NVIDIA_T4'"):
        VertexBackend.from_settings(settings(tmp_path, vertex_accelerator_type="NVIDIA_T4"))
    with pytest.raises(TrainingError, match="'tpu'"):
        get_backend("tpu", Workspace(settings(tmp_path)))
    # Blobs on this machine: a job in the cloud could not read the data set.
    local = Workspace(settings(tmp_path, storage_url=None))
    with pytest.raises(TrainingError, match="EDGELOOP_STORAGE_URL"):
        get_backend("vertex", local).train(local)


@pytest.fixture
def built_dataset(ws: Workspace) -> Iterator[Workspace]:
    build_dataset(ws.catalog)
    yield ws


def test_the_container_trains_for_real_on_the_export(built_dataset: Workspace, tmp_path: Path) -> None:
    """The stub runs the container's command and args here: `edgeloop train` in its job form reads the export
    from the bucket, trains, and leaves weights the backend registers."""
    ws = built_dataset
    seen: list[tuple[int, int | None, str]] = []
    log = tmp_path / "container.log"
    with VertexStub([PENDING, RUNNING, SUCCEEDED], runs_container(log)) as stub:
        ws.settings.vertex_accelerator_type = None  # a CPU machine: the cpu profile
        result = backend(ws, stub, Polls()).train(
            ws, parent=None, overrides={"epochs": 1, "imgsz": 64, "batch": 4, "workers": 0},
            progress=lambda *p: seen.append(p))
    assert seen[-1] == (1, 1, SUCCEEDED), log.read_text()[-2000:]
    [job] = stub.submitted
    [pool] = job.job_spec.worker_pool_specs
    assert not pool.machine_spec.accelerator_type and "--base" in pool.container_spec.args
    with ws.catalog.connect() as con:
        [model] = list_models(con)
        run = con.execute("SELECT profile, params FROM training_runs WHERE model_id = ?", [model.id]).fetchone()
    assert (model.id, model.origin, model.parent_id, model.dataset_version) == (result.model_id, "vertex", None, 1)
    assert run[0] == "cpu" and json.loads(run[1])["base"] == "yolov8n.yaml"
    # What was registered is what the container wrote, byte for byte.
    with fsspec.open(job.job_spec.base_output_directory.output_uri_prefix + "/model/weights.pt", "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == model.weights_sha256
