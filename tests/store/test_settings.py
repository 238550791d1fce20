"""Settings from defaults, edgeloop.toml and EDGELOOP_* env vars; Workspace wiring."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from store.settings import Settings, Workspace


@pytest.fixture(autouse=True)
def clean_cwd_and_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in os.environ:
        if name.startswith("EDGELOOP_"):
            monkeypatch.delenv(name)


def test_defaults():
    s = Settings()
    assert s.workspace == Path(".edgeloop")
    assert (s.storage_url, s.catalog_path) == (None, None)
    assert s.max_upload_bytes == 10 * 1024 * 1024
    assert (s.max_image_pixels, s.registry_ttl_s, s.fsync) == (40_000_000, 2.0, True)


def test_env_wins_over_toml(tmp_path, monkeypatch):
    (tmp_path / "edgeloop.toml").write_text('max_upload_bytes = 5\nregistry_ttl_s = 9.5\nstorage_url = "memory://x"\n')
    monkeypatch.setenv("EDGELOOP_MAX_UPLOAD_BYTES", "7")
    monkeypatch.setenv("EDGELOOP_FSYNC", "false")
    s = Settings()
    assert s.max_upload_bytes == 7
    assert s.registry_ttl_s == 9.5
    assert s.storage_url == "memory://x"
    assert s.fsync is False


def test_unknown_toml_key_is_an_error(tmp_path):
    (tmp_path / "edgeloop.toml").write_text("max_upload_byte = 5\n")
    with pytest.raises(ValidationError, match="max_upload_byte"):
        Settings()


def test_workspace_defaults_to_one_local_folder(tmp_path):
    ws = Workspace(Settings())
    assert (tmp_path / ".edgeloop").is_dir()
    assert ws.catalog.path == Path(".edgeloop/catalog.duckdb")
    sha = ws.blobs.put(b"x")
    assert ws.blobs.local_path(sha).resolve().is_relative_to(tmp_path / ".edgeloop")
    assert ws.inbox.backlog() == {"captures": 0, "heartbeats": 0}
    with ws.catalog.connect() as con:
        assert con.execute("SELECT count(*) FROM captures").fetchone() == (0,)


def test_workspace_with_remote_storage_and_explicit_catalog(tmp_path):
    ws = Workspace(Settings(storage_url="memory://ws-test", catalog_path=tmp_path / "db" / "c.duckdb", fsync=False))
    assert not (tmp_path / ".edgeloop").exists()  # nothing local to hold
    assert ws.objects.local_path("k") is None
    assert ws.objects.fsync is False
    assert ws.catalog.path == tmp_path / "db" / "c.duckdb"
