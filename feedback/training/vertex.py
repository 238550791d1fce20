"""The Vertex AI training backend: the dataset version exported to the bucket, a CustomJob whose container runs
`edgeloop train` on it, waited for, and its weights registered with their lineage (origin "vertex").

The only module that imports google-cloud-aiplatform (the `vertex` extra). A job that fails registers nothing.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import fsspec
from google.api_core.exceptions import GoogleAPICallError, RetryError, ServerError, TooManyRequests
from google.auth.exceptions import GoogleAuthError

from edge.protocol import utc_now
from feedback.training.backends import Progress, TrainingBackend
from feedback.training.gate_run import _checkpoint
from feedback.training.remote import PROGRESS, WEIGHTS, export_dataset, join
from feedback.training.recipe import Recipe
from feedback.training.train import RunPlan, TrainingError, TrainRequest, TrainResult, plan_run, record_run
from store.settings import Settings, Workspace

SUCCEEDED = "JOB_STATE_SUCCEEDED"
# Vertex's end states; every one but SUCCEEDED means there are no weights to take.
TERMINAL = {SUCCEEDED, "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED",
            "JOB_STATE_PARTIALLY_SUCCEEDED"}
MAX_READ_FAILURES = 5  # consecutive failed reads of a job's state before giving up on it


class VertexJobError(TrainingError):
    """A job that ended without weights to register; the message names the job and its state."""


@dataclass(frozen=True)
class VertexConfig:
    project: str
    region: str
    staging_bucket: str
    machine_type: str
    accelerator_type: str | None
    accelerator_count: int
    image: str
    api_endpoint: str | None = None
    token: str | None = None
    poll_s: float = 30.0


class VertexBackend(TrainingBackend):
    """Submits one CustomJob per run through the SDK's REST transport and polls its state.

    `sleep` is how the wait between two polls passes: tests hand in one that does not wait.
    """

    name = "vertex"

    def __init__(self, config: VertexConfig, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self.sleep = sleep

    @classmethod
    def from_settings(cls, s: Settings, **kwargs: Any) -> VertexBackend:
        missing = [name for name in ("vertex_project", "vertex_staging_bucket", "vertex_image")
                   if not getattr(s, name)]
        if missing:
            raise TrainingError("training on Vertex AI needs " + ", ".join(f"EDGELOOP_{m.upper()}" for m in missing)
                                + " (or the same keys in edgeloop.toml)")
        if s.vertex_accelerator_type:
            from google.cloud.aiplatform_v1.types import AcceleratorType

            if s.vertex_accelerator_type not in AcceleratorType.__members__:
                raise TrainingError(f"vertex_accelerator_type {s.vertex_accelerator_type!r} is not a Vertex AI "
                                    f"accelerator (e.g. NVIDIA_TESLA_T4, NVIDIA_L4, NVIDIA_A100_80GB)")
        config = VertexConfig(
            project=s.vertex_project, region=s.vertex_region,  # type: ignore[arg-type]
            staging_bucket=s.vertex_staging_bucket, image=s.vertex_image,  # type: ignore[arg-type]
            machine_type=s.vertex_machine_type, accelerator_type=s.vertex_accelerator_type,
            accelerator_count=s.vertex_accelerator_count, api_endpoint=s.vertex_api_endpoint, token=s.vertex_token,
            poll_s=s.vertex_poll_s)
        return cls(config, **kwargs)

    def run(self, ws: Workspace, request: TrainRequest, progress: Progress | None = None) -> TrainResult:
        """Train on Vertex AI; `profile` defaults to gpu when the job has an accelerator.

        Of the rare-aware recipe, the levers that are ultralytics arguments (training size, class weights) travel
        with the job; resampling, the calibration split and thresholds are made where the catalog is, so a remote
        run does without them (its model deploys at one global threshold) until the export carries them."""
        if ws.settings.storage_url is None:
            raise TrainingError("a Vertex AI job reads the data set from the blob store, and this workspace keeps "
                                "its blobs on this machine: set EDGELOOP_STORAGE_URL to a gs:// bucket")
        c = self.config
        remote = replace(request.recipe or Recipe(), repeat_threshold=None, calibration_share=0.0,
                         rare_checkpoint=False)
        plan = plan_run(ws, replace(request, profile=request.profile or ("gpu" if c.accelerator_type else "cpu"),
                                    recipe=remote))
        name = f"edgeloop-train-v{plan.dataset_version}-{utc_now():%Y%m%d-%H%M%S}"
        base_output_dir = join(c.staging_bucket, "edgeloop", name)
        output_dir = join(base_output_dir, "model")  # where Vertex points AIP_MODEL_DIR too
        args = self.container_args(plan, export_dataset(ws, plan.dataset_version), output_dir, ws)
        job = self._submit(name, args, base_output_dir, plan.dataset_version)
        state = self._wait(job, output_dir, progress)
        resource = job.gca_resource
        if state != SUCCEEDED:
            why = f": {resource.error.message}" if resource.error.message else ""
            raise VertexJobError(f"Vertex AI job {job.resource_name} ({name}) ended {state}{why}; "
                                 "nothing was registered")
        sha = self._take_weights(ws, plan, join(output_dir, WEIGHTS), job.resource_name)
        started = resource.start_time or resource.create_time
        duration = (resource.end_time - started).total_seconds() if resource.end_time and started else 0.0
        accelerator = f", {c.accelerator_count}x {c.accelerator_type}" if c.accelerator_type else ""
        note = f"Vertex AI job {job.resource_name} ({c.machine_type}{accelerator})"
        model_id = record_run(ws, plan, sha, imgsz=int(plan.params["imgsz"]), started=started or utc_now(),
                              duration_s=duration, origin="vertex", note=note)
        return TrainResult(model_id, sha, plan.parent.id if plan.parent else None, plan.dataset_version, duration,
                           plan.params, job=job.resource_name)

    def container_args(self, plan: RunPlan, export_url: str, output_dir: str, ws: Workspace) -> list[str]:
        """`edgeloop train` in its job form: the export, the output folder, the full params (as recorded)."""
        args = ["train", "--dataset", str(plan.dataset_version), "--export", export_url, "--output-dir", output_dir,
                "--params", json.dumps(plan.params, sort_keys=True), "--json"]
        if plan.parent is not None:
            return [*args, "--parent-weights", join(ws.objects.url, ws.blobs.key(plan.parent.weights_sha256))]
        return [*args, "--base", plan.base]

    def worker_pool_specs(self, args: list[str]) -> list[dict[str, Any]]:
        c = self.config
        machine: dict[str, Any] = {"machine_type": c.machine_type}
        if c.accelerator_type:
            machine |= {"accelerator_type": c.accelerator_type, "accelerator_count": c.accelerator_count}
        return [{"machine_spec": machine, "replica_count": 1,
                 "container_spec": {"image_uri": c.image, "command": ["edgeloop"], "args": args}}]

    def _submit(self, name: str, args: list[str], base_output_dir: str, version: int) -> Any:
        from google.cloud import aiplatform
        from google.oauth2.credentials import Credentials

        c = self.config
        # The SDK's loggers print each step on stdout, which is `--json`'s; our progress says the same.
        for logger in [n for n in logging.root.manager.loggerDict if n.startswith("google.cloud.aiplatform")]:
            logging.getLogger(logger).setLevel(logging.WARNING)
        # REST, not gRPC: one transport wherever the endpoint is, and it keeps an http:// endpoint as given.
        aiplatform.init(project=c.project, location=c.region, staging_bucket=c.staging_bucket,
                        api_endpoint=c.api_endpoint, api_transport="rest",
                        credentials=Credentials(token=c.token) if c.token else None)
        job = aiplatform.CustomJob(display_name=name, worker_pool_specs=self.worker_pool_specs(args),
                                   base_output_dir=base_output_dir,
                                   labels={"app": "edgeloop", "dataset-version": str(version)})
        try:
            job.submit()
        except (GoogleAPICallError, GoogleAuthError) as exc:
            raise VertexJobError(f"Vertex AI refused job {name} in {c.project}/{c.region}: {exc}") from exc
        return job

    def _wait(self, job: Any, output_dir: str, progress: Progress | None) -> str:
        """Poll until the job ends. The SDK retries a read on 429, 500 and 503 for two minutes; past that, or
        on another server error, the read is tried again a poll later: the job runs on whether we look or not."""
        failures = 0
        while True:
            try:
                state = job.state.name  # one GET of the job
                failures = 0
            except (ServerError, TooManyRequests, RetryError) as exc:
                failures += 1
                if failures > MAX_READ_FAILURES:
                    raise VertexJobError(f"lost track of Vertex AI job {job.resource_name} (it may still be running): "
                                         f"{failures} reads of its state failed, the last with {exc}") from exc
                state = "unreadable"
            if progress:
                progress(*_epochs(output_dir), state)
            if state in TERMINAL:
                return state
            self.sleep(self.config.poll_s)

    def _take_weights(self, ws: Workspace, plan: RunPlan, url: str, job: str) -> str:
        """The job's weights into the blob store once they prove to be a checkpoint of the catalog's classes."""
        try:
            with fsspec.open(url, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise VertexJobError(f"Vertex AI job {job} succeeded but left no weights at {url}; "
                                 "nothing was registered") from None
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / WEIGHTS
            path.write_bytes(data)
            classes = _checkpoint(path)[0]
        if classes != plan.classes:
            raise VertexJobError(f"Vertex AI job {job} left weights for classes {classes}, not the catalog's "
                                 f"{plan.classes}; nothing was registered")
        return ws.blobs.put(data)


def _epochs(output_dir: str) -> tuple[int, int | None]:
    """The job's own count of epochs, from the file it rewrites after each; (0, None) before the first."""
    try:
        with fsspec.open(join(output_dir, PROGRESS), "rb") as f:
            done = json.load(f)
        return int(done["epoch"]), int(done["epochs"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):  # not there yet, or caught mid-write
        return 0, None
