"""The device registry: tokens, revocation, and the published JSON the ingest API reads."""

from __future__ import annotations

import json
import threading

import pytest

from store.devices import (
    REGISTRY_KEY,
    DeviceAuth,
    DeviceError,
    RegistryReader,
    add_device,
    hash_token,
    list_devices,
    publish_registry,
    revoke_device,
    rotate_token,
)


def test_add_list_revoke(catalog, objects):
    token = add_device(catalog, objects, "jetson-1")
    add_device(catalog, objects, "jetson-2")
    assert len(token) >= 40

    devices = list_devices(catalog)
    assert [d.name for d in devices] == ["jetson-1", "jetson-2"]
    assert all(d.created_at.tzinfo and d.revoked_at is None for d in devices)
    assert hash_token(token) not in repr(devices)

    revoke_device(catalog, objects, "jetson-1")
    first = list_devices(catalog)[0].revoked_at
    assert first is not None
    revoke_device(catalog, objects, "jetson-1")  # again: a no-op, not an error
    assert list_devices(catalog)[0].revoked_at == first


def test_rotate_replaces_the_token_and_reinstates_a_revoked_device(catalog, objects):
    old = add_device(catalog, objects, "jetson-1")
    revoke_device(catalog, objects, "jetson-1")
    new = rotate_token(catalog, objects, "jetson-1")
    assert new != old and list_devices(catalog)[0].revoked_at is None
    published = json.loads(objects.get(REGISTRY_KEY))
    text = json.dumps(published)
    assert hash_token(new) in text and hash_token(old) not in text
    with pytest.raises(DeviceError, match="no device named 'ghost'"):
        rotate_token(catalog, objects, "ghost")


@pytest.mark.parametrize("name", ["../x", ".hidden", "a b", "", "a/b", "x" * 65])
def test_bad_names_are_refused(catalog, objects, name):
    with pytest.raises(DeviceError, match="not allowed"):
        add_device(catalog, objects, name)
    assert list_devices(catalog) == []


def test_duplicate_and_unknown_names(catalog, objects):
    add_device(catalog, objects, "jetson-1")
    with pytest.raises(DeviceError, match="already exists"):
        add_device(catalog, objects, "jetson-1")
    with pytest.raises(DeviceError, match="no device named 'ghost'"):
        revoke_device(catalog, objects, "ghost")


def test_published_registry_holds_hashes_never_tokens(catalog, objects):
    token = add_device(catalog, objects, "jetson-1")
    raw = objects.get(REGISTRY_KEY).decode()
    registry = json.loads(raw)
    assert token not in raw
    assert registry["version"] == 1 and registry["published_at"]
    assert registry["devices"] == {hash_token(token): {"device": "jetson-1", "revoked": False}}

    revoke_device(catalog, objects, "jetson-1")
    assert json.loads(objects.get(REGISTRY_KEY))["devices"][hash_token(token)]["revoked"] is True


def test_reader_sees_changes_after_ttl(catalog, objects):
    now = [100.0]
    reader = RegistryReader(objects, ttl_s=2.0, clock=lambda: now[0])
    assert reader.lookup("anything") is None  # nothing published yet

    token = add_device(catalog, objects, "jetson-1")
    now[0] += 2.0
    assert reader.lookup(token) is None  # the empty registry is still cached at exactly the ttl
    now[0] += 0.5
    assert reader.lookup(token) == DeviceAuth(device="jetson-1", revoked=False)
    assert reader.lookup(token + "x") is None

    revoke_device(catalog, objects, "jetson-1")
    now[0] += 1.0
    assert reader.lookup(token).revoked is False  # served from the cache until the ttl runs out
    now[0] += 1.5
    assert reader.lookup(token) == DeviceAuth(device="jetson-1", revoked=True)


def test_publish_registry_rebuilds_a_lost_file(catalog, objects):
    token = add_device(catalog, objects, "jetson-1")
    objects.delete(REGISTRY_KEY)
    publish_registry(catalog, objects)
    assert RegistryReader(objects).lookup(token) == DeviceAuth(device="jetson-1", revoked=False)


def test_reader_is_consistent_under_threads(catalog, objects):
    tokens = {add_device(catalog, objects, f"jetson-{i}"): f"jetson-{i}" for i in range(5)}
    reader = RegistryReader(objects, ttl_s=0)  # refresh on every lookup: the worst case
    wrong: list[str] = []

    def hammer() -> None:
        for _ in range(100):
            for token, name in tokens.items():
                if reader.lookup(token) != DeviceAuth(device=name, revoked=False):
                    wrong.append(name)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
