"""A local HTTP server speaking the Vertex AI REST API for custom jobs (create, get, cancel), as the SDK's
REST transport calls it; requests and answers are parsed and written with the SDK's own proto types.

A job walks through a script of states, one step per read of it. When it starts running, a worker does its
work: writes canned weights where the container would, or runs the container's command and args for real.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import fsspec
from google.cloud.aiplatform_v1.types import CustomJob, JobState

from tests.feedback.loopback_json import LoopbackServer, send_json

PENDING, RUNNING, SUCCEEDED = "JOB_STATE_PENDING", "JOB_STATE_RUNNING", "JOB_STATE_SUCCEEDED"
FAILED, CANCELLED = "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=1)  # the stub's own clock: each read of a job is one minute later

REPO = Path(__file__).resolve().parents[3]

# A worker gets the job as submitted and returns None when its work went well, else what went wrong.
Worker = Callable[[CustomJob], str | None]

_JOBS = re.compile(r"^/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/customJobs"
                   r"(?:/(?P<id>[^/:?]+))?(?P<cancel>:cancel)?(?:\?.*)?$")


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: dict[str, Any] | None


@dataclass
class Job:
    spec: CustomJob  # what the client sent, parsed
    script: list[str]
    worker: Worker | None
    error: str
    reads: int = 0
    state: str = PENDING
    started_at: datetime | None = None
    ended_at: datetime | None = None
    worker_done: threading.Event = field(default_factory=threading.Event)
    worker_error: str | None = None


class VertexStub(LoopbackServer):
    """`with VertexStub(states, worker) as stub:` then point the SDK at `stub.url`."""

    def __init__(self, states: Sequence[str] = (PENDING, RUNNING, SUCCEEDED), worker: Worker | None = None,
                 *, error: str = "The replica workerpool0-0 exited with a non-zero status of 1.",
                 failing_reads: int = 0) -> None:
        self.states, self.worker, self.error = list(states), worker, error
        # The first this many reads answer 502, as a proxy in front of a busy API does. (The SDK itself
        # retries 429, 500 and 503 for two minutes, on the wall clock.)
        self.failing_reads = failing_reads
        self.requests: list[Request] = []
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                stub._handle(self, "POST")

            def do_GET(self) -> None:
                stub._handle(self, "GET")

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(Handler)

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        for job in self.jobs.values():
            if job.started_at is not None:  # a container still training would write into a removed folder
                job.worker_done.wait(timeout=300)

    @property
    def submitted(self) -> list[CustomJob]:
        return [job.spec for job in self.jobs.values()]

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        raw = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        body = json.loads(raw) if raw else None
        self.requests.append(Request(method, h.path, {k.lower(): v for k, v in h.headers.items()}, body))
        match = _JOBS.match(h.path)
        if not match:
            return send_json(h, 404, {"error": {"code": 404, "message": f"no route {h.path}", "status": "NOT_FOUND"}})
        parent = f"projects/{match['project']}/locations/{match['location']}"
        if method == "POST" and match["id"] is None:
            return send_json(h, 200, self._create(parent, raw))
        job = self.jobs.get(f"{parent}/customJobs/{match['id']}")
        if job is None:
            missing = {"error": {"code": 404, "message": f"no job {match['id']}", "status": "NOT_FOUND"}}
            return send_json(h, 404, missing)
        if method == "POST" and match["cancel"]:
            with self._lock:
                job.script = [CANCELLED]
                job.reads = 0
            return send_json(h, 200, {})
        if method == "GET":
            with self._lock:
                failing = self.failing_reads > 0
                self.failing_reads -= failing
            if failing:
                return send_json(h, 502, {"error": {"code": 502, "message": "Bad Gateway", "status": "UNAVAILABLE"}})
            return send_json(h, 200, self._read(job))
        return send_json(h, 405, {"error": {"code": 405, "message": method, "status": "UNIMPLEMENTED"}})

    def _create(self, parent: str, raw: bytes) -> dict[str, Any]:
        spec = CustomJob.from_json(raw)  # the real message type: unknown fields are an error
        with self._lock:
            name = f"{parent}/customJobs/{1000 + len(self.jobs)}"
            spec.name = name
            self.jobs[name] = Job(spec, list(self.states), self.worker, self.error)
        return self._resource(self.jobs[name], created=True)

    def _read(self, job: Job) -> dict[str, Any]:
        with self._lock:
            step = job.script[min(job.reads, len(job.script) - 1)]
            now = EPOCH + STEP * (job.reads + 1)
            if step == RUNNING and job.started_at is None:
                job.started_at = now
                self._start_worker(job)
            if step == SUCCEEDED:
                if job.started_at is None:  # a script straight to the end still runs its worker first
                    job.started_at = now
                    self._start_worker(job)
                # A job is done when its container is: until then, it is still running.
                if not job.worker_done.wait(timeout=2):
                    job.state = RUNNING
                    return self._resource(job)
                step = FAILED if job.worker_error else SUCCEEDED
            job.reads += 1
            job.state = step
            if step in (SUCCEEDED, FAILED, CANCELLED) and job.ended_at is None:
                job.ended_at = now
            return self._resource(job)

    def _start_worker(self, job: Job) -> None:
        def work() -> None:
            try:
                job.worker_error = job.worker(job.spec) if job.worker else None
            except Exception as exc:  # noqa: BLE001 - the job fails, as a crashing container does
                job.worker_error = repr(exc)
            finally:
                job.worker_done.set()

        threading.Thread(target=work, daemon=True).start()

    def _resource(self, job: Job, created: bool = False) -> dict[str, Any]:
        out = CustomJob(job.spec)
        out.state = JobState[job.state]
        out.create_time = EPOCH
        if job.started_at:
            out.start_time = job.started_at
        if job.ended_at:
            out.end_time = job.ended_at
        if job.state == FAILED:
            out.error = {"code": 3, "message": job.worker_error or job.error}
        if job.state == CANCELLED:
            out.error = {"code": 1, "message": "CANCELED"}
        return json.loads(CustomJob.to_json(out, use_integers_for_enums=False))


def model_dir(spec: CustomJob) -> str:
    """What Vertex tells a job's container in AIP_MODEL_DIR: the base output folder's model/."""
    return spec.job_spec.base_output_directory.output_uri_prefix.rstrip("/") + "/model"


def writes_weights(weights: Path, epochs: int = 3) -> Worker:
    """A container that trains instantly: `weights` land in AIP_MODEL_DIR as weights.pt, after its epoch count."""

    def work(spec: CustomJob) -> None:
        fs, out = fsspec.core.url_to_fs(model_dir(spec))
        fs.makedirs(out, exist_ok=True)
        fs.pipe_file(f"{out}/progress.json", json.dumps({"epoch": epochs, "epochs": epochs}).encode())
        fs.put_file(str(weights), f"{out}/weights.pt")

    return work


def runs_container(log: Path) -> Worker:
    """The container's command and args run here, for real, with the environment Vertex gives it."""

    def work(spec: CustomJob) -> str | None:
        [pool] = spec.job_spec.worker_pool_specs
        if list(pool.container_spec.command) != ["edgeloop"]:
            return f"the image runs `edgeloop`, not {list(pool.container_spec.command)}"
        # `edgeloop` of the code under test, with this interpreter.
        command = [sys.executable, "-c", "from flows.cli import main; main()", *pool.container_spec.args]
        env = {**os.environ, "AIP_MODEL_DIR": model_dir(spec), "YOLO_OFFLINE": "1", "PYTHONPATH": str(REPO)}
        with log.open("w") as out:
            done = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=600,
                                  check=False)
        return None if done.returncode == 0 else f"exit {done.returncode}: {log.read_text()[-2000:]}"

    return work
