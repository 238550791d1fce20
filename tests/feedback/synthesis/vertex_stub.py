"""A loopback HTTP server that speaks the slice of Vertex AI's REST the cloud generators use.

It records every request body and answers `:generateContent` and `:predict` with canned PNGs, or with scripted replies.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from feedback.synthesis.cloud.client import CloudCalls, ResponseCache
from tests.feedback.loopback_json import LoopbackServer, send_json

PATH = re.compile(r"^/(?P<version>v1[a-z0-9]*)/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
                  r"/publishers/google/models/(?P<model>[^/:]+):(?P<method>\w+)$")  # fmt: skip
MAGENTA = (255, 0, 255)  # RGB of what the default edit paints


@dataclass
class Seen:
    """One request as the server received it."""

    path: str
    model: str
    method: str
    project: str
    location: str
    headers: dict[str, str]
    body: dict[str, Any]


def png(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG")
    return out.getvalue()


def decode_image(data: str) -> np.ndarray:
    """An RGB array from base64 or base64url image bytes, as either encoding arrives."""
    raw = base64.b64decode(data.replace("-", "+").replace("_", "/") + "=" * (-len(data) % 4))
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def flat_edit(image_rgb: np.ndarray) -> np.ndarray:
    """The default edit: a flat magenta square, bigger than any crop, as image models answer at their own size."""
    return np.full((1024, 1024, 3), MAGENTA, np.uint8)


class VertexStub(LoopbackServer):
    """`replies` (status, JSON) are served first, in order; after them every call succeeds with an image.

    `:generateContent` edits the request's image with `edit`, or answers `text_image` when there is none;
    `:predict` answers `text_image` for generation and `edit` of the raw reference image for `edit_image`.
    """

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.token_requests: list[str] = []
        self.replies: deque[tuple[int, dict[str, Any]]] = deque()
        self.edit: Callable[[np.ndarray], np.ndarray] = flat_edit
        self.text_image: np.ndarray = np.full((768, 1024, 3), (90, 120, 150), np.uint8)
        self._lock = threading.Lock()
        super().__init__(self._handler())

    def reply(self, status: int, body: dict[str, Any]) -> None:
        self.replies.append((status, body))

    def answer(self, seen: Seen) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.seen.append(seen)
            if self.replies:
                return self.replies.popleft()
        if seen.method == "generateContent":
            return 200, self._content_answer(seen.body)
        if seen.method == "predict":
            return 200, self._predict_answer(seen.body)
        return 404, {"error": {"code": 404, "message": f"no method {seen.method}", "status": "NOT_FOUND"}}

    def _content_answer(self, body: dict[str, Any]) -> dict[str, Any]:
        parts = [p for c in body.get("contents", []) for p in c.get("parts", [])]
        images = [decode_image(p["inlineData"]["data"]) for p in parts if "inlineData" in p]
        out = self.edit(images[0]) if images else self.text_image
        image_part = {"inlineData": {"mimeType": "image/png", "data": b64(png(out))}}
        return {"candidates": [{"content": {"role": "model", "parts": [image_part]}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 1290}}  # fmt: skip

    def _predict_answer(self, body: dict[str, Any]) -> dict[str, Any]:
        instance = body["instances"][0]
        raws = [r for r in instance.get("referenceImages", []) if r.get("referenceType") == "REFERENCE_TYPE_RAW"]
        out = self.edit(decode_image(raws[0]["referenceImage"]["bytesBase64Encoded"])) if raws else self.text_image
        count = int(body.get("parameters", {}).get("sampleCount", 1))
        return {"predictions": [{"bytesBase64Encoded": b64(png(out)), "mimeType": "image/png"}] * count}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server calls it by this name
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                match = PATH.match(self.path.split("?")[0])
                if self.path == "/token":  # a token exchange for Application Default Credentials (a form, not JSON)
                    stub.token_requests.append(raw.decode())
                    status, answer = (
                        200,
                        {
                            "access_token": "adc-token",
                            "expires_in": 3600,
                            "token_type": "Bearer",
                            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                        },
                    )
                elif match is None:
                    status, answer = (
                        404,
                        {"error": {"code": 404, "message": f"no route {self.path}", "status": "NOT_FOUND"}},
                    )
                else:
                    seen = Seen(path=self.path, headers=dict(self.headers), body=json.loads(raw or b"{}"), **{
                        k: match[k] for k in ("model", "method", "project", "location")})  # fmt: skip
                    status, answer = stub.answer(seen)
                send_json(self, status, answer)

            def log_message(self, *args: object) -> None:  # keep pytest's output clean
                pass

        return Handler


def noise_frame(seed: int = 0, shape: tuple[int, int] = (480, 640)) -> np.ndarray:
    """A BGR frame of noise: any pixel an adapter touches shows."""
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def stub_calls(stub: VertexStub, cache_root: Path, image_cost_usd: dict[str, float] | None = None) -> CloudCalls:
    """The generators' guarded calls through a real google-genai client pointed at `stub` with a static token."""
    from google import genai
    from google.genai import types
    from google.oauth2.credentials import Credentials

    client = genai.Client(
        vertexai=True, project="proj", location="us-central1", credentials=Credentials(token="t"),
        http_options=types.HttpOptions(base_url=stub.url),
    )  # fmt: skip
    return CloudCalls(client, ResponseCache(cache_root), image_cost_usd=image_cost_usd or {})
