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
    # Cloud generators (google-genai on Vertex AI). Project and location fall back to GOOGLE_CLOUD_PROJECT /
    # GOOGLE_CLOUD_LOCATION; credentials are Application Default Credentials unless a static bearer token is set.
    gcp_project: str | None = None
    gcp_location: str | None = None
    genai_token: str | None = None
    genai_base_url: str | None = None  # another endpoint: a private gateway, the tests' stub
    gemini_image_model: str = "gemini-2.5-flash-image"  # the gemini and gemini-edit generators
    imagen_model: str = "imagen-4.0-generate-001"  # Google retired Imagen in 2026; kept for who still has it
    imagen_edit_model: str = "imagen-3.0-capability-001"
    genai_max_attempts: int = 5  # per call, on 429 and 5xx, with exponential backoff
    # USD per image, what --max-cost-usd counts (list prices, late 2026); a model missing here can't be capped.
    genai_image_cost_usd: dict[str, float] = {
        "gemini-2.5-flash-image": 0.039,
        "gemini-3-pro-image-preview": 0.134,
        "imagen-4.0-generate-001": 0.04,
        "imagen-4.0-fast-generate-001": 0.02,
        "imagen-4.0-ultra-generate-001": 0.06,
        "imagen-3.0-generate-002": 0.04,
        "imagen-3.0-capability-001": 0.04,
    }

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
