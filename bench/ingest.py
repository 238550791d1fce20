"""Benchmark: sustained valid uploads to the ingest API against a bare FastAPI baseline.

Both servers run as uvicorn processes on loopback and receive byte-identical multipart bodies
(~60 KB JPEGs, each unique so none is answered as a duplicate) from the same concurrent client.
Prints one JSON line last: {"uploads_per_s", "p99_ms", "baseline_per_s", ...}.
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


def make_frames(n: int, seed: int) -> list[bytes]:
    """Unique ~60 KB 640x480 JPEGs: one generated scene, a few pixels changed per copy."""
    from feedback.scenes import encode_jpeg, render_scene

    base = render_scene(seed, width=640, height=480).image
    frames = []
    for i in range(n):
        img = base.copy()
        img[i % 480, (i // 480) % 640] = (i * 37 % 256, i * 91 % 256, 255)
        frames.append(encode_jpeg(img, quality=88))
    return frames


async def drive(url: str, token: str, frames: list[bytes], meta: bytes, concurrency: int, seconds: float) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    next_frame = 0
    stop_at = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_frame
        while time.perf_counter() < stop_at and next_frame < len(frames):
            frame = frames[next_frame]
            next_frame += 1
            files = {"meta": ("meta.json", meta, "application/json"), "image": ("f.jpg", frame, "image/jpeg")}
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
    parser.add_argument("--seconds", type=float, default=10.0, help="load duration per server")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent client connections")
    parser.add_argument("--frames", type=int, default=4000, help="unique JPEGs prepared (upper bound on uploads)")
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

    frames = make_frames(args.frames, seed=7)
    with tempfile.TemporaryDirectory() as root:
        ws = Workspace(Settings(workspace=Path(root)))
        token = add_device(ws.catalog, ws.objects, "bench-cam")
        meta = CaptureMeta(
            device="bench-cam", camera="c1", captured_at=utc_now(), frame_width=640, frame_height=480,
            model_version="m", triggers=["uncertainty"], source=SourceRef(uri="bench"),
            detections=[{"xyxy": (10, 10, 100, 120), "confidence": 0.4, "class_id": 1}],
        ).model_dump_json().encode()
        env = {**os.environ, "EDGELOOP_WORKSPACE": root}

        results = {}
        for name, cmd in (
            ("baseline", [sys.executable, __file__, "--serve-baseline", "{port}", "--workers", str(args.workers)]),
            ("edgeloop", [sys.executable, "-m", "flows", "serve", "--port", "{port}", "--workers", str(args.workers)]),
        ):
            port = free_port()
            proc = start([c.format(port=port) for c in cmd], env, port)
            try:
                # Same frames for both: the baseline never stores, so edgeloop still sees them as new.
                results[name] = asyncio.run(drive(f"http://127.0.0.1:{port}", token, frames, meta,
                                                  args.concurrency, args.seconds))
            finally:
                proc.terminate()
                proc.wait(timeout=10)
        stored = len(ws.objects.list("inbox/captures"))

    ours, base = results["edgeloop"], results["baseline"]
    for name, result in results.items():
        assert set(result["statuses"]) == {201}, f"{name} answered {result['statuses']}"
    print(json.dumps({
        "uploads_per_s": round(ours["per_s"], 1),
        "p99_ms": round(ours["p99_ms"], 1),
        "baseline_per_s": round(base["per_s"], 1),
        "ratio": round(ours["per_s"] / base["per_s"], 3),
        "p50_ms": round(ours["p50_ms"], 1),
        "baseline_p99_ms": round(base["p99_ms"], 1),
        "uploads": ours["n"],
        "stored_records": stored,
        "image_kb": round(sum(map(len, frames)) / len(frames) / 1024, 1),
        "concurrency": args.concurrency,
        "workers": args.workers,
        "seconds": args.seconds,
    }))


if __name__ == "__main__":
    main()
