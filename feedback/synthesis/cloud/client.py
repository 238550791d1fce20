"""Vertex AI image models through google-genai, for the cloud generators: the client, and every paid call's guard.

A call is answered from the on-disk cache when it was made before, refused before it would pass the cost cap,
retried with backoff on 429/5xx, and a retired or missing model becomes an error naming its replacement.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from google import genai
from google.genai import errors, types

from store.settings import Settings

REPLACEMENT_MODEL = "gemini-2.5-flash-image"
DEFAULT_LOCATION = "us-central1"  # serves both the Gemini image models and (while they last) Imagen
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
# Vertex says "Publisher Model `...` was not found or your project does not have access to it" for a retired id;
# a model on its way out may instead answer 400 FAILED_PRECONDITION naming its retirement.
GONE = re.compile(
    r"not found|retired|discontinued|deprecated|no longer (available|supported)|shut ?down", re.IGNORECASE
)


class CloudError(RuntimeError):
    """A cloud call that cannot succeed as configured; the message says what to change."""


class ModelUnavailable(CloudError):
    """Vertex does not serve the model id (retired, misspelt, or not enabled for the project)."""


class OverBudget(Exception):
    """The next call would spend past `max_cost_usd`; nothing was sent."""

    def __init__(self, spent_usd: float, next_usd: float, max_usd: float) -> None:
        self.spent_usd, self.next_usd, self.max_usd = spent_usd, next_usd, max_usd
        super().__init__(
            f"max_cost_usd {max_usd:.3f} reached: ${spent_usd:.3f} spent, the next image costs ${next_usd:.3f}"
        )


def make_client(settings: Settings) -> genai.Client:
    """A Vertex AI client: project and location from settings or GOOGLE_CLOUD_*, a static token or ADC."""
    project = settings.gcp_project or os.environ.get("GOOGLE_CLOUD_PROJECT")
    location = settings.gcp_location or os.environ.get("GOOGLE_CLOUD_LOCATION") or DEFAULT_LOCATION
    if not project:
        raise CloudError(
            "no Google Cloud project for the cloud generators: set EDGELOOP_GCP_PROJECT or GOOGLE_CLOUD_PROJECT"
        )
    if settings.genai_token:
        from google.oauth2.credentials import Credentials

        credentials = Credentials(token=settings.genai_token)
    else:
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError

        # Loaded here rather than at the first call, so a missing login fails before any work is done.
        try:
            credentials, _ = google.auth.default(scopes=SCOPES)
        except DefaultCredentialsError as e:
            raise CloudError(
                "no Google credentials for Vertex AI: run `gcloud auth application-default login`, set "
                f"GOOGLE_APPLICATION_CREDENTIALS, or give a bearer token in EDGELOOP_GENAI_TOKEN ({e})"
            ) from e
    http_options = types.HttpOptions(base_url=settings.genai_base_url) if settings.genai_base_url else None
    return genai.Client(
        vertexai=True, project=project, location=location, credentials=credentials, http_options=http_options
    )


@dataclass(frozen=True)
class Answer:
    """What a call produced: encoded images, or why there are none (a safety filter, an empty answer)."""

    images: tuple[bytes, ...]
    refusal: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"images": [base64.b64encode(i).decode() for i in self.images], "refusal": self.refusal}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Answer:
        return cls(images=tuple(base64.b64decode(i) for i in data["images"]), refusal=data["refusal"])


def _name(value: object) -> str:
    return str(getattr(value, "value", value))


def content_answer(response: types.GenerateContentResponse) -> Answer:
    """The image parts of the first candidate, or the reason the model gave none."""
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason:
        why = f": {feedback.block_reason_message}" if feedback.block_reason_message else ""
        return Answer((), f"prompt blocked: {_name(feedback.block_reason)}{why}")
    if not response.candidates:
        return Answer((), "no candidate in the answer")
    candidate = response.candidates[0]
    parts = (candidate.content.parts if candidate.content else None) or []
    # Thinking image models (gemini-3-pro-image) send draft images marked as thoughts before the answer.
    images = tuple(
        p.inline_data.data
        for p in parts
        if p.inline_data is not None
        and p.inline_data.data
        and (p.inline_data.mime_type or "").startswith("image/")
        and not p.thought
    )
    if images:
        return Answer(images)
    reason = _name(candidate.finish_reason) if candidate.finish_reason else "STOP"
    details = [candidate.finish_message] if candidate.finish_message else []
    details += [f"{_name(r.category)} blocked" for r in candidate.safety_ratings or [] if r.blocked]
    if reason == "STOP":  # the model answered in words only, often a refusal it explains
        text = " ".join(p.text for p in parts if p.text)[:200]
        return Answer((), "no image in the answer" + (f": {text}" if text else ""))
    return Answer((), f"finish reason {reason}" + (f": {'; '.join(details)}" if details else ""))


def images_answer(response: types.GenerateImagesResponse | types.EditImageResponse) -> Answer:
    """Imagen's images, or its Responsible-AI filter reasons when it withheld them."""
    generated = response.generated_images or []
    images = tuple(g.image.image_bytes for g in generated if g.image is not None and g.image.image_bytes)
    if images:
        return Answer(images)
    reasons = [g.rai_filtered_reason for g in generated if g.rai_filtered_reason]
    if reasons:
        return Answer((), "RAI filtered: " + "; ".join(reasons))
    return Answer((), "no image in the answer (filtered without a reason)")


def decode_bgr(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise CloudError(f"the model answered {len(data)} bytes that are not an image")
    return image


def encode_png(image_bgr: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image_bgr)
    if not ok:
        raise CloudError(f"could not encode a {image_bgr.shape} image as PNG")
    return data.tobytes()


def image_seed(request_seed: int, index: int) -> int:
    """The model seed of a request's index-th image: runs with neighbouring seeds share no images."""
    return int(np.random.SeedSequence([request_seed, index]).generate_state(1)[0] & 0x7FFFFFFF)  # the APIs take int32


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ResponseCache:
    """Answers on disk by request key, so a rerun of the same request never pays twice."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @staticmethod
    def key(*, model: str, method: str, prompt: str, seed: int, inputs: list[str], options: Mapping[str, Any]) -> str:
        """(model, prompt, seed, input image shas) plus the options that change the answer."""
        parts = {"model": model, "method": method, "prompt": prompt, "seed": seed, "inputs": inputs, "options": options}
        return sha256(json.dumps(parts, sort_keys=True).encode())

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Answer | None:
        path = self._path(key)
        return Answer.from_json(json.loads(path.read_text())) if path.exists() else None

    def put(self, key: str, answer: Answer) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(answer.to_json()))
        os.replace(tmp, path)  # a reader never sees half an answer


@dataclass
class Budget:
    """What one generation run may still spend."""

    max_usd: float | None
    spent_usd: float = 0.0


@dataclass(frozen=True)
class Fetched:
    answer: Answer
    cost_usd: float  # 0 for a cached answer
    cached: bool
    key: str


class CloudCalls:
    """Every paid call of the cloud generators: cache, cost cap, retries, and clear errors, in that order."""

    def __init__(
        self,
        client: genai.Client,
        cache: ResponseCache,
        *,
        image_cost_usd: Mapping[str, float],
        max_attempts: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 32.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self.client = client
        self.cache = cache
        self.image_cost_usd = dict(image_cost_usd)
        self.max_attempts, self.backoff_s, self.max_backoff_s = max_attempts, backoff_s, max_backoff_s
        self.sleep = sleep

    @classmethod
    def from_settings(cls, settings: Settings, *, sleep: Callable[[float], None] = time.sleep) -> CloudCalls:
        return cls(
            make_client(settings),
            ResponseCache(settings.workspace / "cache" / "genai"),
            image_cost_usd=settings.genai_image_cost_usd,
            max_attempts=settings.genai_max_attempts,
            sleep=sleep,
        )

    def cost_per_image(self, model: str, budget: Budget) -> float | None:
        cost = self.image_cost_usd.get(model)
        if cost is None and budget.max_usd is not None:
            raise CloudError(
                f"no cost estimate for model {model!r}, so max_cost_usd cannot be kept: "
                "add it to genai_image_cost_usd (EDGELOOP_GENAI_IMAGE_COST_USD, JSON)"
            )
        return cost

    def fetch(self, model: str, key: str, call: Callable[[], Answer], budget: Budget, *, model_setting: str) -> Fetched:
        """The cached answer for `key`, else one paid call; raises OverBudget before a call past the cap.

        `model_setting` names the setting that chose `model`, for the message when Vertex does not serve it.
        """
        cached = self.cache.get(key)
        if cached is not None:
            return Fetched(cached, 0.0, True, key)
        cost = self.cost_per_image(model, budget) or 0.0
        if budget.max_usd is not None and budget.spent_usd + cost > budget.max_usd + 1e-9:
            raise OverBudget(budget.spent_usd, cost, budget.max_usd)
        answer = self._with_retries(model, call, model_setting)
        # A filtered answer was paid for as well, and asking again with the same seed would be filtered again.
        budget.spent_usd += cost
        self.cache.put(key, answer)
        return Fetched(answer, cost, False, key)

    def _with_retries(self, model: str, call: Callable[[], Answer], model_setting: str) -> Answer:
        for attempt in range(1, self.max_attempts + 1):
            try:
                return call()
            except errors.APIError as e:
                if (
                    e.code == 404
                    or e.status == "NOT_FOUND"
                    or (400 <= (e.code or 0) < 500 and GONE.search(e.message or ""))
                ):
                    raise ModelUnavailable(unavailable_message(model, e, model_setting)) from e
                retryable = e.code == 429 or (e.code or 0) >= 500
                if not retryable or attempt == self.max_attempts:
                    tries = f" after {attempt} attempts" if retryable else ""
                    raise CloudError(
                        f"Vertex AI refused a call to {model!r}{tries}: {e.code} {e.status}: {e.message}"
                    ) from e
                self.sleep(min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s))
        raise AssertionError("unreachable")  # the loop returns or raises


def unavailable_message(model: str, error: errors.APIError, model_setting: str) -> str:
    said = f"{error.code} {error.status}: {error.message}"
    if model.startswith("imagen"):
        return (
            f"Vertex AI does not serve model {model!r} ({said}). Google retired the Imagen models during 2026 in "
            f"favour of Gemini image models: use the replacement {REPLACEMENT_MODEL} (`--generator gemini` for "
            f"text-to-image, `--generator gemini-edit` to edit verified frames), or set {model_setting} to an Imagen "
            "id your project still has."
        )
    return (
        f"Vertex AI does not serve model {model!r} ({said}): check {model_setting}, the project and the location; "
        f"the current Gemini image model is {REPLACEMENT_MODEL}."
    )

