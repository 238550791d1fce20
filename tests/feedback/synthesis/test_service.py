"""`synthesize` end to end on a real catalog: kept images are training-only with their lineage, rejected ones have
reasons, a rerun adds nothing, the synthetic cap holds, and synthetic images never reach the holdout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.protocol import CaptureMeta, Detection, SourceRef, utc_now
from feedback.datasets.yolo_import import import_yolo
from feedback.scenes import CLASSES, encode_jpeg, render_scene, write_yolo_dataset
from feedback.synthesis.clusters import ClusterSpec
from feedback.synthesis.compose.paste import PasteGenerator
from feedback.synthesis.compose.swap import SwapGenerator
from feedback.synthesis.filters import NEAR_DUPLICATE, OFF_CLUSTER
from feedback.synthesis.lineage import Kept, SynthesisStoreError, encode_jpeg as synthetic_jpeg, save_batch, start_run
from feedback.synthesis.port import SynthesisRequest
from feedback.synthesis.service import SYNTHETIC_BOX, SynthesisError, synthesize, synthesize_for_loop
from store.blobs import sha256_hex
from store.datasets import build_dataset
from store.inbox import CaptureRecord, load_inbox
from store.labels import assign_split
from store.models import register_model
from store.settings import Settings, Workspace

HELMET, BARE = CLASSES.index("helmet"), CLASSES.index("no_helmet")


def workspace(root: Path, scene_pt: Path, *, n_train: int = 12) -> Workspace:
    """Heads only (helmets and bare), a small real holdout, and the scene model as champion."""
    ws = Workspace(Settings(workspace=root / "ws", fsync=False))
    import_yolo(ws, write_yolo_dataset(root / "train", range(n_train), class_weights=(0.6, 0.4, 0, 0)), "train",
                progress=False)
    import_yolo(ws, write_yolo_dataset(root / "holdout", range(50, 54)), "holdout", progress=False)
    data = scene_pt.read_bytes()
    ws.blobs.put(data)
    with ws.catalog.connect() as con:
        model_id = register_model(con, sha256_hex(data), classes=list(CLASSES), imgsz=160)
        con.execute("UPDATE models SET status = 'champion' WHERE id = ?", [model_id])
    return ws


@pytest.fixture(scope="module")
def site(tmp_path_factory, scene_pt) -> Workspace:
    return workspace(tmp_path_factory.mktemp("synth"), scene_pt)


def swap_request(count: int, seed: int = 0) -> SynthesisRequest:
    return SynthesisRequest(target_class=BARE, count=count, seed=seed, confusable_classes=(HELMET,))


def test_kept_images_are_training_only_labelled_synthetic_with_their_whole_lineage(site):
    seen = []
    report = synthesize(site, SwapGenerator(), swap_request(6), progress=seen.append)
    assert report.kept + sum(report.rejected.values()) == 6 and report.kept >= 3
    assert [p.made for p in seen][-1] == 6 and seen[-1].kept == report.kept
    assert report.domain_gap is not None and report.domain_gap["frechet"] >= 0 and report.domain_gap["n_real"] >= 4
    with site.catalog.connect() as con:
        rows = con.execute(
            "SELECT i.sha256, i.origin, i.source, i.lineage, s.split, l.source, l.provenance FROM images i "
            "JOIN splits s ON s.image_sha256 = i.sha256 JOIN labels l ON l.image_sha256 = i.sha256 "
            "WHERE list_contains(?, i.sha256)", [report.kept_images]).fetchall()
        outcomes = con.execute("SELECT kept, image_sha256, reason FROM synthesis_outcomes WHERE run_id = ?",
                               [report.run_id]).fetchall()
        run = con.execute("SELECT n_kept, n_rejected, finished_at IS NOT NULL, domain_gap FROM synthesis_runs "
                          "WHERE id = ?", [report.run_id]).fetchone()
        vectors = con.execute("SELECT count(*) FROM embeddings WHERE kind = ?", [SYNTHETIC_BOX]).fetchone()[0]
        boxes = {sha: con.execute("SELECT list([x1, y1, x2, y2] ORDER BY idx), list(class_id ORDER BY idx) FROM "
                                  "label_boxes b JOIN labels l ON l.id = b.label_id WHERE l.image_sha256 = ?",
                                  [sha]).fetchone() for sha in report.kept_images}
    assert len(rows) == report.kept
    for sha, origin, source, lineage, split, label_source, provenance in rows:
        assert (origin, source, split, label_source) == ("synthetic", "synthetic:swap", "train", "synthetic")
        lineage = json.loads(lineage)
        # cluster -> prompt / edit -> generator, model, seed -> filter scores
        assert list(lineage)[:4] == ["run_id", "cluster_id", "failure_ids", "target_class"]
        assert lineage["run_id"] == report.run_id and lineage["generator"] == "swap" and lineage["seed"] == 0
        assert {"edit_instruction", "prompt", "model", "source_image", "edits"} <= set(lineage)
        filters = lineage["filters"]
        assert {"phash", "max_cosine", "phash_min_hamming", "champion", "max_covered"} <= set(filters)
        assert len(filters["champion"]) == len(lineage["new_boxes"])
        assert json.loads(provenance)["run_id"] == report.run_id
        # The stored label is the generator's: the edited boxes carry the target class where they were.
        stored, classes = boxes[sha]
        for edit in lineage["edits"]:
            k = edit["box_index"]
            assert classes[k] == BARE and np.allclose(stored[k], edit["box"], atol=0.01)
    assert sorted(o[0] for o in outcomes) == [False] * sum(report.rejected.values()) + [True] * report.kept
    assert all((sha is not None) == kept and (reason is None) == kept for kept, sha, reason in outcomes)
    assert run[:3] == (report.kept, sum(report.rejected.values()), True) and json.loads(run[3]) == report.domain_gap
    assert vectors == sum(len(json.loads(r[3])["new_boxes"]) for r in rows)


def test_a_rerun_with_the_same_seed_adds_nothing_new(site):
    first = synthesize(site, SwapGenerator(), swap_request(4, seed=11))
    again = synthesize(site, SwapGenerator(), swap_request(4, seed=11))
    assert first.kept >= 2
    assert again.kept == 0 and again.rejected[NEAR_DUPLICATE] == 4
    with site.catalog.connect() as con:
        details = [d for (d,) in con.execute("SELECT detail FROM synthesis_outcomes WHERE run_id = ?",
                                             [again.run_id]).fetchall()]
    assert all(d.startswith("perceptual hash 0 bits from synthetic:") for d in details)


def test_paste_runs_through_the_same_service(site):
    report = synthesize(site, PasteGenerator(), SynthesisRequest(target_class=BARE, count=3, seed=4))
    assert report.kept + sum(report.rejected.values()) == 3
    with site.catalog.connect() as con:
        sources = {s for (s,) in con.execute("SELECT source FROM images WHERE list_contains(?, sha256)",
                                              [report.kept_images]).fetchall()}
    assert sources <= {"synthetic:paste"}


def test_the_cap_holds_and_synthetic_images_never_reach_the_holdout(tmp_path, scene_pt):
    ws = workspace(tmp_path, scene_pt, n_train=7)
    report = synthesize(ws, SwapGenerator(), swap_request(8, seed=3))
    assert report.kept > 3  # more than 30% of 7 real training images allow
    with ws.catalog.connect() as con:
        # Someone marks a synthetic image as holdout: it still only ever trains.
        assign_split(con, report.kept_images[0], "holdout")
    version = build_dataset(ws.catalog)
    with ws.catalog.connect() as con:
        items = con.execute("SELECT split, origin, count(*) FROM dataset_items WHERE version = ? GROUP BY ALL",
                            [version.version]).fetchall()
    counts = {(split, origin): n for split, origin, n in items}
    assert counts.get(("val", "synthetic"), 0) == 0 and counts[("val", "real")] == 4
    assert version.n_synthetic == counts[("train", "synthetic")] == 3  # floor(0.3 * 7 / 0.7)
    assert version.n_synthetic / version.n_train <= 0.3


def test_storing_refuses_an_image_recorded_in_the_holdout(tmp_path):
    ws = Workspace(Settings(workspace=tmp_path / "ws", fsync=False))
    image = render_scene(3).image
    sha = sha256_hex(synthetic_jpeg(image))
    start_run(ws, "run1", "swap", swap_request(1), None)
    with ws.catalog.connect() as con:
        assign_split(con, sha, "holdout")
    kept = Kept(0, image, np.array([[1.0, 1, 20, 20]]), np.array([BARE]), {"generator": "swap"})
    with pytest.raises(SynthesisStoreError, match="holdout"):
        save_batch(ws, "run1", [kept], [])
    with ws.catalog.connect() as con:  # nothing of the batch was recorded
        assert con.execute("SELECT count(*) FROM images").fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM synthesis_outcomes").fetchone()[0] == 0


def test_a_tight_cluster_rejects_what_is_not_like_its_failures(site):
    # Failures recorded on a capture: five records of the very same crop make a cluster with no spread.
    scene = render_scene(901, class_weights=(0, 1, 0, 0))
    data = encode_jpeg(scene.image)
    sha = site.blobs.put(data)
    meta = CaptureMeta(device="cam", camera="c", captured_at=utc_now(), frame_width=320, frame_height=240,
                       model_version="m1", triggers=["uncertainty"], source=SourceRef(uri="cam.mp4", frame_index=0),
                       detections=[Detection(xyxy=(1, 1, 9, 9), confidence=0.4, class_id=0)])
    site.inbox.add_capture(CaptureRecord(id=sha, sha256=sha, media_type="image/jpeg", bytes=len(data), meta=meta))
    load_inbox(site.catalog, site.inbox)
    box = scene.boxes[0] if len(scene.boxes) else np.array([100.0, 80, 140, 120])
    ids = [f"f{i}" for i in range(5)]
    with site.catalog.connect() as con:
        con.executemany("INSERT INTO failures VALUES (?, ?, 'l', 'm1', 'missed', ?, NULL, NULL, NULL, ?, ?, ?, ?, ?)",
                        [[f, sha, BARE, *map(float, box), utc_now()] for f in ids])
    spec = ClusterSpec(id="c-tight", target_class=BARE, kind="missed", confusable_class=HELMET, attributes={},
                       failure_ids=tuple(ids))
    report = synthesize(site, SwapGenerator(), SynthesisRequest(target_class=BARE, count=4, seed=21,
                                                                cluster_id="c-tight", confusable_classes=(HELMET,)),
                        cluster=spec)
    assert report.kept == 0 and report.rejected[OFF_CLUSTER] >= 1
    assert set(report.rejected) <= {OFF_CLUSTER, NEAR_DUPLICATE}
    with site.catalog.connect() as con:
        rows = con.execute("SELECT lineage FROM synthesis_outcomes WHERE run_id = ? AND reason = ?",
                           [report.run_id, OFF_CLUSTER]).fetchall()
    for (lineage,) in rows:
        lineage = json.loads(lineage)
        assert lineage["cluster_id"] == "c-tight" and lineage["failure_ids"] == ids
        assert lineage["filters"]["cluster_cosine"] < lineage["filters"]["cluster_threshold"]


def test_for_the_loop_the_rarest_class_from_its_most_alike_neighbour(site):
    out = synthesize_for_loop(site, 3, 7)
    assert out["target_class"] == BARE and out["confusable_classes"] == [HELMET] and out["generator"] == "swap"
    assert out["kept"] + sum(out["rejected"].values()) == 3 and len(out["kept_images"]) == out["kept"]
    json.dumps(out)  # the benchmark prints it


def test_requests_the_workspace_cannot_serve(site):
    with pytest.raises(SynthesisError, match="target class 9"):
        synthesize(site, SwapGenerator(), SynthesisRequest(target_class=9, count=1))
    with pytest.raises(SynthesisError, match="count 0"):
        synthesize(site, SwapGenerator(), SynthesisRequest(target_class=BARE, count=0))
