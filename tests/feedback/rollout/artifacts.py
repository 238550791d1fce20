"""Building blocks for rollout tests: a workspace holding real PPE holdout images, and artifacts made from
one real ONNX export with the publisher's own functions (stamp, reference set, store).

Publishing runs ultralytics' export and the .pt parity check, minutes on two busy cores; stamping copies
of one export under other model ids gives distinct artifacts (other bytes, other sha256) of the very
weights whose parity was checked once.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from edge.protocol import ArtifactManifest, ReferenceSet
from feedback.datasets.yolo_import import import_yolo
from feedback.rollout.deployments import publish_desired_state
from feedback.rollout.publish import Parity, check_parity, reference_set, stamp_version, store_artifact
from store.blobs import sha256_hex
from store.devices import add_device
from store.models import get_model, register_model
from store.settings import Settings, Workspace

NAMES = ["helmet", "no_helmet", "no_wear", "wear"]


def holdout_workspace(root: Path, ppe_dir: Path, n: int = 8, **settings: object) -> Workspace:
    """A workspace whose catalog holds the first `n` PPE val images as real holdout."""
    folder = root / "holdout"
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    val = ppe_dir / "val"
    for image in sorted((val / "images").glob("*.jpg"))[:n]:
        (folder / "images" / image.name).symlink_to(image)
        (folder / "labels" / f"{image.stem}.txt").symlink_to(val / "labels" / f"{image.stem}.txt")
    ws = Workspace(Settings(workspace=root / "ws", **settings))  # type: ignore[arg-type]
    import_yolo(ws, folder, "holdout", names=NAMES, progress=False)
    return ws


def frames(ppe_dir: Path, n: int = 4) -> list[Path]:
    return sorted((ppe_dir / "val" / "images").glob("*.jpg"))[:n]


def parity_of(pt: Path, onnx: Path, ppe_dir: Path) -> Parity:
    return check_parity(pt, onnx, frames(ppe_dir))


def artifact(ws: Workspace, onnx: Path, label: str, parity: Parity, ppe_dir: Path, *,
             classes: list[str] | None = None, onnx_bytes: bytes | None = None,
             reference: ReferenceSet | None = None) -> ArtifactManifest:
    """Register model `label` and store an artifact for it: `onnx` stamped with its id (or `onnx_bytes` as
    they are), with a reference set made from those bytes on PPE frames (or `reference` as it is)."""
    with ws.catalog.connect() as con:
        model_id = register_model(con, sha256_hex(label.encode()), classes=classes or NAMES, imgsz=320,
                                  origin="external", note=f"test artifact {label}")
        model = get_model(con, model_id)
    assert model is not None
    work = ws.settings.workspace / "test-artifacts" / label
    work.mkdir(parents=True, exist_ok=True)
    stamped = work / "model.onnx"
    shutil.copyfile(onnx, stamped)
    stamp_version(stamped, model_id)
    reference = reference or reference_set(stamped, frames(ppe_dir), 3)
    data = onnx_bytes if onnx_bytes is not None else stamped.read_bytes()
    return store_artifact(ws, model, data, reference, (320, 320), parity)


def gate_fleet(root: Path, ppe_dir: Path, ppe_pt: Path, ppe_onnx: Path,
               labels: list[str]) -> tuple[Workspace, list[str]]:
    """A two-image holdout workspace with an artifact for each of `labels` (one export, its parity checked once)
    and the devices gate-east and gate-west (in a 50% canary, and not); returns it and the models' versions."""
    ws = holdout_workspace(root, ppe_dir, n=2)
    parity = parity_of(ppe_pt, ppe_onnx, ppe_dir)
    models = [artifact(ws, ppe_onnx, label, parity, ppe_dir).model_version for label in labels]
    for device in ("gate-east", "gate-west"):
        add_device(ws.catalog, ws.objects, device)
    return ws, models


def clear_deployments(ws: Workspace, tables: list[str]) -> None:
    """Empty `tables` and publish the desired state that leaves: a module's tests share one fleet (publishing
    artifacts takes minutes), and each starts from no rollout."""
    with ws.catalog.connect() as con:
        for table in tables:
            con.execute(f"DELETE FROM {table}")
        publish_desired_state(con, ws.objects)
