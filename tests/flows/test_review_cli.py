"""`edgeloop review push/pull` and `failures` through the CLI, with the oracle as the annotators."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from edge.protocol import CaptureMeta, Detection, SourceRef, utc_now
from feedback.datasets.yolo_import import import_yolo
from feedback.scenes import encode_jpeg, render_scene, write_yolo_dataset
from flows.cli import app
from store.inbox import CaptureRecord, load_inbox
from store.settings import Settings, Workspace

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _camera(ws: Workspace, labels: Path, n: int) -> None:
    """n captures of frames of `cam.mp4`, each with one spurious detection; ground truth beside."""
    labels.mkdir()
    for i in range(n):
        scene = render_scene(300 + i)
        data = encode_jpeg(scene.image)
        sha = ws.blobs.put(data)
        meta = CaptureMeta(device="cam", camera="c", captured_at=utc_now(), frame_width=320, frame_height=240,
                           model_version="m1", triggers=["uncertainty"], source=SourceRef(uri="cam.mp4", frame_index=i),
                           detections=[Detection(xyxy=(1, 1, 9, 9), confidence=0.4, class_id=0)])
        ws.inbox.add_capture(CaptureRecord(id=sha, sha256=sha, media_type="image/jpeg", bytes=len(data), meta=meta))
        rows = [f"{c} {(x1 + x2) / 640:.6f} {(y1 + y2) / 480:.6f} {(x2 - x1) / 320:.6f} {(y2 - y1) / 240:.6f}"
                for (x1, y1, x2, y2), c in zip(scene.boxes, scene.class_ids, strict=True)]
        (labels / f"cam_{i:06d}.txt").write_text("\n".join(rows))
    load_inbox(ws.catalog, ws.inbox)


def test_push_pull_with_the_oracle_then_failures(tmp_path: Path) -> None:
    ws = Workspace(Settings(workspace=tmp_path / "ws"))
    import_yolo(ws, write_yolo_dataset(tmp_path / "d", range(2)), "train", progress=False)
    _camera(ws, tmp_path / "labels", 6)
    w = ["-w", str(tmp_path / "ws")]

    code, _, err = run("review", "push", "--budget", "4", "--reviewer", "oracle", *w)
    assert code == 2 and "--labels" in err
    code, out, err = run("review", "push", "--budget", "4", "--reviewer", "oracle", "--labels",
                         str(tmp_path / "labels"), "--json", *w)
    assert code == 0, err
    assert json.loads(out)["pushed"] == 4
    code, out, err = run("review", "pull", "--reviewer", "oracle", "--labels", str(tmp_path / "labels"), "--json", *w)
    assert code == 0, err
    pulled = json.loads(out)
    assert pulled["verified"] == 4 and pulled["failures"] >= 4  # at least the spurious box on each
    again = json.loads(run("review", "pull", "--reviewer", "oracle", "--labels", str(tmp_path / "labels"),
                           "--json", *w)[1])
    assert again["verified"] == 0 and again["unchanged"] == 4
    summary = json.loads(run("failures", "--json", *w)[1])
    assert summary["totals"]["spurious"] == 4 and summary["totals"]["captures"] == 4
    # The random baseline takes what is left; active selection computed embeddings on the way.
    assert json.loads(run("review", "push", "--budget", "9", "--strategy", "random", "--reviewer", "oracle",
                          "--labels", str(tmp_path / "labels"), "--json", *w)[1])["pushed"] == 2
    with ws.catalog.connect() as con:
        assert con.execute("SELECT count(*) FROM embeddings WHERE kind = 'capture'").fetchone() == (6,)


def test_label_studio_unreachable_is_a_clear_error(tmp_path: Path) -> None:
    ws = Workspace(Settings(workspace=tmp_path / "ws"))
    import_yolo(ws, write_yolo_dataset(tmp_path / "d", range(2)), "train", progress=False)
    _camera(ws, tmp_path / "labels", 2)
    code, _, err = run("review", "push", "--budget", "2", "--no-diversity", "--public-url", "http://127.0.0.1:9",
                       "--label-studio-url", "http://127.0.0.1:9", "--label-studio-token", "x" * 40,
                       "-w", str(tmp_path / "ws"))
    assert code == 2 and "127.0.0.1:9" in err
    with ws.catalog.connect() as con:
        assert con.execute("SELECT count(*) FROM review_tasks").fetchone() == (0,)
