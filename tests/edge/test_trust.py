"""A device with a pinned root (`agent --trust-root`) refuses a model the fleet's keys did not sign, says why in
its heartbeat state, keeps running its model, and takes the same model once a signed rollout names it."""

from __future__ import annotations

from pathlib import Path

from edge.trust import TrustedInstaller
from feedback.rollout.deployments import desired_state
from feedback.rollout.trust import SigningKeys, init_keys, sign_state
from tests.edge.test_updater import DEVICE, Device, deploy, site  # noqa: F401 (fixtures)


def test_an_unsigned_deployment_is_refused_and_a_signed_one_taken(site, deploy, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    init_keys(keys)
    nxt = site["next"]
    trust = TrustedInstaller(root=keys / "root.json", metadata_dir=tmp_path / "models" / "tuf", server=site["url"],
                             token=site["token"], device=DEVICE)
    with Device(site, tmp_path / "models", trust=trust, retry_refused_s=0.0) as device:
        installed = device.version
        device.until(lambda: device.updater.polls > 0, "a first poll")
        # Someone with write access to the catalog or the bucket names a model for this device; nothing signed.
        deploy("next")
        device.until(lambda: device.updater.report()[0] == "refused", "the refusal")
        state, target, detail = device.updater.report()
        assert target == nxt.model_version and "not signed for this fleet" in detail
        assert device.version == installed
        for _ in range(20):  # it keeps running its own model, frame after frame
            device.step()
        assert device.version == installed
        # The operator signs the same desired state with the fleet's keys: now it is taken.
        with site["ws"].catalog.connect() as con:
            sign_state(site["ws"].objects, SigningKeys.load(keys), desired_state(con))
        device.until(lambda: device.version == nxt.model_version, "the signed model's swap")
