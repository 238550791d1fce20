"""Signed rollouts: a device trusting only its pinned root refuses what an attacker with write access to the
blob store publishes (wrong key, unsigned, expired, replayed, mixed), and takes a properly signed rollout.

The metadata travels through the real ingest API on loopback, verified by python-tuf's own client.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, MetaFile, Snapshot, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from edge.protocol import ArtifactManifest, utc_now
from edge.trust import TrustedInstaller, TrustError, assigned, canary_bucket
from feedback.ingest.serving import BackgroundServer
from feedback.rollout.desired import ActiveRollout, DesiredState, in_canary
from feedback.rollout.trust import (
    EXPIRY, PREFIX, SigningKeys, TrustSetupError, assignment, init_keys, rotate_key, sign_state,
)
from store.devices import add_device
from store.settings import Settings, Workspace

DEVICE = "dock-cam-3"


def model(ws: Workspace, name: str) -> tuple[ArtifactManifest, bytes]:
    """A stand-in artifact: bytes in the blob store and a manifest naming them (trust checks hashes, not ONNX)."""
    onnx = f"onnx of {name}".encode() * 100
    reference = b'{"frames": []}'
    manifest = ArtifactManifest(model_version=name, onnx_sha256=ws.blobs.put(onnx), onnx_bytes=len(onnx),
                                reference_sha256=ws.blobs.put(reference), reference_bytes=len(reference),
                                classes=["helmet", "no_helmet"], input_size=(320, 320), published_at=utc_now())
    return manifest, onnx


def fleet(*manifests: ArtifactManifest, **fields: object) -> DesiredState:
    return DesiredState(artifacts={m.model_version: m for m in manifests}, **fields)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Workspace, str, str, Path]]:
    ws = Workspace(Settings(workspace=tmp_path / "ws", fsync=False))
    token = add_device(ws.catalog, ws.objects, DEVICE)
    keys = tmp_path / "keys"
    init_keys(keys)
    with BackgroundServer(ws.settings) as url:
        yield ws, url, token, keys


def device(site: tuple, tmp_path: Path, name: str = DEVICE) -> TrustedInstaller:
    _, url, token, keys = site
    return TrustedInstaller(root=keys / "root.json", metadata_dir=tmp_path / f"device-{name}", server=url,
                            token=token, device=name)


def test_a_signed_rollout_is_taken_and_every_attack_is_refused(site, tmp_path: Path) -> None:
    ws, _, _, keys = site
    good, good_onnx = model(ws, "m-good")
    old, old_onnx = model(ws, "m-old")
    evil, evil_onnx = model(ws, "m-evil")
    dev = device(site, tmp_path)

    # The operator once shipped m-old, then m-good: the device has seen both sets, m-good's last.
    sign_state(ws.objects, SigningKeys.load(keys), fleet(old, fleet="m-old"))
    replay = {name: ws.objects.get(f"{PREFIX}{name}") for name in ("targets.json", "snapshot.json", "timestamp.json")}
    dev.check("m-old", old_onnx)
    sign_state(ws.objects, SigningKeys.load(keys), fleet(good, fleet="m-good"))
    dev.check("m-good", good_onnx)
    current = {name: ws.objects.get(f"{PREFIX}{name}") for name in replay}

    def attack(files: dict[str, bytes], model_version: str, onnx: bytes, why: str,
               victim: TrustedInstaller = dev) -> None:
        for name, data in files.items():
            ws.objects.put(f"{PREFIX}{name}", data)
        with pytest.raises(TrustError, match=why):
            victim.check(model_version, onnx)
        for name, data in current.items():  # the next attack starts from the honest repository
            ws.objects.put(f"{PREFIX}{name}", data)

    # 1. Re-signed with the attacker's own keys, naming their ONNX with its correct sha256.
    theirs = tmp_path / "attacker-keys"
    init_keys(theirs)
    ours = {name: ws.objects.get(f"{PREFIX}{name}") for name in ("1.root.json",)}
    sign_state(ws.objects, SigningKeys.load(theirs), fleet(evil, fleet="m-evil"))
    forged = {name: ws.objects.get(f"{PREFIX}{name}") for name in replay}
    ws.objects.put(f"{PREFIX}1.root.json", ours["1.root.json"])
    attack(forged, "m-evil", evil_onnx, "not signed by the fleet's keys")

    # 2. Unsigned: the honest layout, signatures stripped, m-evil added.
    targets = Metadata[Targets].from_bytes(current["targets.json"])
    honest_snapshot = Metadata[Snapshot].from_bytes(current["snapshot.json"])
    honest_timestamp = Metadata[Timestamp].from_bytes(current["timestamp.json"])
    targets.signed.version += 1
    targets.signed.targets["models/m-evil.onnx"] = type(targets.signed.targets["models/m-good.onnx"])(
        evil.onnx_bytes, {"sha256": evil.onnx_sha256}, "models/m-evil.onnx",
        unrecognized_fields={"custom": {"fleet": True}})
    targets.signatures.clear()
    honest_snapshot.signed.version += 1
    honest_snapshot.signed.meta["targets.json"] = MetaFile(targets.signed.version)
    honest_snapshot.signatures.clear()
    honest_timestamp.signed.version += 1
    honest_timestamp.signed.snapshot_meta = MetaFile(honest_snapshot.signed.version)
    honest_timestamp.signatures.clear()
    unsigned = {"targets.json": targets.to_bytes(JSONSerializer()),
                "snapshot.json": honest_snapshot.to_bytes(JSONSerializer()),
                "timestamp.json": honest_timestamp.to_bytes(JSONSerializer())}
    attack(unsigned, "m-evil", evil_onnx, "not signed by the fleet's keys")

    # 3. Expired: signed with the real keys (say, a stolen old set), but past its expiry.
    past = {role: timedelta(days=-1) for role in EXPIRY}
    sign_state(ws.objects, SigningKeys.load(keys), fleet(evil, fleet="m-evil"), lifetimes=past)
    expired = {name: ws.objects.get(f"{PREFIX}{name}") for name in replay}
    attack(expired, "m-evil", evil_onnx, "expired")

    # 4. Replayed: the older, genuinely signed set that named m-old.
    attack(replay, "m-old", old_onnx, "rollback|older")

    # 5. Mix and match: the newest timestamp and snapshot with the old targets (which name m-old), shown to a
    # device fresh from the factory (only its pinned root): a device that saw the newest targets keeps using them.
    attack({"targets.json": replay["targets.json"]}, "m-old", old_onnx, "rollback|older",
           victim=device(site, tmp_path, "fresh"))
    attack({"targets.json": replay["targets.json"]}, "m-old", old_onnx, "not a signed target")

    # After all that, the device still takes a properly signed rollout: m-new to every device in a 100% canary.
    new, new_onnx = model(ws, "m-new")
    sign_state(ws.objects, SigningKeys.load(keys),
               fleet(good, new, fleet="m-good", rollout=ActiveRollout(id="r1", model_id="m-new", canary_pct=100.0)))
    dev.check("m-new", new_onnx)
    with pytest.raises(TrustError, match="not the one signed"):
        dev.check("m-new", new_onnx + b"!")  # the right name, other bytes
    with pytest.raises(TrustError, match="not a signed target"):
        dev.check("m-evil", evil_onnx)


def test_assignment_follows_pins_canary_and_fleet(site, tmp_path: Path) -> None:
    ws, _, _, keys = site
    a, a_onnx = model(ws, "m-a")
    b, b_onnx = model(ws, "m-b")
    other = next(f"cam-{k}" for k in range(1000) if not in_canary(f"cam-{k}", 10.0))
    state = fleet(a, b, fleet="m-a", rollout=ActiveRollout(id="r", model_id="m-b", canary_pct=10.0),
                  pins={DEVICE: "m-a"})
    # The device side's rule agrees with the control plane's answer for every kind of device.
    assert assigned(DEVICE, assignment(state, "m-a")) and not assigned(DEVICE, assignment(state, "m-b"))
    assert assigned(other, assignment(state, "m-a")) and not assigned(other, assignment(state, "m-b"))
    canary = next(f"cam-{k}" for k in range(1000) if in_canary(f"cam-{k}", 10.0))
    assert assigned(canary, assignment(state, "m-b"))
    assert canary_bucket(canary) < 10.0 <= canary_bucket(other)
    sign_state(ws.objects, SigningKeys.load(keys), state)
    with pytest.raises(TrustError, match="not assigned to dock-cam-3"):
        device(site, tmp_path).check("m-b", b_onnx)  # signed, but this device is pinned to m-a
    device(site, tmp_path).check("m-a", a_onnx)


def test_a_rotated_targets_key_is_followed_and_the_old_one_refused(site, tmp_path: Path) -> None:
    ws, _, _, keys = site
    a, a_onnx = model(ws, "m-a")
    dev = device(site, tmp_path)
    old_keys = SigningKeys.load(keys)
    sign_state(ws.objects, old_keys, fleet(a, fleet="m-a"))
    dev.check("m-a", a_onnx)
    rotate_key(keys, "targets")  # root v2, signed by the root key, trusting a new targets key
    assert json.loads((keys / "root.json").read_text())["signed"]["version"] == 2
    b, b_onnx = model(ws, "m-b")
    sign_state(ws.objects, SigningKeys.load(keys), fleet(b, fleet="m-b"))
    dev.check("m-b", b_onnx)  # the device walked root v1 -> v2 and trusts the new key
    with pytest.raises(TrustSetupError, match="not the one root.json trusts"):
        sign_state(ws.objects, SigningKeys(old_keys.signers, keys), fleet(a, fleet="m-a"))


def test_keys_init_refuses_to_overwrite_and_keeps_private_keys_private(tmp_path: Path) -> None:
    root = init_keys(tmp_path / "k")
    assert json.loads(root.read_text())["signed"]["_type"] == "root"
    assert all(((tmp_path / "k" / f"{r}.pem").stat().st_mode & 0o777) == 0o600 for r in ("root", "targets", "online"))
    with pytest.raises(TrustSetupError, match="already holds keys"):
        init_keys(tmp_path / "k")
    with pytest.raises(TrustSetupError, match="no keys.json"):
        SigningKeys.load(tmp_path / "nowhere")


def test_rollout_commands_sign_with_the_workspace_keys_and_warn_without(tmp_path: Path, caplog) -> None:
    from edge.protocol import ReferenceFrame, ReferenceSet
    from feedback.rollout.deployments import pin_device, start_rollout
    from feedback.rollout.publish import Parity, store_artifact
    from store.models import get_model, register_model

    keys = tmp_path / "keys"
    init_keys(keys)
    signed = Workspace(Settings(workspace=tmp_path / "signed", fsync=False, signing_keys=keys))
    unsigned = Workspace(Settings(workspace=tmp_path / "unsigned", fsync=False))
    reference = ReferenceSet(conf=0.25, iou=0.7, box_tol_px=2.0, conf_tol=0.02,
                             frames=[ReferenceFrame(name="f.png", png_base64="")])
    parity = Parity(frames=1, boxes=0, max_box_px=0.0, max_conf_diff=0.0, box_tol_px=1.0, conf_tol=0.01)
    for ws in (signed, unsigned):
        onnx = b"onnx bytes" * 50
        with ws.catalog.connect() as con:
            model_id = register_model(con, ws.blobs.put(b"weights"), classes=["helmet"], imgsz=320)
            record = get_model(con, model_id)
        add_device(ws.catalog, ws.objects, "cam-9")
        with caplog.at_level("WARNING", logger="feedback.rollout.deployments"):
            caplog.clear()
            store_artifact(ws, record, onnx, reference, (320, 320), parity)
            start_rollout(ws, model_id, 100.0)
            pin_device(ws, "cam-9", model_id)
        if ws is signed:
            assert not [r for r in caplog.records if "not signed" in r.message]
            token = add_device(ws.catalog, ws.objects, DEVICE)
            with BackgroundServer(ws.settings) as url:
                TrustedInstaller(keys / "root.json", tmp_path / "dev", url, token, DEVICE).check(model_id, onnx)
            targets = json.loads(ws.objects.get(f"{PREFIX}targets.json"))["signed"]
            assert targets["version"] == 3  # publish, start, pin: one signed version each
            assert targets["targets"][f"models/{model_id}.onnx"]["custom"]["pinned"] == ["cam-9"]
        else:
            assert len([r for r in caplog.records if "not signed" in r.message]) == 3  # on every publish
            assert not ws.objects.exists(f"{PREFIX}targets.json")
