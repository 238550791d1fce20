"""Benchmark: the whole agent loop against bare ONNX Runtime and against ultralytics' predict.

All three see the same pre-decoded frames, so decoding is out of the comparison:
- bare: resize + normalise + `session.run` only (the floor: no letterbox, decode, NMS or anything else);
- agent: `Agent.step` per frame: detect (letterbox, ORT, decode with class evidence, NMS), track, alert
  check, mine (with the rare_class trigger when `--watch-classes` names classes), spool;
- ultralytics: `YOLO(onnx).predict(stream=True)` on the same frames and ONNX file.
Prints one JSON line last: {"agent_fps", "bare_infer_fps", "ratio", "ultralytics_fps", ...}.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/x.py` puts bench/ first on the path, where select.py would shadow the standard
# library's `select` (asyncio needs it): the repository root goes there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])


import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from edge.triggers import TriggerConfig

os.environ.setdefault("YOLO_OFFLINE", "1")


def read_frames(path: str, n: int) -> list:
    from edge.sources import open_source

    frames = []
    with open_source(path) as source:
        for frame in source:
            frames.append(frame)
            if len(frames) >= n:
                break
    return frames


def bare_fps(model: Path, images: list[np.ndarray], threads: int | None) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    h, w = inp.shape[2], inp.shape[3]

    def run(img: np.ndarray) -> None:
        x = cv2.resize(img, (w, h))[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        session.run(None, {inp.name: x})

    for img in images[:10]:
        run(img)
    t0 = time.perf_counter()
    for img in images:
        run(img)
    return len(images) / (time.perf_counter() - t0)


def agent_fps(model: Path, frames: list, spool: Path, triggers: TriggerConfig) -> tuple[float, dict]:
    from edge.agent import Agent, AgentConfig
    from edge.detectors.base import load_detector

    # Nothing listens on port 9: uploads back off quietly on their own thread, as on a site
    # whose uplink is down; the frame loop is what is measured.
    config = AgentConfig(server="http://127.0.0.1:9", token="bench", device="bench", spool_dir=spool, triggers=triggers)
    agent = Agent(config, load_detector(model), frames)
    agent.uploader.start()
    for frame in frames[:10]:
        agent.step(frame)
    t0 = time.perf_counter()
    for frame in frames:
        agent.step(frame)
    fps = len(frames) / (time.perf_counter() - t0)
    status = agent.status()
    agent.close()
    return fps, status


def ultralytics_fps(model: Path, images: list[np.ndarray], imgsz: int) -> float:
    from ultralytics import YOLO

    yolo = YOLO(str(model), task="detect")
    for _ in yolo.predict(images[:10], stream=True, imgsz=imgsz, verbose=False):
        pass
    t0 = time.perf_counter()
    for _ in yolo.predict(images, stream=True, imgsz=imgsz, verbose=False):
        pass
    return len(images) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="video file (or folder) to take frames from")
    parser.add_argument("--model", required=True, type=Path, help="ultralytics-exported ONNX")
    parser.add_argument("--frames", type=int, default=300, help="frames per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="best of N for each contender")
    parser.add_argument("--threads", type=int, default=None, help="ORT intra-op threads for the bare run")
    parser.add_argument("--watch-classes", default="", help="comma-separated class names for the rare_class trigger")
    parser.add_argument("--rare-band", default="0.001,0.25", help="LOW,HIGH evidence band of the watched classes")
    args = parser.parse_args()

    frames = read_frames(args.source, args.frames)
    images = [f.image for f in frames]
    from edge.detectors.base import load_detector
    from edge.triggers import TriggerConfig

    detector = load_detector(args.model)
    imgsz = detector.input_size[0]
    ids = {name: i for i, name in detector.names.items()}
    watched = [c for c in args.watch_classes.split(",") if c]
    if unknown := [c for c in watched if c not in ids]:
        parser.error(f"--watch-classes {unknown[0]!r} is not a class of the model ({', '.join(ids)})")
    low, high = (float(v) for v in args.rare_band.split(","))
    triggers = TriggerConfig(watch_classes=tuple(ids[c] for c in watched), rare_band=(low, high))
    results: dict[str, list[float]] = {"bare": [], "agent": [], "ultralytics": []}
    status: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        # Interleaved repeats, best of each: the fairest reading on a machine with other load.
        for i in range(args.repeats):
            results["bare"].append(bare_fps(args.model, images, args.threads))
            fps, status = agent_fps(args.model, frames, Path(tmp) / f"spool{i}", triggers)
            results["agent"].append(fps)
            results["ultralytics"].append(ultralytics_fps(args.model, images, imgsz))
    best = {k: max(v) for k, v in results.items()}
    print(json.dumps({
        "agent_fps": round(best["agent"], 1),
        "bare_infer_fps": round(best["bare"], 1),
        "ratio": round(best["agent"] / best["bare"], 3),
        "ultralytics_fps": round(best["ultralytics"], 1),
        "agent_vs_ultralytics": round(best["agent"] / best["ultralytics"], 2),
        "frames": len(frames),
        "imgsz": imgsz,
        "frame_size": list(images[0].shape[:2]),
        "agent_inference_ms_p50": status.get("inference_ms_p50"),
        "spooled_during_run": status.get("spooled"),
        "watch_classes": watched,
        "triggers_fired": status.get("triggers", {}).get("fired"),
        "runs": {k: [round(x, 1) for x in v] for k, v in results.items()},
    }))


if __name__ == "__main__":
    main()
