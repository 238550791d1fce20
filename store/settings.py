"""Where the workspace lives and its limits, from `edgeloop.toml` and `EDGELOOP_*` env vars.

`Workspace` turns those settings into the stores everything else uses.
"""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from store.blobs import BlobStore
from store.catalog import Catalog
from store.inbox import Inbox
from store.objects import ObjectStore


class Settings(BaseSettings):
    # Unknown keys in edgeloop.toml are errors, so a typo can't silently do nothing.
    model_config = SettingsConfigDict(env_prefix="EDGELOOP_", toml_file="edgeloop.toml", extra="forbid")

    workspace: Path = Path(".edgeloop")
    storage_url: str | None = None  # None: the workspace folder itself
    catalog_path: Path | None = None  # None: workspace/catalog.duckdb
    max_upload_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    registry_ttl_s: float = 2.0
    fsync: bool = True
    # Review: where Label Studio is, and the API address annotators' browsers can reach.
    label_studio_url: str | None = None
    label_studio_token: str | None = None
    public_url: str | None = None
    # CLIP for diverse selection: a local weights file, or a pretrained tag fetched when online.
    clip_model: str = "ViT-S-32-alt"
    clip_weights: Path | None = None
    clip_pretrained: str | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: arguments, then the environment, then the file.
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)


class Workspace:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = s = settings or Settings()
        if s.storage_url is None or s.catalog_path is None:
            s.workspace.mkdir(parents=True, exist_ok=True)
        self.objects = ObjectStore(s.storage_url or s.workspace, fsync=s.fsync)
        self.blobs = BlobStore(self.objects)
        self.catalog = Catalog(s.catalog_path or s.workspace / "catalog.duckdb")
        self.inbox = Inbox(self.objects)
