"""Acceptance run of `edgeloop cycle` on a site prepared from real data, through the product's own commands.

A fresh workspace: PPE `base/` imported for training and `val/` as the real holdout; `ppe_base.pt` registered,
gated (the first model) and published; a device registered, installed with the published ONNX, running
`edgeloop agent` on `pool_stream.mp4` against `edgeloop serve`. Then `edgeloop cycle` with the oracle as annotators
(the pool's labels, carried into the video's letterboxed frames), and a second `edgeloop cycle` with nothing new.

    python bench/cycle.py --data ../shared/datasets/ppe --base-model ../shared/models/ppe_base.pt --out DIR

Every step is a subprocess running the `edgeloop` CLI with `--json`; their answers are kept in DIR/steps/.
Prints one JSON line last: the agent's summary and, per cycle, each stage's status and the report's path.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # bench/select.py would shadow the stdlib's select

import argparse
import json
import os
import subprocess
import time
from typing import Any

import cv2

from bench.loop import log
from feedback.review.oracle import label_file, read_yolo_labels

os.environ.setdefault("YOLO_OFFLINE", "1")
DEVICE = "site-cam-1"
CLASSES = ("helmet", "no_helmet", "no_wear", "wear")


def edgeloop(out: Path, name: str, *args: str) -> Any:
    """`edgeloop ARGS --json` in the workspace; its last stdout line parsed, and kept in out/steps/NAME.json."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "flows", *args, "-w", str(out / "ws"), "--json"],
                          capture_output=True, text=True, check=False)
    (out / "logs").mkdir(exist_ok=True)
    (out / "logs" / f"{name}.log").write_text(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"edgeloop {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    (out / "steps").mkdir(exist_ok=True)
    (out / "steps" / f"{name}.json").write_text(json.dumps(answer, indent=2))
    log(f"{name}: done in {time.perf_counter() - started:.0f} s")
    return answer


def stream_labels(data: Path, video: Path, out: Path) -> Path:
    """The pool's labels for each frame of `pool_stream.mp4`, named as the oracle looks them up.

    The video holds the first 200 pool images (sorted by name), each for 5 frames, scaled to fit 640x480 and
    centred on grey (README of the data set); a box moves with its image."""
    folder = out / "stream_labels"
    folder.mkdir(exist_ok=True)
    cap = cv2.VideoCapture(str(video))
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    images = sorted((data / "pool" / "images").glob("*.jpg"))
    for i, image in enumerate(images[: -(-frames // 5)]):
        h, w = cv2.imread(str(image)).shape[:2]
        scale = min(width / w, height / h)
        x0, y0 = (width - round(w * scale)) // 2, (height - round(h * scale)) // 2
        boxes, class_ids = read_yolo_labels(data / "pool" / "labels" / f"{image.stem}.txt", w, h)
        boxes = boxes * scale + [x0, y0, x0, y0]  # into the frame's pixels
        text = "".join(f"{k} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} {(x2 - x1) / width:.6f} "
                       f"{(y2 - y1) / height:.6f}\n" for (x1, y1, x2, y2), k in zip(boxes, class_ids, strict=True))
        for frame in range(5 * i, min(5 * i + 5, frames)):
            label_file(folder, str(video), frame).write_text(text)
    return folder


def run_camera(out: Path, video: Path, sha256: str, token: str) -> dict:
    """`edgeloop serve`, and the device's agent over the whole video uploading to it."""
    from bench.edge import api_process

    with api_process(out / "ws") as url:
        # Installed at the factory: the published ONNX itself (the API serves artifacts only while deployed).
        from flows.cli.common import open_workspace

        ws = open_workspace(out / "ws")
        installed = out / "device" / "model.onnx"
        installed.parent.mkdir(exist_ok=True)
        installed.write_bytes(ws.objects.get(ws.blobs.key(sha256)))
        log(f"the device has the published model ({installed.stat().st_size / 1e6:.1f} MB); its agent runs the video")
        # A site's camera over weeks, played at full speed: no hourly upload budget.
        done = subprocess.run([sys.executable, "-m", "flows", "agent", "--source", str(video), "--model",
                               str(installed), "--server", url, "--token", token, "--device", DEVICE,
                               "--camera", "gate", "--spool", str(out / "device" / "spool"), "--budget-per-hour",
                               "1e9", "--watch-classes", "no_helmet", "--drain-s", "60", "--json"],
                              capture_output=True, text=True, check=False)
        (out / "logs" / "agent.log").write_text(done.stderr)
        if done.returncode != 0:
            raise SystemExit(f"the agent failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def stages(cycle: dict) -> dict[str, str]:
    return {s["name"]: s["status"] + (f": {s['result']['skipped']}" if s["status"] == "skipped" else "")
            for s in cycle["stages"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="PPE-style folder: base/, pool/, val/, pool_stream.mp4")
    parser.add_argument("--base-model", type=Path, required=True, help="the deployed model (.pt)")
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the workspace and logs")
    parser.add_argument("--budget", type=int, default=1000,
                        help="captures the oracle reviews in the first cycle (default: all the agent uploads, so that "
                             "the second cycle has nothing new)")
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs (bench/loop.py's recipe)")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--synthetic", type=int, default=100)
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"--out {args.out} is not empty: the acceptance run starts from a fresh workspace")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "logs").mkdir()
    out, data, video = args.out.resolve(), args.data.resolve(), (args.data / "pool_stream.mp4").resolve()
    started = time.perf_counter()

    names = ["--names", ",".join(CLASSES)]  # the data set's README: no data.yaml, these classes in this order
    train = edgeloop(out, "import_base", "import", str(data / "base"), "--split", "train", *names)
    holdout = edgeloop(out, "import_val", "import", str(data / "val"), "--split", "holdout", *names)
    model = edgeloop(out, "register", "models", "register", str(args.base_model.resolve()))
    model_id = model["id"]
    gate = edgeloop(out, "gate_first", "gate", model_id)
    published = edgeloop(out, "publish", "publish", model_id)
    token = edgeloop(out, "device", "devices", "add", DEVICE)["token"]
    agent = run_camera(out, video, published["onnx_sha256"], token)
    labels = stream_labels(data, video, out)

    common = ["--reviewer", "oracle", "--labels", str(labels), "--epochs", str(args.epochs), "--imgsz",
              str(args.imgsz), "--synthetic", str(args.synthetic)]
    first = edgeloop(out, "cycle_1", "cycle", "--budget", str(args.budget), *common)
    second = edgeloop(out, "cycle_2", "cycle", "--budget", str(args.budget), *common)
    print(json.dumps({
        "imported": {"train": train, "holdout": holdout}, "first_model": model_id, "first_gate": gate.get("promoted"),
        "published": {k: published[k] for k in ("model", "onnx_sha256", "parity")},
        "agent": {k: agent.get(k) for k in ("frames", "fps", "spooled", "uploaded", "triggers", "models_run")},
        "cycle_1": {"stages": stages(first), "report": first.get("report_html") or first.get("report")},
        "cycle_2": {"stages": stages(second), "report": second.get("report_html") or second.get("report")},
        "seconds": round(time.perf_counter() - started, 1),
    }, default=str))


if __name__ == "__main__":
    main()
