"""Signed rollouts (DESIGN decision 10): the TUF repository devices check every model against.

Root and targets keys are files the operator keeps away from the server (`edgeloop keys init --out DIR`); the
online key signs snapshot and timestamp. Each desired state becomes a new targets version naming every deployable
ONNX (hashes, length) with its assignment, so access to the bucket or the API host is not enough to ship a model.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from securesystemslib.signer import CryptoSigner, Signer, SSlibKey
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from edge.trust import model_target
from feedback.rollout.desired import DesiredState
from store.objects import ObjectStore

log = logging.getLogger(__name__)

PREFIX = "tuf/"  # in the object store; the ingest API serves it under /v1/tuf/
ROLES = ("root", "targets", "online")  # online: snapshot and timestamp, the key a server may hold
EXPIRY = {"root": timedelta(days=365), "targets": timedelta(days=90), "snapshot": timedelta(days=30),
          "timestamp": timedelta(days=7)}


class TrustSetupError(ValueError):
    """The keys folder is missing, incomplete, or not the one the repository was made with."""


@dataclass(frozen=True)
class SigningKeys:
    """The signers found in a keys folder: `<role>.pem` private keys and `keys.json` public ones."""

    signers: dict[str, Signer]
    folder: Path

    @classmethod
    def load(cls, folder: Path | str) -> SigningKeys:
        folder = Path(folder)
        public = folder / "keys.json"
        if not public.is_file():
            raise TrustSetupError(f"{folder}: no keys.json (make keys with `edgeloop keys init --out {folder}`)")
        keys = json.loads(public.read_text())
        signers = {}
        for role in ROLES:
            if (folder / f"{role}.pem").is_file():
                key = SSlibKey.from_dict(keys[role]["keyid"], dict(keys[role]["key"]))
                signers[role] = CryptoSigner.from_priv_key_uri(f"file2:{folder / f'{role}.pem'}", key)
        if "targets" not in signers or "online" not in signers:
            raise TrustSetupError(f"{folder}: signing a rollout needs targets.pem and online.pem")
        return cls(signers, folder)


def init_keys(out: Path | str) -> Path:
    """Make the root, targets and online keys in `out` (private keys readable by the owner only) and the
    first root metadata, `root.json`: the file each device pins (`edgeloop agent --trust-root`)."""
    out = Path(out)
    if (out / "keys.json").exists():
        raise TrustSetupError(f"{out} already holds keys; rotate them with `edgeloop keys rotate` instead")
    out.mkdir(parents=True, exist_ok=True)
    signers = {role: CryptoSigner.generate_ed25519() for role in ROLES}
    public = {}
    for role, signer in signers.items():
        path = out / f"{role}.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(signer.private_bytes)
        public[role] = {"keyid": signer.public_key.keyid, "key": signer.public_key.to_dict()}
    (out / "keys.json").write_text(json.dumps(public, indent=1) + "\n")
    root = Root(expires=_expiry("root"), consistent_snapshot=False)
    root.add_key(signers["root"].public_key, Root.type)
    root.add_key(signers["targets"].public_key, Targets.type)
    for role in (Snapshot.type, Timestamp.type):
        root.add_key(signers["online"].public_key, role)
    metadata = Metadata(root)
    metadata.sign(signers["root"])
    data = metadata.to_bytes(JSONSerializer())
    (out / "1.root.json").write_bytes(data)  # every version is kept: devices walk the chain up from theirs
    (out / "root.json").write_bytes(data)
    return out / "root.json"


def rotate_key(folder: Path | str, role: str) -> Path:
    """Replace `role`'s key (targets or online; root too) with a new one and write root.json one version up,
    signed by the old root key and, for a root rotation, the new one as well; devices follow the chain."""
    folder = Path(folder)
    if role not in ROLES:
        raise TrustSetupError(f"role {role!r} is not one of {', '.join(ROLES)}")
    root_md = Metadata[Root].from_bytes((folder / "root.json").read_bytes())
    keys = json.loads((folder / "keys.json").read_text())
    old_root = CryptoSigner.from_priv_key_uri(f"file2:{folder / 'root.pem'}",
                                              SSlibKey.from_dict(keys["root"]["keyid"], dict(keys["root"]["key"])))
    new = CryptoSigner.generate_ed25519()
    roles = {"root": (Root.type,), "targets": (Targets.type,), "online": (Snapshot.type, Timestamp.type)}[role]
    for name in roles:
        for keyid in list(root_md.signed.roles[name].keyids):
            root_md.signed.revoke_key(keyid, name)
        root_md.signed.add_key(new.public_key, name)
    root_md.signed.version += 1
    root_md.signed.expires = _expiry("root")
    root_md.signatures.clear()
    root_md.sign(old_root, append=True)
    if role == "root":
        root_md.sign(new, append=True)
    tmp = folder / f"{role}.pem.new"
    tmp.write_bytes(new.private_bytes)
    os.chmod(tmp, 0o600)
    tmp.replace(folder / f"{role}.pem")
    keys[role] = {"keyid": new.public_key.keyid, "key": new.public_key.to_dict()}
    (folder / "keys.json").write_text(json.dumps(keys, indent=1) + "\n")
    data = root_md.to_bytes(JSONSerializer())
    (folder / f"{root_md.signed.version}.root.json").write_bytes(data)
    (folder / "root.json").write_bytes(data)
    return folder / "root.json"


def assignment(state: DesiredState, model_id: str) -> dict:
    """Who may run `model_id`, as edge.trust.assigned reads it: devices pinned to it, devices pinned elsewhere,
    whether it is the fleet's model, and the canary share while it is the rollout's."""
    canary = state.rollout.canary_pct if state.rollout and state.rollout.model_id == model_id else None
    # A string: TUF's canonical JSON has no floats, and repr() round-trips the float exactly.
    return {"pinned": sorted(d for d, m in state.pins.items() if m == model_id),
            "excluded": sorted(d for d, m in state.pins.items() if m != model_id),
            "fleet": state.fleet == model_id, "canary_pct": None if canary is None else repr(float(canary))}


def sign_state(objects: ObjectStore, keys: SigningKeys, state: DesiredState,
               lifetimes: Mapping[str, timedelta] = EXPIRY) -> int:
    """A new targets version naming every artifact of `state` with its assignment, then snapshot and timestamp;
    the root the keys folder holds is published too (devices walk root versions up from the one they pinned).
    Returns the targets version."""
    root_md = Metadata[Root].from_bytes((keys.folder / "root.json").read_bytes())
    root = root_md.signed
    _check_key(root, Targets.type, keys.signers["targets"])
    _check_key(root, Timestamp.type, keys.signers["online"])
    for version in range(1, root.version + 1):
        if version == root.version or not objects.exists(f"{PREFIX}{version}.root.json"):
            _publish_root(objects, keys.folder, version)
    previous = _read(objects, "targets.json", Targets)
    targets = Targets(version=(previous.version + 1) if previous else 1, expires=_expiry("targets", lifetimes))
    for model_id, manifest in state.artifacts.items():
        info = TargetFile(manifest.onnx_bytes, {"sha256": manifest.onnx_sha256}, model_target(model_id),
                          unrecognized_fields={"custom": {
                              "model_version": model_id, "classes": manifest.classes,
                              "reference_sha256": manifest.reference_sha256, **assignment(state, model_id)}})
        targets.targets[info.path] = info
    targets_bytes = _signed(targets, keys.signers["targets"])
    old_snapshot = _read(objects, "snapshot.json", Snapshot)
    snapshot = Snapshot(version=(old_snapshot.version + 1) if old_snapshot else 1,
                        expires=_expiry("snapshot", lifetimes),
                        meta={"targets.json": MetaFile(targets.version)})
    snapshot_bytes = _signed(snapshot, keys.signers["online"])
    old_timestamp = _read(objects, "timestamp.json", Timestamp)
    timestamp = Timestamp(version=(old_timestamp.version + 1) if old_timestamp else 1,
                          expires=_expiry("timestamp", lifetimes), snapshot_meta=MetaFile(snapshot.version))
    # Written bottom up: a device reading between two puts finds an older, still consistent set.
    objects.put(f"{PREFIX}targets.json", targets_bytes)
    objects.put(f"{PREFIX}snapshot.json", snapshot_bytes)
    objects.put(f"{PREFIX}timestamp.json", _signed(timestamp, keys.signers["online"]))
    return targets.version


def _publish_root(objects: ObjectStore, folder: Path, version: int) -> None:
    """Each root version devices may need to walk through, as the keys folder keeps them (N.root.json)."""
    path = folder / f"{version}.root.json"
    if not path.is_file():
        raise TrustSetupError(f"{folder}: root version {version} is missing; devices cannot walk up to the new root")
    objects.put(f"{PREFIX}{version}.root.json", path.read_bytes())


def _check_key(root: Root, role: str, signer: Signer) -> None:
    if signer.public_key.keyid not in root.roles[role].keyids:
        raise TrustSetupError(f"the {role} key in the keys folder is not the one root.json trusts")


def _signed(signed: Targets | Snapshot | Timestamp, signer: Signer) -> bytes:
    metadata = Metadata(signed)
    metadata.sign(signer)
    return metadata.to_bytes(JSONSerializer())


def _read(objects: ObjectStore, name: str, kind: type) -> Targets | Snapshot | Timestamp | None:
    """The repository's current version of a role; only its version number is used, never its trust."""
    key = f"{PREFIX}{name}"
    if not objects.exists(key):
        return None
    return Metadata[kind].from_bytes(objects.get(key)).signed


def _expiry(role: str, lifetimes: Mapping[str, timedelta] = EXPIRY) -> datetime:
    return (datetime.now(timezone.utc) + lifetimes[role]).replace(microsecond=0)

