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
    # Failure mining (`edgeloop clusters` / `prompts`). Prompts name a class by the first of its class_phrases
    # (below; a class without phrases by its name in words). edit_phrases: edits that turn one class into
    # another, keyed "from->to" (a pair missing here gets a generic "turn X into Y"). attribute_vocabulary: per
    # group, the phrases CLIP tags failure crops with when CLIP weights are configured; groups nothing measures
    # also give prompt variants their choices. A table in edgeloop.toml replaces the whole default.
    edit_phrases: dict[str, str] = {
        "helmet->no_helmet": "remove the hard hat from this worker's head, showing bare hair",
        "no_helmet->helmet": "put a hard hat on this worker's bare head",
        "wear->no_wear": "replace this worker's high-visibility vest with ordinary clothes",
        "no_wear->wear": "dress this worker in a high-visibility vest",
    }
    attribute_vocabulary: dict[str, list[str]] = {
        "environment": ["a construction site", "a warehouse", "a factory floor", "a road works site",
                        "a scaffolding platform"],
        "viewpoint": ["a high-mounted security camera", "a camera at eye level", "a camera looking down steeply"],
    }
    # Schedules of `edgeloop deploy` (cron, UTC): override any of them in edgeloop.toml.
    schedule_ingest: str = "*/5 * * * *"
    schedule_review_pull: str = "*/10 * * * *"
    schedule_review_push: str = "0 * * * *"
    schedule_cycle: str = "0 2 * * *"  # the improvement cycle, nightly
    # Training on Vertex AI (`edgeloop train --backend vertex`): one CustomJob per run. The job reads the data set
    # from storage_url (so a gs:// bucket) and writes its weights under the staging bucket.
    vertex_project: str | None = None
    vertex_region: str = "us-central1"
    vertex_staging_bucket: str | None = None  # gs://bucket[/folder]; each job's base_output_dir lies under it
    vertex_machine_type: str = "n1-standard-8"
    vertex_accelerator_type: str | None = "NVIDIA_TESLA_T4"  # an AcceleratorType name; None: CPU only
    vertex_accelerator_count: int = 1
    vertex_image: str | None = None  # a container with edgeloop[train,server,vertex] and gcsfs on its PATH
    vertex_api_endpoint: str | None = None  # None: the region's; a private endpoint or the tests' stub (http:// kept)
    vertex_token: str | None = None  # a static bearer token; None: Application Default Credentials
    vertex_poll_s: float = 30.0  # between two reads of a job's state
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
    # Local generators and the open-vocabulary teacher (the gpu-gen extra). Each model is a saved folder or a hub
    # id, fetched only when online. They need a GPU (fp16) unless diffusion_allow_cpu: slow, for tests and trials.
    gligen_model: str = "masterful/gligen-1-4-generation-text-box"
    sd_inpaint_model: str = "stable-diffusion-v1-5/stable-diffusion-inpainting"
    qwen_image_model: str = "Qwen/Qwen-Image"
    qwen_image_edit_model: str = "Qwen/Qwen-Image-Edit"
    diffusion_batch_size: int = 4  # images per pipeline call; lower it when the GPU runs out of memory
    diffusion_steps: int = 30
    diffusion_allow_cpu: bool = False
    # Class name -> phrases open-vocabulary models understand ("no_helmet": ["bare head"]); the first one also
    # grounds the generators' objects. A class without phrases is asked for by its name in words.
    class_phrases: dict[str, list[str]] = {}
    # Classes the site cares most about (alerts): training favours them like rare ones, and the gate refuses a
    # model that sees them less often at its operating point. Each class's threshold is chosen for this precision
    # (one for all, or per class name) on a split carved from training data.
    watch_classes: list[str] = []
    # The folder `edgeloop keys init` made (targets and online keys): publish and rollout sign what devices may
    # install with them. None: unsigned, as before, with a warning on every publish.
    signing_keys: Path | None = None
    operating_precision: float | dict[str, float] = 0.5
    # The review cost model: seconds per reviewer action (kept, deleted, fixed, added per box; skipped per capture)
    # where Label Studio measured no lead_time. Unset actions keep the defaults in feedback.review.effort.
    review_seconds: dict[str, float] = {}
    grounding_model: str = "IDEA-Research/grounding-dino-tiny"
    sam_model: str | None = None  # e.g. "facebook/sam-vit-base": each teacher box becomes its mask's tight box
    grounding_box_threshold: float = 0.35  # GroundingDINO's own defaults
    grounding_text_threshold: float = 0.25

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
