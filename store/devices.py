"""The device registry: who may upload, kept in the catalog and published as JSON for the API.

The ingest API never opens DuckDB (it may run as many replicas), so it reads the published file.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import duckdb

from edge.protocol import is_safe_name, utc_now
from store.catalog import Catalog
from store.objects import ObjectStore

REGISTRY_KEY = "registry/devices.json"


class DeviceError(Exception):
    """A registry change that cannot be made: unknown, duplicate or badly named device."""


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class DeviceAuth:
    device: str
    revoked: bool


def hash_token(token: str) -> str:
    # Tokens are long random strings, so a plain (unsalted) sha256 is enough to store them.
    return hashlib.sha256(token.encode()).hexdigest()


def add_device(catalog: Catalog, objects: ObjectStore, name: str) -> str:
    """Register `name` and return its token; this is the only time the token is seen."""
    if not is_safe_name(name):
        raise DeviceError(f"device name {name!r} is not allowed: use letters, digits, '_', '.', '-' (max 64)")
    token = secrets.token_urlsafe(32)
    with catalog.connect() as con:
        try:
            con.execute("INSERT INTO devices VALUES (?, ?, now(), NULL)", [name, hash_token(token)])
        except duckdb.ConstraintException:
            raise DeviceError(f"device {name!r} already exists") from None
        _publish(con, objects)
    return token


def list_devices(catalog: Catalog) -> list[DeviceInfo]:
    with catalog.connect() as con:
        rows = con.execute("SELECT name, created_at, revoked_at FROM devices ORDER BY name").fetchall()
    return [DeviceInfo(*row) for row in rows]


def revoke_device(catalog: Catalog, objects: ObjectStore, name: str) -> None:
    """Revoke `name`'s token; revoking twice keeps the first revocation time."""
    with catalog.connect() as con:
        if not con.execute("SELECT 1 FROM devices WHERE name = ?", [name]).fetchone():
            raise DeviceError(f"no device named {name!r}")
        con.execute("UPDATE devices SET revoked_at = now() WHERE name = ? AND revoked_at IS NULL", [name])
        _publish(con, objects)


def rotate_token(catalog: Catalog, objects: ObjectStore, name: str) -> str:
    """Give `name` a new token and return it (seen only this once). The old token stops working at once
    (it becomes unknown), and a revoked device is active again: this is how a device gets back in."""
    token = secrets.token_urlsafe(32)
    with catalog.connect() as con:
        if not con.execute("SELECT 1 FROM devices WHERE name = ?", [name]).fetchall():
            raise DeviceError(f"no device named {name!r}")
        con.execute("UPDATE devices SET token_sha256 = ?, revoked_at = NULL WHERE name = ?", [hash_token(token), name])
        _publish(con, objects)
    return token


def publish_registry(catalog: Catalog, objects: ObjectStore) -> None:
    with catalog.connect() as con:
        _publish(con, objects)


def _publish(con: duckdb.DuckDBPyConnection, objects: ObjectStore) -> None:
    # Written while the caller still holds the catalog lock, so two concurrent changes
    # can't publish out of order and resurrect a revoked token.
    rows = con.execute("SELECT token_sha256, name, revoked_at IS NOT NULL FROM devices").fetchall()
    registry = {
        "version": 1,
        "published_at": utc_now().isoformat(),
        "devices": {sha: {"device": name, "revoked": revoked} for sha, name, revoked in rows},
    }
    objects.put(REGISTRY_KEY, json.dumps(registry, indent=1, sort_keys=True).encode())


class RegistryReader:
    """Answers "whose token is this?" from the published registry, re-read every `ttl_s` seconds of `clock`."""

    def __init__(self, objects: ObjectStore, ttl_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.objects = objects
        self.ttl_s = ttl_s
        self._clock = clock
        self._devices: dict[str, DeviceAuth] = {}
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def lookup(self, token: str) -> DeviceAuth | None:
        if self._clock() - self._read_at > self.ttl_s:
            self._refresh()
        return self._devices.get(hash_token(token))

    def _refresh(self) -> None:
        with self._lock:
            if self._clock() - self._read_at <= self.ttl_s:
                return  # another thread refreshed while we waited
            try:
                registry = json.loads(self.objects.get(REGISTRY_KEY))
            except KeyError:
                registry = {"devices": {}}  # nothing published yet: no device may upload
            # Swapping in a whole new dict keeps readers lock-free.
            self._devices = {
                sha: DeviceAuth(device=d["device"], revoked=d["revoked"]) for sha, d in registry["devices"].items()
            }
            self._read_at = self._clock()
