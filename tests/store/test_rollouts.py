"""The rollout tables on a real catalog: a rollout's life (canary, grown, promoted, rolled back), pins, artifacts,
and the heartbeat and capture counts a canary is judged on, loaded the devices' way (through the inbox).
"""

from __future__ import annotations

import json
from datetime import timedelta

from edge.protocol import ArtifactManifest, Heartbeat
from store.catalog import Catalog
from store.inbox import HeartbeatRecord, Inbox, load_inbox
from store.labels import add_image, assign_split
from store.rollouts import (
    LastHeartbeat, active_rollout, artifact_manifest, fleet_model, get_rollout, holdout_images, insert_rollout,
    last_heartbeats, latest_rollout, mark_promoted, mark_rolled_back, pin, pins, put_artifact, record_event,
    rollout_in_force, set_canary_pct, unpin, update_reports, version_activity, versions_seen,
)
from tests.store.conftest import T0


def heartbeat(minute: int, device: str, version: str, **fields) -> HeartbeatRecord:
    return HeartbeatRecord(heartbeat=Heartbeat(device=device, sent_at=T0 + timedelta(minutes=minute),
                                               model_version=version, fps=30.0, inference_ms_p50=8.0,
                                               inference_ms_p99=15.0, queue_depth=0, **fields))


def test_a_rollout_from_canary_to_fleet_and_back(catalog: Catalog) -> None:
    with catalog.connect() as con:
        assert (active_rollout(con), latest_rollout(con), fleet_model(con)) == (None, None, None)
        insert_rollout(con, "r-1", "m1", None, 10.0, T0)
        set_canary_pct(con, "r-1", 50.0, T0 + timedelta(hours=1))
        record_event(con, "r-1", "grow", 50.0)
        grown = get_rollout(con, "r-1")
        assert grown is not None and (grown.state, grown.canary_pct, grown.started_at) == ("canary", 50.0, T0)
        assert active_rollout(con) == latest_rollout(con) == rollout_in_force(con) == grown
        assert fleet_model(con) is None  # a canary is not the fleet's model yet

        mark_promoted(con, "r-1", T0 + timedelta(hours=2))
        record_event(con, "r-1", "promote", 100.0, forced=True, judgment={"healthy": False})
        assert (active_rollout(con), fleet_model(con)) == (None, "m1")
        assert rollout_in_force(con).canary_pct == 100.0  # type: ignore[union-attr]

        mark_rolled_back(con, "r-1", T0 + timedelta(hours=3))
        assert (rollout_in_force(con), fleet_model(con), latest_rollout(con).state) == (  # type: ignore[union-attr]
            None, None, "rolled_back")
        events = con.execute("SELECT action, canary_pct, forced, judgment FROM rollout_events "
                             "ORDER BY happened_at").fetchall()
    assert [(a, pct, forced, json.loads(j) if j else None) for a, pct, forced, j in events] == [
        ("grow", 50.0, False, None), ("promote", 100.0, True, {"healthy": False})]


def test_pins_are_replaced_and_removed(catalog: Catalog) -> None:
    with catalog.connect() as con:
        pin(con, "cam-b", "m-1", T0)
        pin(con, "cam-a", "m-1", T0)
        pin(con, "cam-b", "m-2", T0)
        assert pins(con) == {"cam-a": "m-1", "cam-b": "m-2"}
        unpin(con, "cam-a")
        assert pins(con) == {"cam-b": "m-2"}


def test_publishing_again_replaces_the_artifact(catalog: Catalog) -> None:
    def manifest(onnx: str) -> ArtifactManifest:
        return ArtifactManifest(model_version="m-1", onnx_sha256=onnx * 64, onnx_bytes=10, reference_sha256="c" * 64,
                                reference_bytes=5, classes=["helmet"], input_size=(640, 640), published_at=T0)

    with catalog.connect() as con:
        assert artifact_manifest(con, "m-1") is None
        put_artifact(con, manifest("a"), {"frames": 4})
        put_artifact(con, manifest("b"), {"frames": 8})
        assert artifact_manifest(con, "m-1") == manifest("b")
        assert con.execute("SELECT parity FROM artifacts").fetchall() == [('{"frames": 8}',)]


def test_holdout_images_are_real_ones_in_sha_order(catalog: Catalog) -> None:
    with catalog.connect() as con:
        for sha, origin, split in (("b" * 64, "real", "holdout"), ("a" * 64, "real", "holdout"),
                                   ("c" * 64, "synthetic", "holdout"), ("d" * 64, "real", "train")):
            add_image(con, sha, 640, 480, "image/png" if sha[0] == "a" else "image/jpeg", origin, "test")
            assign_split(con, sha, split)
        assert holdout_images(con, 10) == [("a" * 64, "image/png"), ("b" * 64, "image/jpeg")]
        assert holdout_images(con, 1) == [("a" * 64, "image/png")]


def test_version_activity_counts_what_devices_reported(catalog: Catalog, inbox: Inbox, make_capture) -> None:
    for record in (heartbeat(0, "cam-1", "m1", errors=0), heartbeat(1, "cam-1", "m1", errors=2),
                   heartbeat(2, "cam-1", "m1", errors=1),  # a restart resets the counter: not -1 error
                   heartbeat(0, "cam-2", "m-old", update_target="m1", update_state="downloading"),
                   heartbeat(3, "cam-2", "m-old", update_target="m1", update_state="refused",
                             update_detail="boxes differ")):
        inbox.add_heartbeat(record)
    for capture in (make_capture(1, "cam-1", ("random",)), make_capture(2, "cam-1", ("uncertainty",))):
        inbox.add_capture(capture)
    load_inbox(catalog, inbox)
    with catalog.connect() as con:
        new = version_activity(con, T0, "m1")  # what make_capture's captures ran
        rest = version_activity(con, T0, "m1", others=True)
        assert versions_seen(con, T0) == ["m-old", "m1"]
        assert versions_seen(con, T0 + timedelta(minutes=3)) == ["m-old"]
        assert update_reports(con, T0, "m1") == [("cam-2", "refused", "boxes differ")]
        last = last_heartbeats(con)
    assert (new.devices, new.heartbeats, new.fps, new.errors, new.captures) == (["cam-1"], 3, 30.0, 2, 2)
    assert abs(new.device_hours - 2 / 60) < 1e-9
    assert new.uploads_by_trigger == {"random": 1, "uncertainty": 1}
    assert (new.sampled_frames, new.detections_by_class) == (1, {"person": 1, "class 3": 1})
    assert (rest.devices, rest.heartbeats, rest.captures, rest.sampled_frames) == (["cam-2"], 2, 0, 0)
    assert last["cam-2"] == LastHeartbeat("m-old", "refused", "boxes differ", T0 + timedelta(minutes=3))
