"""Soak: a simulated fleet uploads for minutes through `edgeloop serve` while the inbox is ingested and a model is
rolled out, promoted and rolled back; checks that nothing is lost or doubled and that memory stays flat.

    python bench/soak.py                                # 20 devices, 10 minutes
    python bench/soak.py --minutes 1 --devices 5        # a quick check

Everything runs on loopback in a temporary workspace. `edgeloop serve` runs in its own process with the production
settings; every `--ingest-every-s` seconds `edgeloop ingest` runs in a process of its own, as a schedule would run
it. Before the soak the real PPE model is registered and published (`edgeloop models register`, `edgeloop
publish`, on a few PPE val images imported as holdout). Each device is a thread of this process with its own
`edge.client.IngestClient`: it uploads real JPEGs (PPE pool images, each made unique by a JPEG comment naming the
device and its sequence number), re-sends some of its earlier captures on purpose, polls `GET /v1/deployment`
with its last ETag as the agent does, downloads and checks the artifacts it is told to run, and sends heartbeats
naming the model it runs. At a quarter of the time `edgeloop rollout start --canary` sends the model to part of the
fleet, at half `edgeloop rollout promote` gives it to all, at three quarters `edgeloop rollout rollback` takes it
back. After the devices stop, one last ingest runs and the catalog is checked against what the devices were told.

Prints one JSON line last: uploads accepted against captures in the catalog (they must be equal), duplicate rows
(must be 0), refusals by reason, RSS of the server, of this load generator and of each ingest process at warm-up
(`--warmup-s`, default a minute or a quarter of the run) and at the end with their growth (the goal: under 10%),
upload and poll latency p50/p99 per minute, the models the devices were told to run in each phase of the rollout,
and the wall time. Exits 1 when an upload was lost or doubled.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/x.py` puts bench/ first on the path, where select.py would shadow the standard
# library's `select` (asyncio needs it): the repository root goes there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])


import argparse
import contextlib
import hashlib
import json
import math
import os
import random
import socket
import subprocess
import tempfile
import threading
import time
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

os.environ.setdefault("YOLO_OFFLINE", "1")

# Everything the soak itself uses is imported here, before it starts: a module first imported mid-soak would
# read as growth of this process's memory.
from edge.client import IngestClient, TransientError, UploadRejected  # noqa: E402
from edge.detectors.metadata import file_sha256  # noqa: E402
from edge.protocol import ArtifactManifest, CaptureMeta, Detection, Heartbeat, SourceRef, utc_now  # noqa: E402
from feedback.rollout.desired import DESIRED_KEY, DesiredState, answer_for  # noqa: E402
from store.objects import ObjectStore  # noqa: E402

PPE = Path("/work/shared/datasets/ppe")
PPE_MODEL = Path("/work/shared/models/ppe_base.pt")
CLASSES = ["helmet", "no_helmet", "no_wear", "wear"]
TRIGGERS = (["uncertainty"] * 5) + (["random"] * 2) + (["flicker"] * 2) + ["rare_class"]
INSTALLED = "installed"  # what a device runs when no deployment names a model for it (as edge.updater says)
MB = 1024 * 1024


# -- the images ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Picture:
    path: Path
    width: int
    height: int


def pool_pictures(folder: Path) -> list[Picture]:
    """Every JPEG of `folder` with its size (read from the header only)."""
    from PIL import Image

    pictures = []
    for path in sorted(folder.glob("*.jpg")):
        with Image.open(path) as image:
            pictures.append(Picture(path, *image.size))
    if not pictures:
        raise SystemExit(f"--images {folder}: no .jpg files there")
    return pictures


def tagged_jpeg(jpeg: bytes, tag: str) -> bytes:
    """The same picture with a comment segment naming `tag` right after SOI: its own sha256, same pixels."""
    comment = tag.encode()
    segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
    return jpeg[:2] + segment + jpeg[2:]


# -- what the devices saw -----------------------------------------------------------------------------------------

class Stats:
    """Counters and latencies shared by the device threads. Latencies go into one float array per minute and
    kind, so that this process's own memory stays flat however long the soak runs."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.transient: Counter[str] = Counter()
        self.latency: dict[tuple[int, str], array] = {}

    def add(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n

    def timed(self, kind: str, started: float) -> None:
        ms = (time.monotonic() - started) * 1000
        minute = int((started - self.t0) // 60)
        with self.lock:
            self.latency.setdefault((minute, kind), array("f")).append(ms)

    def refusal(self, status: int, reason: str) -> None:
        with self.lock:
            self.refused[f"{status} {reason}"] += 1

    def failure(self, message: str) -> None:
        with self.lock:
            self.transient[message[:80]] += 1


@dataclass
class Device:
    """One simulated device: its uploads (own sequence, some re-sent), deployment polls, downloads, heartbeats."""

    name: str
    index: int
    token: str
    url: str
    pictures: list[Picture]
    stats: Stats
    args: argparse.Namespace
    workdir: Path
    running: str = INSTALLED
    etag: str | None = None
    # Per sequence number: 0 not stored yet, 1 answered 201, 2 stored (a retry after a lost answer was told it
    # was there), 3 answered "duplicate" on its first send (a bug).
    stored: bytearray = field(default_factory=bytearray)
    captured_at: array = field(default_factory=lambda: array("d"))
    model_of: list[str] = field(default_factory=list)  # per sequence number: the model that "saw" it
    retry: int | None = None  # a sequence number whose upload failed for a passing reason
    answers: list[tuple[float, str]] = field(default_factory=list)  # (time, model told) at each change
    fetched: set[str] = field(default_factory=set)
    frames: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.args.seed * 100_003 + self.index)
        self.order = list(range(len(self.pictures)))
        random.Random(self.args.seed * 7_919 + self.index).shuffle(self.order)  # each device its own sequence
        self.client = IngestClient(self.url, self.token)

    # -- the loop --

    def run(self, stop: threading.Event, deadline: float) -> None:
        """Do whichever of upload, poll and heartbeat is due next until `deadline` (or `stop`)."""
        a = self.args
        every = {"upload": a.upload_every_s, "poll": a.poll_s, "heartbeat": a.heartbeat_s}
        now = time.monotonic()
        due = {kind: now + self.rng.uniform(0, s) for kind, s in every.items()}
        due["poll"] = now  # a device asks what to run as soon as it starts
        steps = int(sum(math.ceil((deadline - now) / s) + 2 for s in every.values()))  # bounded: never more
        try:
            for _ in range(steps):
                kind = min(due, key=due.__getitem__)
                if due[kind] >= deadline or stop.wait(max(0.0, due[kind] - time.monotonic())):
                    break
                getattr(self, kind)()
                due[kind] = time.monotonic() + every[kind] * self.rng.uniform(0.8, 1.2)  # not in step
        finally:
            self.client.close()

    # -- uploads --

    def upload(self) -> None:
        if self.retry is not None:
            self._send(self.retry, "retry")
        elif (earlier := self._stored_earlier()) is not None:
            self._send(earlier, "resend")
        else:
            self._send(self._new_capture(), "new")

    def _stored_earlier(self) -> int | None:
        """Now and then (`--duplicate-share`), one of this device's captures the server said it stored."""
        if not self.stored or self.rng.random() >= self.args.duplicate_share:
            return None
        seq = self.rng.randrange(len(self.stored))
        return seq if self.stored[seq] in (1, 2) else None

    def _new_capture(self) -> int:
        self.stored.append(0)
        self.captured_at.append(time.time())
        self.model_of.append(self.running)
        return len(self.stored) - 1

    def capture(self, seq: int) -> tuple[bytes, bytes]:
        """The meta JSON and image of capture `seq`: the same bytes every time they are made."""
        picture = self.pictures[self.order[seq % len(self.order)]]
        image = tagged_jpeg(picture.path.read_bytes(), f"edgeloop-soak {self.name} {seq:09d}")
        rng = random.Random(f"{self.name}/{seq}")
        detections = []
        # One or two boxes of every class: the same rates under every model, so that the canary's judgment
        # (detections per frame by class, on a few dozen frames) compares like with like, not the dice.
        for c in (c for c in range(len(CLASSES)) for _ in range(rng.randint(1, 2))):
            w, h = rng.uniform(16, picture.width / 3), rng.uniform(16, picture.height / 3)
            x, y = rng.uniform(0, picture.width - w), rng.uniform(0, picture.height - h)
            detections.append(Detection(xyxy=(x, y, x + w, y + h), confidence=round(rng.uniform(0.25, 0.6), 3),
                                        class_id=c, class_name=CLASSES[c]))
        meta = CaptureMeta(
            device=self.name, camera="cam0", captured_at=datetime.fromtimestamp(self.captured_at[seq], timezone.utc),
            frame_width=picture.width, frame_height=picture.height, model_version=self.model_of[seq],
            detections=detections, triggers=[rng.choice(TRIGGERS)],
            source=SourceRef(uri=f"rtsp://{self.name}/cam0", frame_index=seq), update_state="idle",
        )
        return meta.model_dump_json().encode(), image

    def _send(self, seq: int, purpose: str) -> None:
        meta, image = self.capture(seq)
        self.stats.add(f"sent_{purpose}")
        started = time.monotonic()
        try:
            answer = self.client.upload_capture(meta, image, "image/jpeg")
        except TransientError as exc:
            self.stats.failure(f"upload: {exc}")
            self.retry = seq if purpose != "resend" else self.retry  # the spool keeps it for the next try
            return
        except UploadRejected as exc:
            self.stats.refusal(exc.status, exc.reason)
            self.retry = None if purpose == "retry" else self.retry
            return
        finally:
            self.stats.timed("upload", started)
        self._note_answer(seq, purpose, answer.duplicate)

    def _note_answer(self, seq: int, purpose: str, duplicate: bool) -> None:
        if purpose == "retry":
            self.retry = None
        if not duplicate:
            self.stats.add("accepted_new")
            if self.stored[seq]:  # it was stored before, yet answered as new: it may now be two rows
                self.stats.add("resend_answered_new")
            self.stored[seq] = self.stored[seq] or 1
            return
        self.stats.add("answered_duplicate")
        if purpose == "retry":
            self.stats.add("stored_before_lost_answer")
            self.stored[seq] = self.stored[seq] or 2
        elif purpose == "new":
            self.stats.add("first_send_answered_duplicate")
            self.stored[seq] = 3

    # -- deployments --

    def poll(self) -> None:
        started = time.monotonic()
        try:
            answer, self.etag = self.client.deployment(self.etag)
        except (TransientError, UploadRejected) as exc:
            self.stats.failure(f"deployment: {exc}")
            return
        finally:
            self.stats.timed("poll", started)
        self.stats.add("poll_304" if answer is None else "poll_200")
        if answer is None:
            return
        told = answer.model_version or INSTALLED
        if not self.answers or self.answers[-1][1] != told:
            self.answers.append((time.monotonic(), told))
        if answer.artifact is not None and told not in self.fetched:
            self._fetch(answer.artifact)
        self.running = told if (told == INSTALLED or told in self.fetched) else self.running

    def _fetch(self, manifest: ArtifactManifest) -> None:
        """Download the ONNX and the reference set as the updater does (resumable) and check their sha256."""
        folder = self.workdir / "downloads" / self.name
        folder.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            for sha, size in ((manifest.onnx_sha256, manifest.onnx_bytes),
                              (manifest.reference_sha256, manifest.reference_bytes)):
                part = folder / f"{sha}.part"
                got = self.client.download(sha, part, limit=size)
                ok = got == size and file_sha256(part) == sha
                part.unlink()  # the disk of the soak machine, not a device's: nothing is kept
                if not ok:
                    self.stats.add("download_bad")
                    return
                self.stats.add("download_bytes", size)
        except (TransientError, UploadRejected) as exc:
            self.stats.failure(f"download: {exc}")
            return
        finally:
            self.stats.timed("download", started)
        self.stats.add("downloads")
        self.fetched.add(manifest.model_version)

    # -- heartbeats --

    def heartbeat(self) -> None:
        self.frames += int(15 * self.args.heartbeat_s)
        beat = Heartbeat(device=self.name, sent_at=utc_now(), model_version=self.running,
                         fps=round(self.rng.uniform(14, 16), 2), inference_ms_p50=round(self.rng.uniform(9, 11), 2),
                         inference_ms_p99=round(self.rng.uniform(14, 18), 2), queue_depth=0,
                         uptime_s=time.monotonic() - self.stats.t0, frames=self.frames, errors=0, update_state="idle")
        started = time.monotonic()
        try:
            self.client.heartbeat(beat)
            self.stats.add("heartbeats_ok")
        except (TransientError, UploadRejected) as exc:
            self.stats.failure(f"heartbeat: {exc}")
        finally:
            self.stats.timed("heartbeat", started)


# -- processes ----------------------------------------------------------------------------------------------------

def rss_bytes(pid: int, *, children: bool) -> int:
    """Resident memory of `pid`, with its descendants' (uvicorn workers) if `children`, from psutil or /proc."""
    try:
        import psutil
    except ImportError:
        return proc_status_kb(pid, "VmRSS") * 1024  # without psutil, the process alone
    try:
        proc = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [proc, *(proc.children(recursive=True) if children else [])])
    except psutil.NoSuchProcess:
        return 0


def proc_status_kb(pid: int, key: str) -> int:
    """A memory line of /proc/PID/status (VmRSS, VmHWM) in KiB; 0 once the process has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cli(workspace: Path, *args: str, timeout: float = 600) -> dict:
    """Run `edgeloop ARGS --json` in its own process; its JSON answer (the last line), or RuntimeError."""
    done = subprocess.run([sys.executable, "-m", "flows", *args, "--workspace", str(workspace), "--json"],
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"edgeloop {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-1000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def serve(workspace: Path, workers: int, log: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """`edgeloop serve` on `workspace` with its production settings, on a free loopback port: (URL, process)."""
    from feedback.ingest.serving import wait_for_health

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:  # a file, not a pipe: a pipe nobody reads would stall a long-running server
        proc = subprocess.Popen([sys.executable, "-m", "flows", "serve", "--port", str(port), "--workers",
                                 str(workers), "--workspace", str(workspace)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_health(proc, url, lambda: log.read_text()[-2000:])
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@dataclass
class IngestRun:
    at_s: float
    seconds: float
    peak_rss_mb: float
    report: dict


def ingest_once(workspace: Path, t0: float, logs: Path, timeout: float = 300) -> IngestRun:
    """`edgeloop ingest` in its own process, with its peak RSS: the high-water mark of its memory (VmHWM), read
    every 50 ms while it runs. Not the kernel's ru_maxrss from wait4: a child started from this process inherits
    this process's resident size into that number (the memory it shared until exec), so it would echo the load
    generator's memory, not the ingest's."""
    started = time.monotonic()
    out = logs / f"ingest-{int((started - t0) * 1000):09d}.out"
    with open(out, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "flows", "ingest", "--workspace", str(workspace), "--json"],
                                stdout=f, stderr=subprocess.STDOUT)
    peak_kb = 0
    while proc.poll() is None:  # Popen returns after the exec: what is read here is the ingest's own memory
        if time.monotonic() - started > timeout:
            proc.kill()
            proc.wait(timeout=30)
            break
        peak_kb = max(peak_kb, proc_status_kb(proc.pid, "VmHWM"))
        time.sleep(0.05)
    lines = out.read_text().strip().splitlines()
    report = json.loads(lines[-1]) if proc.returncode == 0 and lines else {"failed": proc.returncode,
                                                                           "output": lines[-5:]}
    return IngestRun(round(started - t0, 1), round(time.monotonic() - started, 2), round(peak_kb / 1024, 1), report)


class IngestSchedule(threading.Thread):
    """`edgeloop ingest` every `every_s` seconds (one at a time) until stopped."""

    def __init__(self, workspace: Path, every_s: float, t0: float, logs: Path, limit: int) -> None:
        super().__init__(daemon=True)
        self.workspace, self.every_s, self.t0, self.logs, self.limit = workspace, every_s, t0, logs, limit
        self.stop = threading.Event()
        self.runs: list[IngestRun] = []

    def run(self) -> None:
        for _ in range(self.limit):
            if self.stop.wait(self.every_s):
                return
            self.runs.append(ingest_once(self.workspace, self.t0, self.logs))


class RssSampler(threading.Thread):
    """The server's and this process's RSS every `every_s` seconds: (seconds since start, server, this)."""

    def __init__(self, server_pid: int, t0: float, every_s: float, limit: int) -> None:
        super().__init__(daemon=True)
        self.server_pid, self.t0, self.every_s, self.limit = server_pid, t0, every_s, limit
        self.stop = threading.Event()
        self.samples: list[tuple[float, int, int]] = []

    def sample(self) -> None:
        # This process alone: the CLI commands it starts (ingest, rollout) are its children too.
        self.samples.append((time.monotonic() - self.t0, rss_bytes(self.server_pid, children=True),
                             rss_bytes(os.getpid(), children=False)))

    def run(self) -> None:
        for _ in range(self.limit):
            self.sample()
            if self.stop.wait(self.every_s):
                return


# -- setup --------------------------------------------------------------------------------------------------------

def prepare(root: Path, holdout: int) -> dict:
    """A workspace with `holdout` PPE val images imported as holdout and the PPE model registered and published,
    all through the CLI, as an operator would; returns what `edgeloop publish` printed."""
    folder = root / "holdout"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    val = PPE / "val"
    for image in sorted((val / "images").glob("*.jpg"))[:holdout]:
        (folder / "images" / image.name).symlink_to(image)
        (folder / "labels" / f"{image.stem}.txt").symlink_to(val / "labels" / f"{image.stem}.txt")
    workspace = root / "ws"
    cli(workspace, "import", str(folder), "--split", "holdout", "--names", ",".join(CLASSES))
    model = cli(workspace, "models", "register", str(PPE_MODEL))["id"]
    return cli(workspace, "publish", model)


def register_devices(workspace: Path, n: int) -> dict[str, str]:
    from store.devices import add_device
    from store.settings import Settings, Workspace

    ws = Workspace(Settings(workspace=workspace))
    return {f"soak-{i:03d}": add_device(ws.catalog, ws.objects, f"soak-{i:03d}") for i in range(n)}


# -- the rollout ----------------------------------------------------------------------------------------------------

@dataclass
class Phase:
    name: str
    at: float  # monotonic time the command that began it was launched
    expected: dict[str, str]  # device -> the model the published desired state names for it
    detail: dict = field(default_factory=dict)


def expected_models(workspace: Path, devices: list[str]) -> dict[str, str]:
    """What the published desired state tells each device to run (the API's own function on its own file)."""
    try:
        state = DesiredState.model_validate_json(ObjectStore(workspace).get(DESIRED_KEY))
    except KeyError:
        state = DesiredState()
    return {d: answer_for(state, d).model_version or INSTALLED for d in devices}


def rollout_step(name: str, workspace: Path, model: str, canary_pct: float, devices: list[str]) -> Phase:
    """Begin phase `name` with the CLI command an operator would type; promote is forced only when the canary's
    judgment refuses it, and the judgment is kept in the phase's detail."""
    at = time.monotonic()
    try:
        if name == "canary":
            detail = cli(workspace, "rollout", "start", model, "--canary", f"{canary_pct:g}")
        elif name == "promoted":
            try:
                detail = cli(workspace, "rollout", "promote")
            except RuntimeError as exc:
                detail = {**cli(workspace, "rollout", "promote", "--force"), "refused_first": str(exc)[-500:]}
        else:
            detail = cli(workspace, "rollout", "rollback")
    except RuntimeError as exc:  # the product failed: the soak goes on, and the report says so
        detail = {"error": str(exc)[-1000:]}
    keep = ("id", "state", "canary_pct", "healthy", "reasons", "forced", "refused_first", "error")
    return Phase(name, at, expected_models(workspace, devices), {k: detail[k] for k in keep if k in detail})


def phase_report(phases: list[Phase], fleet: list[Device], end: float) -> dict:
    """Per phase: how many devices were last told to run each model before the next phase began, against what
    the desired state named, and how long the slowest device took to be told."""
    out = {}
    for i, phase in enumerate(phases):
        until = phases[i + 1].at if i + 1 < len(phases) else end
        told: dict[str, str] = {}
        slowest = 0.0
        for d in fleet:
            seen = [(t, m) for t, m in d.answers if t < until]
            told[d.name] = seen[-1][1] if seen else "no answer"
            reached = [t for t, m in seen if t >= phase.at and m == phase.expected[d.name]]
            if i > 0 and phase.expected[d.name] != told_before(d, phase.at):
                slowest = max(slowest, (reached[0] - phase.at) if reached else float("inf"))
        out[phase.name] = {
            "at_s": round(phase.at - phases[0].at, 1),
            "devices_told": dict(Counter(told.values())),
            "expected": dict(Counter(phase.expected.values())),
            "mismatched": sum(told[d] != phase.expected[d] for d in told),
            "slowest_device_told_s": round(slowest, 1) if math.isfinite(slowest) else None,
            **phase.detail,
        }
    return out


def told_before(device: Device, at: float) -> str:
    seen = [m for t, m in device.answers if t < at]
    return seen[-1] if seen else INSTALLED


# -- the checks -----------------------------------------------------------------------------------------------------

def catalog_check(workspace: Path, fleet: list[Device]) -> dict:
    """After the last ingest: the catalog's captures against those the devices were told were stored, rows per
    sha256 and per id, and what is left in the inbox."""
    from store.inbox import CAPTURES, HEARTBEATS
    from store.settings import Settings, Workspace

    expected = {}
    for d in fleet:
        for seq, state in enumerate(d.stored):
            if state in (1, 2):
                expected[hashlib.sha256(d.capture(seq)[1]).hexdigest()] = d.name
    ws = Workspace(Settings(workspace=workspace))
    with ws.catalog.connect() as con:
        rows = con.execute("SELECT id, sha256, device FROM captures").fetchall()
        heartbeats = con.execute("SELECT count(*) FROM heartbeats").fetchone()[0]
    shas = Counter(sha for _, sha, _ in rows)
    ids = Counter(i for i, _, _ in rows)
    in_catalog = set(shas)
    return {
        "captures": len(rows),
        "expected": len(expected),
        "equal": len(rows) == len(expected) and in_catalog == set(expected),
        "missing": len(set(expected) - in_catalog),
        "unexpected": len(in_catalog - set(expected)),
        "wrong_device": sum(1 for _, sha, dev in rows if sha in expected and expected[sha] != dev),
        "duplicate_sha256_rows": sum(n - 1 for n in shas.values() if n > 1),
        "duplicate_id_rows": sum(n - 1 for n in ids.values() if n > 1),
        "heartbeats": heartbeats,
        "inbox_pending_after_final_ingest": len(ws.objects.list(CAPTURES)) + len(ws.objects.list(HEARTBEATS)),
        "inbox_rejected": len(ws.objects.list("inbox/rejected")),
    }


def growth(samples: list[tuple[float, float]], warmup_s: float) -> dict:
    """RSS (MB) at the first sample after warm-up and at the last, and the growth between them in %."""
    after = [(t, v) for t, v in samples if t >= warmup_s] or samples[-1:]
    warm, end = after[0], samples[-1]
    return {"warm_mb": round(warm[1], 1), "warm_at_s": round(warm[0], 1), "end_mb": round(end[1], 1),
            "end_at_s": round(end[0], 1), "max_mb": round(max(v for _, v in samples), 1),
            "growth_pct": round(100 * (end[1] - warm[1]) / warm[1], 1) if warm[1] else None}


def rss_series(samples: list[tuple[float, int, int]], points: int = 60) -> list[list[float]]:
    """[seconds, server MB, load generator MB] at about `points` evenly spaced samples: the shape of any drift."""
    step = max(1, math.ceil(len(samples) / points))
    chosen = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    return [[round(t), round(s / MB, 1), round(g / MB, 1)] for t, s, g in chosen]


def latency_table(stats: Stats) -> list[dict]:
    """Per minute of the soak: requests and latency p50/p99 (ms) of uploads, polls and heartbeats."""
    minutes = sorted({m for m, _ in stats.latency})
    table = []
    for m in minutes:
        row: dict = {"minute": m + 1}
        for kind in ("upload", "poll", "heartbeat"):
            values = np.frombuffer(stats.latency.get((m, kind), array("f")), dtype=np.float32)
            row[f"{kind}s"] = len(values)
            if len(values):
                row[f"{kind}_p50_ms"] = round(float(np.percentile(values, 50)), 1)
                row[f"{kind}_p99_ms"] = round(float(np.percentile(values, 99)), 1)
        table.append(row)
    return table


def download_times(stats: Stats) -> list[float] | None:
    """Median and longest time (ms) a device took to fetch and check one model's artifact."""
    values = [v for (_, kind), a in stats.latency.items() if kind == "download" for v in a]
    return [round(float(np.median(values))), round(max(values))] if values else None


def log_problems(log: Path) -> dict:
    text = log.read_text(errors="replace")
    lines = [ln for ln in text.splitlines() if "Traceback" in ln or "ERROR" in ln or "WARNING" in ln]
    return {"error_lines": len(lines), "first": lines[:3]}


# -- the run ----------------------------------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the devices upload")
    parser.add_argument("--devices", type=int, default=20, help="simulated devices")
    parser.add_argument("--upload-every-s", type=float, default=1.0, help="each device's mean time between uploads")
    parser.add_argument("--duplicate-share", type=float, default=0.1,
                        help="share of uploads that re-send one of the device's earlier captures on purpose")
    parser.add_argument("--poll-s", type=float, default=5.0, help="each device's deployment poll interval (+-20%%)")
    parser.add_argument("--heartbeat-s", type=float, default=10.0, help="each device's heartbeat interval (+-20%%)")
    parser.add_argument("--ingest-every-s", type=float, default=30.0, help="seconds between `edgeloop ingest` runs")
    parser.add_argument("--canary-pct", type=float, default=50.0, help="share of the fleet in the canary")
    parser.add_argument("--rollout", action=argparse.BooleanOptionalAction, default=True,
                        help="start, promote and roll back a rollout during the soak (--no-rollout: uploads only)")
    parser.add_argument("--warmup-s", type=float, default=None,
                        help="memory is compared from this point on (default: 60 s, or a quarter of a shorter run)")
    parser.add_argument("--workers", type=int, default=1, help="`edgeloop serve --workers`")
    parser.add_argument("--holdout", type=int, default=8, help="PPE val images imported as holdout for publishing")
    parser.add_argument("--images", type=Path, default=PPE / "pool" / "images", help="folder of JPEGs to upload")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None,
                        help="a new folder to run in and keep afterwards (workspace, server and ingest logs), to look "
                        "into what the soak found; default: a temporary folder, removed")
    args = parser.parse_args()
    if args.minutes <= 0 or args.devices < 1:
        parser.error("--minutes and --devices must be positive")
    if args.warmup_s is None:
        args.warmup_s = min(60.0, args.minutes * 60 / 4)
    return args


def soak(args: argparse.Namespace, root: Path) -> tuple[dict, bool]:
    wall0 = time.monotonic()
    published = prepare(root, args.holdout)
    model = published["model"]
    workspace, logs = root / "ws", root / "logs"
    logs.mkdir()
    tokens = register_devices(workspace, args.devices)
    pictures = pool_pictures(args.images)
    duration = args.minutes * 60
    with serve(workspace, args.workers, logs / "serve.log") as (url, server):
        t0 = time.monotonic()
        stats = Stats(t0)
        fleet = [Device(name, i, token, url, pictures, stats, args, root) for i, (name, token) in
                 enumerate(tokens.items())]
        stop = threading.Event()
        threads = [threading.Thread(target=d.run, args=(stop, t0 + duration), daemon=True) for d in fleet]
        sampler = RssSampler(server.pid, t0, every_s=2.0, limit=int(duration / 2) + 10)
        ingest = IngestSchedule(workspace, args.ingest_every_s, t0, logs, limit=int(duration / args.ingest_every_s) + 2)
        for thread in [*threads, sampler, ingest]:
            thread.start()
        phases = [Phase("before", t0, dict.fromkeys(tokens, INSTALLED))]
        steps = (("canary", 0.25), ("promoted", 0.5), ("rolled_back", 0.75)) if args.rollout else ()
        for name, share in steps:
            if stop.wait(max(0.0, t0 + share * duration - time.monotonic())):
                break
            phases.append(rollout_step(name, workspace, model, args.canary_pct, list(tokens)))
        for thread in threads:
            thread.join(timeout=max(1.0, t0 + duration + 60 - time.monotonic()))
        stuck = sum(t.is_alive() for t in threads)
        stop.set()
        end = time.monotonic()
        sampler.stop.set()
        sampler.join(timeout=10)
        sampler.sample()  # the end: every device has stopped
        ingest.stop.set()
        ingest.join(timeout=330)
        final = ingest_once(workspace, t0, logs)
        server_alive = server.poll() is None
    catalog = catalog_check(workspace, fleet)
    result = summarise(args, stats, catalog, sampler, ingest.runs + [final], phases, fleet, end, t0)
    result.update(server_alive_at_end=server_alive, devices_stuck=stuck, server_log=log_problems(logs / "serve.log"),
                  published={k: published[k] for k in ("model", "onnx_bytes", "input_size")},
                  wall_s=round(time.monotonic() - wall0, 1), soak_s=round(end - t0, 1))
    intact = catalog["equal"] and catalog["duplicate_sha256_rows"] == 0 and catalog["duplicate_id_rows"] == 0
    return result, intact


def summarise(args, stats: Stats, catalog: dict, sampler: RssSampler, ingests: list[IngestRun], phases: list[Phase],
              fleet: list[Device], end: float, t0: float) -> dict:
    c = stats.counts
    server = growth([(t, s / MB) for t, s, _ in sampler.samples], args.warmup_s)
    client = growth([(t, g / MB) for t, _, g in sampler.samples], args.warmup_s)
    ingest = growth([(r.at_s, r.peak_rss_mb) for r in ingests], args.warmup_s)
    sent = c["sent_new"] + c["sent_resend"] + c["sent_retry"]
    return {
        "devices": args.devices,
        "minutes": args.minutes,
        "uploads": {
            "sent": sent, "per_s": round(sent / (end - t0), 1),
            "accepted_new_201": c["accepted_new"], "answered_duplicate_200": c["answered_duplicate"],
            "resent_on_purpose": c["sent_resend"], "retries_after_transient": c["sent_retry"],
            "stored_before_lost_answer": c["stored_before_lost_answer"],
            "resend_answered_new": c["resend_answered_new"],
            "first_send_answered_duplicate": c["first_send_answered_duplicate"],
            "refused": dict(stats.refused), "transient_failures": dict(stats.transient),
        },
        "catalog": catalog,
        "accepted_equals_catalog": catalog["captures"] == c["accepted_new"] + c["stored_before_lost_answer"]
        and catalog["equal"],
        "heartbeats_accepted": c["heartbeats_ok"],
        "heartbeats_equal": c["heartbeats_ok"] == catalog["heartbeats"],
        "rss": {"server": server, "load_generator": client, "ingest_peak": ingest,
                "warmup_s": args.warmup_s, "goal_growth_pct": 10.0,
                "under_goal": all(g["growth_pct"] is not None and g["growth_pct"] < 10
                                  for g in (server, client, ingest)),
                "series_s_server_loadgen_mb": rss_series(sampler.samples)},
        "latency_per_minute": latency_table(stats),
        "deployment": {
            "polls_200": c["poll_200"], "polls_304": c["poll_304"], "downloads": c["downloads"],
            "download_mb": round(c["download_bytes"] / MB, 1), "download_bad": c["download_bad"],
            "download_ms_p50_max": download_times(stats),
            "phases": phase_report(phases, fleet, end),
        },
        "ingest_runs": [{"at_s": r.at_s, "s": r.seconds, "peak_rss_mb": r.peak_rss_mb,
                         **{k: v for k, v in r.report.items() if k in ("captures_added", "heartbeats_added",
                                                                       "already_present", "rejected", "failed")}}
                        for r in ingests],
        "settings": {k: getattr(args, k) for k in ("upload_every_s", "duplicate_share", "poll_s", "heartbeat_s",
                                                    "ingest_every_s", "canary_pct", "rollout", "workers", "seed")},
    }


def main() -> None:
    args = parse_args()
    if args.keep is not None:
        args.keep.mkdir(parents=True)  # a new one: a second soak in the same workspace would count the first's
        result, intact = soak(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="edgeloop-soak-") as tmp:
            result, intact = soak(args, Path(tmp))
    print(json.dumps(result))
    sys.exit(0 if intact else 1)


if __name__ == "__main__":
    main()
