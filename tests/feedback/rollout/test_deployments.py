"""Deployments in the catalog: canary buckets, rollouts started, grown, promoted and rolled back, pins, and
the desired state each change publishes for the API (read back from the blob store, as the API reads it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from feedback.rollout.deployments import (
    RolloutError, pin_device, promote_rollout, rollback_rollout, start_rollout, unpin_device,
)
from feedback.rollout.desired import DesiredState, DesiredStateReader, answer_for, canary_bucket, in_canary
from store.rollouts import fleet_model
from store.settings import Workspace
from tests.edge.manual_clock import ManualClock
from tests.feedback.rollout.artifacts import clear_deployments, gate_fleet

DEVICES = [f"cam-{i:02d}" for i in range(40)]


def test_buckets_are_stable_spread_and_a_growing_canary_keeps_its_devices() -> None:
    buckets = {d: canary_bucket(d) for d in DEVICES}
    assert buckets == {d: canary_bucket(d) for d in DEVICES}  # a pure function of the name
    assert all(0 <= b < 100 for b in buckets.values()) and len(set(buckets.values())) == len(DEVICES)
    many = [canary_bucket(f"site-{i}") for i in range(4000)]
    assert abs(sum(b < 25 for b in many) / len(many) - 0.25) < 0.03  # a 25% canary holds about 25%
    previous: set[str] = set()
    for pct in (1, 5, 10, 25, 50, 75, 100):
        members = {d for d in DEVICES if in_canary(d, pct)}
        assert previous <= members  # growing only ever adds devices
        previous = members
    assert previous == set(DEVICES)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, ppe_dir: Path, ppe_pt: Path, ppe_onnx: Path):
    """A workspace with three published models and two devices."""
    return gate_fleet(tmp_path_factory.mktemp("deploy"), ppe_dir, ppe_pt, ppe_onnx, ["a", "b", "c"])


@pytest.fixture
def ws(fleet) -> Workspace:
    """The fleet's workspace with no rollout or pin in force (each test starts from there)."""
    ws, _ = fleet
    clear_deployments(ws, ["rollouts", "device_pins"])
    return ws


def published(ws: Workspace) -> DesiredState:
    return DesiredStateReader(ws.objects, ttl_s=0).current()


def test_two_devices_one_in_a_half_canary() -> None:
    # The names the fixture registers: the API and the integration test rely on this split.
    assert in_canary("gate-east", 50) and not in_canary("gate-west", 50)


def test_a_canary_sends_the_model_to_its_bucket_only(ws: Workspace, fleet) -> None:
    a = fleet[1][0]
    r = start_rollout(ws, a, 50)
    assert (r.model_id, r.canary_pct, r.state, r.baseline_model_id) == (a, 50, "canary", None)
    state = published(ws)
    assert state.rollout is not None and state.rollout.id == r.id and set(state.artifacts) == {a}
    inside, outside = answer_for(state, "gate-east"), answer_for(state, "gate-west")
    assert (inside.reason, inside.model_version, inside.artifact) == ("canary", a, state.artifacts[a])
    assert (outside.reason, outside.model_version, outside.artifact) == ("none", None, None)
    assert outside.rollout_id == r.id


def test_a_canary_grows_never_shrinks_and_one_runs_at_a_time(ws: Workspace, fleet) -> None:
    a, b, _ = fleet[1]
    r = start_rollout(ws, a, 10)
    grown = start_rollout(ws, a, 60)
    assert grown.id == r.id and grown.canary_pct == 60 and published(ws).rollout.canary_pct == 60  # type: ignore[union-attr]
    with pytest.raises(RolloutError, match="would shrink"):
        start_rollout(ws, a, 20)
    with pytest.raises(RolloutError, match=f"rollout {r.id} of {a} is in progress"):
        start_rollout(ws, b, 10)
    with pytest.raises(RolloutError, match="must lie in"):
        start_rollout(ws, a, 0)
    with pytest.raises(RolloutError, match="has not been published"):
        start_rollout(ws, "m-unpublished", 10)
    with ws.catalog.connect() as con:
        actions = [a for (a,) in con.execute("SELECT action FROM rollout_events WHERE rollout_id = ? "
                                             "ORDER BY happened_at", [r.id]).fetchall()]
    assert actions == ["start", "grow"]


def test_promote_needs_a_healthy_canary_or_force(ws: Workspace, fleet) -> None:
    a = fleet[1][0]
    start_rollout(ws, a, 50)
    with pytest.raises(RolloutError, match=r"not healthy: only 0 heartbeat\(s\).*--force"):
        promote_rollout(ws)  # no device has reported running it
    r, judgment = promote_rollout(ws, force=True)
    assert r.state == "promoted" and judgment["healthy"] is False
    state = published(ws)
    assert state.rollout is None and state.fleet == a
    assert answer_for(state, "gate-west").reason == "fleet" and answer_for(state, "gate-west").model_version == a
    with ws.catalog.connect() as con:
        forced, recorded = con.execute("SELECT forced, judgment FROM rollout_events WHERE action = 'promote' "
                                       "AND rollout_id = ?", [r.id]).fetchone()
    assert forced is True and json.loads(recorded)["reasons"] == judgment["reasons"]


def test_rolling_back_walks_back_one_rollout_at_a_time(ws: Workspace, fleet) -> None:
    a, b, _ = fleet[1]
    start_rollout(ws, a, 100)
    promote_rollout(ws, force=True)
    with pytest.raises(RolloutError, match="already the fleet's model"):
        start_rollout(ws, a, 10)
    second = start_rollout(ws, b, 50)
    assert second.baseline_model_id == a
    assert answer_for(published(ws), "gate-west").model_version == a  # outside the canary: the fleet's
    rollback_rollout(ws)  # the canary of b
    assert published(ws).rollout is None and published(ws).fleet == a
    assert answer_for(published(ws), "gate-east").model_version == a
    start_rollout(ws, b, 50)
    promote_rollout(ws, force=True)
    assert published(ws).fleet == b
    back = rollback_rollout(ws)  # a promoted rollout: the fleet returns to what it ran before it
    assert back.model_id == b and back.state == "rolled_back" and published(ws).fleet == a
    rollback_rollout(ws)
    with ws.catalog.connect() as con:
        assert fleet_model(con) is None
    assert answer_for(published(ws), "gate-east").reason == "none"  # every device back to its installed model
    with pytest.raises(RolloutError, match="no rollout to roll back"):
        rollback_rollout(ws)


def test_a_pin_holds_a_device_whatever_rollouts_do(ws: Workspace, fleet) -> None:
    a, b, c = fleet[1]
    pin_device(ws, "gate-east", c)
    start_rollout(ws, a, 100)
    state = published(ws)
    assert answer_for(state, "gate-east").reason == "pinned" and answer_for(state, "gate-east").model_version == c
    assert answer_for(state, "gate-west").model_version == a
    assert set(state.artifacts) == {a, c}  # only what is named may be downloaded
    with pytest.raises(RolloutError, match="no device named 'cam-zz'"):
        pin_device(ws, "cam-zz", b)
    with pytest.raises(RolloutError, match="has not been published"):
        pin_device(ws, "gate-east", "m-unpublished")
    unpin_device(ws, "gate-east")
    assert answer_for(published(ws), "gate-east").model_version == a
    with pytest.raises(RolloutError, match="not pinned"):
        unpin_device(ws, "gate-east")


def test_the_api_reader_rereads_the_published_state_after_its_ttl(ws: Workspace, fleet) -> None:
    clock = ManualClock()
    reader = DesiredStateReader(ws.objects, ttl_s=2.0, clock=clock.now)
    assert reader.current().rollout is None
    start_rollout(ws, fleet[1][0], 50)
    clock.advance(1.0)
    assert reader.current().rollout is None  # cached
    clock.advance(1.5)
    assert reader.current().rollout is not None
