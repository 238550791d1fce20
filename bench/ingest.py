"""Benchmark: sustained valid uploads to the ingest API against a bare FastAPI baseline.

Both servers run as uvicorn processes on loopback and receive byte-identical multipart bodies
(~60 KB JPEGs, each unique so none is answered as a duplicate) from the same concurrent client.
Prints one JSON line last: {"uploads_per_s", "p99_ms", "baseline_per_s", ...}, with the CPU each
server and the load generator spent per request (from /proc), which is steadier than throughput
on a shared machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/x.py` puts bench/ first on the path, where select.py would shadow the standard
# library's `select` (asyncio needs it): the repository root goes there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])


import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from fastapi import FastAPI, Request

REPO = Path(__file__).resolve().parents[1]


def baseline_app() -> FastAPI:
    """The floor: a FastAPI endpoint that only reads the same body and answers."""
    app = FastAPI()

    @app.post("/v1/captures", status_code=201)
    async def read_only(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    return app


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process and all its descendants (uvicorn workers), from /proc."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                # The command name may hold spaces; the fields after its closing parenthesis do not.
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    tree, total = {pid}, 0.0
    for child, (parent, _) in sorted(stats.items()):  # children have higher pids than parents here
        if parent in tree:
            tree.add(child)
    return sum(stats[p][1] for p in tree if p in stats)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], env: dict[str, str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server {args} did not start")


class Frames:
    """Unique JPEGs on demand: one ~60 KB 640x480 scene with a numbered comment segment, so
    every upload has its own sha256 (none is a duplicate) yet decodes to the same picture."""

    def __init__(self, seed: int, quality: int = 85) -> None:
        from feedback.scenes import encode_jpeg, render_scene

        self.jpeg = encode_jpeg(render_scene(seed, width=640, height=480).image, quality=quality)
        self.count = 0

    def next(self) -> bytes:
        self.count += 1
        comment = b"edgeloop-bench %012d" % self.count
        segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
        return self.jpeg[:2] + segment + self.jpeg[2:]  # right after SOI


async def drive(url: str, token: str, frames: Frames, meta: bytes, concurrency: int, seconds: float) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    stop_at = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < stop_at:
            files = {"meta": ("meta.json", meta, "application/json"), "image": ("f.jpg", frames.next(), "image/jpeg")}
            t0 = time.perf_counter()
            response = await client.post("/v1/captures", files=files)
            latencies.append(time.perf_counter() - t0)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, limits=limits,
                                 timeout=60) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {"per_s": len(latencies) / elapsed, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "n": len(latencies), "statuses": statuses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="load duration per server and round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are reported")
    parser.add_argument("--warmup", type=float, default=4.0, help="seconds of unreported load per server first")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent client connections")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="server worker processes, the same for both servers (default: one per core)")
    parser.add_argument("--serve-baseline", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve_baseline:
        import uvicorn

        uvicorn.run("bench.ingest:baseline_app", factory=True, host="127.0.0.1", port=args.serve_baseline,
                    workers=args.workers, log_level="warning", access_log=False)
        return

    from edge.protocol import CaptureMeta, SourceRef, utc_now
    from store.devices import add_device
    from store.settings import Settings, Workspace

    frames = Frames(seed=7)
    with tempfile.TemporaryDirectory() as root:
        ws = Workspace(Settings(workspace=Path(root)))
        token = add_device(ws.catalog, ws.objects, "bench-cam")
        meta = CaptureMeta(
            device="bench-cam", camera="c1", captured_at=utc_now(), frame_width=640, frame_height=480,
            model_version="m", triggers=["uncertainty"], source=SourceRef(uri="bench"),
            detections=[{"xyxy": (10, 10, 100, 120), "confidence": 0.4, "class_id": 1}],
        ).model_dump_json().encode()
        env = {**os.environ, "EDGELOOP_WORKSPACE": root}
        servers = {
            "baseline": [sys.executable, __file__, "--serve-baseline", "{port}", "--workers", str(args.workers)],
            "edgeloop": [sys.executable, "-m", "flows", "serve", "--port", "{port}", "--workers", str(args.workers)],
        }
        ports = {name: free_port() for name in servers}
        procs = {name: start([c.format(port=ports[name]) for c in cmd], env, ports[name]) for name, cmd in servers.items()}
        runs: dict[str, list[dict]] = {name: [] for name in servers}
        try:
            # Warm-up: connections, imports and caches; and on ext4 without a journal, the inode
            # allocator skips over recently deleted inodes (a previous run's cleanup) at first.
            warmup = {name: asyncio.run(drive(f"http://127.0.0.1:{ports[name]}", token, frames, meta,
                                              args.concurrency, args.warmup)) for name in servers}
            # Interleaved rounds, medians reported: this machine's speed drifts from minute to minute.
            for round_ in range(args.rounds):
                # Each goes first in every other round, so that neither inherits the other's wake
                # (the disk writing back, caches) more often.
                for name in sorted(servers, reverse=round_ % 2 == 1):
                    server_cpu, client_cpu = cpu_seconds(procs[name].pid), time.process_time()
                    result = asyncio.run(drive(f"http://127.0.0.1:{ports[name]}", token, frames, meta,
                                               args.concurrency, args.seconds))
                    if server_cpu is not None:
                        # CPU per request is steadier than throughput on a shared machine, and says
                        # whether the server or the load generator is the bottleneck.
                        result["server_cpu_ms"] = 1000 * (cpu_seconds(procs[name].pid) - server_cpu) / result["n"]
                    result["client_cpu_ms"] = 1000 * (time.process_time() - client_cpu) / result["n"]
                    runs[name].append(result)
        finally:
            for proc in procs.values():
                proc.terminate()
                proc.wait(timeout=10)
        stored = len(ws.objects.list("inbox/captures"))

    for name, results in runs.items():
        for result in [warmup[name], *results]:
            assert set(result["statuses"]) == {201}, f"{name} answered {result['statuses']}"
    ours = sorted(runs["edgeloop"], key=lambda r: r["per_s"])[len(runs["edgeloop"]) // 2]
    base = sorted(runs["baseline"], key=lambda r: r["per_s"])[len(runs["baseline"]) // 2]
    print(json.dumps({
        "uploads_per_s": round(ours["per_s"], 1),
        "p99_ms": round(ours["p99_ms"], 1),
        "baseline_per_s": round(base["per_s"], 1),
        "ratio": round(ours["per_s"] / base["per_s"], 3),
        "p50_ms": round(ours["p50_ms"], 1),
        "baseline_p99_ms": round(base["p99_ms"], 1),
        "rounds": {name: [round(r["per_s"], 1) for r in results] for name, results in runs.items()},
        "ratio_per_round": [round(e["per_s"] / b["per_s"], 3) for e, b in zip(runs["edgeloop"], runs["baseline"])],
        "cpu_ms_per_request": {name: {side: round(float(np.median([r[f"{side}_cpu_ms"] for r in results])), 2)
                                      for side in ("server", "client") if f"{side}_cpu_ms" in results[0]}
                               for name, results in runs.items()},
        "uploads": sum(r["n"] for r in [warmup["edgeloop"], *runs["edgeloop"]]),  # each one stored
        "stored_records": stored,
        "image_kb": round(len(frames.jpeg) / 1024, 1),
        "concurrency": args.concurrency,
        "workers": args.workers,
        "seconds_per_round": args.seconds,
        "warmup_s": args.warmup,
    }))


if __name__ == "__main__":
    main()
