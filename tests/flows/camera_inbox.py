"""Camera frames in a workspace's inbox as a device would send them, with the oracle's labels beside: the
starting point of the review, cycle and Prefect tests, which differ only in the scenes and the device's box."""

from __future__ import annotations

from pathlib import Path

from edge.protocol import CaptureMeta, Detection, SourceRef, utc_now
from feedback.scenes import encode_jpeg, render_scene
from store.inbox import CaptureRecord
from store.settings import Workspace


def camera_frames(ws: Workspace, labels: Path, n: int, first_seed: int = 500,
                  box: tuple[float, float, float, float] = (1, 1, 30, 30)) -> Path:
    """`n` camera frames (scenes `first_seed` on) of `cam.mp4` in the inbox, each with one spurious detection at
    `box`, and the oracle's YOLO labels for them in `labels`."""
    labels.mkdir()
    for i in range(n):
        scene = render_scene(first_seed + i)
        data = encode_jpeg(scene.image)
        sha = ws.blobs.put(data)
        meta = CaptureMeta(device="cam", camera="c", captured_at=utc_now(), frame_width=320, frame_height=240,
                           model_version="m1", triggers=["uncertainty"], source=SourceRef(uri="cam.mp4", frame_index=i),
                           detections=[Detection(xyxy=box, confidence=0.4, class_id=0)])
        ws.inbox.add_capture(CaptureRecord(id=sha, sha256=sha, media_type="image/jpeg", bytes=len(data), meta=meta))
        rows = [f"{c} {(x1 + x2) / 640:.6f} {(y1 + y2) / 480:.6f} {(x2 - x1) / 320:.6f} {(y2 - y1) / 240:.6f}"
                for (x1, y1, x2, y2), c in zip(scene.boxes, scene.class_ids, strict=True)]
        (labels / f"cam_{i:06d}.txt").write_text("\n".join(rows))
    return labels
