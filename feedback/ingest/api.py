"""The ingest API devices upload hard examples to: validate, store the blob, drop an inbox record.

Stateless by design (DESIGN decision 1): no DuckDB here, so replicas scale behind a balancer.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from edge.protocol import (
    API_PREFIX, ARTIFACTS_PATH, CAPTURES_PATH, DEPLOYMENT_PATH, HEARTBEAT_PATH, CaptureAccepted, CaptureMeta,
    DeploymentAnswer, Heartbeat, HeartbeatAccepted, Problem, ReferenceSet, capture_id_for, utc_now,
)
from feedback.ingest.auth import authenticate
from feedback.ingest.images import check_image
from feedback.ingest.metrics import IngestMetrics
from feedback.ingest.middleware import LimitAndMeasure
from feedback.ingest.multipart import read_parts
from feedback.ingest.problems import Rejected
from feedback.rollout.desired import DesiredStateReader, answer_for, etag_for
from store.blobs import sha256_hex
from store.devices import RegistryReader
from store.inbox import CaptureRecord, HeartbeatRecord
from store.settings import Settings, Workspace
from store.signing import signing_key, verify_blob_signature

log = logging.getLogger(__name__)
T = TypeVar("T")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TUF_FILE = re.compile(r"(?:[1-9][0-9]{0,8}\.root|timestamp|snapshot|targets)\.json")
_META_LIMIT = 256 * 1024  # a meta part with 2,000 detections is about 200 KB
_INLINE_JPEG_BYTES = 1024 * 1024  # about 10 ms of decoding at most
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
_CHUNK = 1024 * 1024

_PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing, malformed or unknown device token"},
    403: {"model": Problem, "description": "Revoked token, or meta names another device"},
    413: {"model": Problem, "description": "Body over the configured limit (checked while streaming)"},
    415: {"model": Problem, "description": "Not multipart/form-data, or the image is not JPEG/PNG"},
    422: {"model": Problem, "description": "Meta fails the schema, boxes outside the frame, bad names, "
          "image does not decode or has too many pixels"},
}

_CAPTURE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["meta", "image"],
                    "properties": {
                        "meta": {"$ref": "#/components/schemas/CaptureMeta"},
                        "image": {"type": "string", "format": "binary", "description": "image/jpeg or image/png"},
                    },
                },
                "encoding": {"meta": {"contentType": "application/json"}, "image": {"contentType": "image/jpeg, image/png"}},
            }
        },
    }
}


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the ASGI app; everything it needs comes from `settings` (env, edgeloop.toml)."""
    settings = settings or Settings()
    workspace = Workspace(settings)
    registry = RegistryReader(workspace.objects, ttl_s=settings.registry_ttl_s)
    desired = DesiredStateReader(workspace.objects, ttl_s=settings.registry_ttl_s)
    metrics = IngestMetrics()
    blob_key = functools.cache(lambda: signing_key(workspace.objects))

    app = FastAPI(
        title="edgeloop ingest",
        version="1",
        description="Edge devices upload hard examples (frames the model got wrong or was unsure about) "
        "and heartbeats. Authenticate with `Authorization: Bearer <device token>` "
        "(see `edgeloop devices add`).",
    )
    app.add_middleware(LimitAndMeasure, max_body_bytes=settings.max_upload_bytes, metrics=metrics)

    # The bodies are parsed by hand (to authenticate before reading them), so FastAPI
    # would not list their schemas on its own.
    _openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = _openapi()
            for model in (CaptureMeta, Heartbeat, ReferenceSet):
                body = model.model_json_schema(ref_template="#/components/schemas/{model}")
                schema["components"]["schemas"].update(body.pop("$defs", {}))
                schema["components"]["schemas"][model.__name__] = body
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(Rejected)
    async def _rejected(request: Request, exc: Rejected) -> JSONResponse:
        metrics.rejections.labels(exc.reason).inc()
        return JSONResponse({"reason": exc.reason, "detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    @app.post(
        CAPTURES_PATH,
        status_code=201,
        response_model=CaptureAccepted,
        responses={200: {"model": CaptureAccepted, "description": "Already stored: same id"}, **_PROBLEMS},
        openapi_extra=_CAPTURE_BODY,
        summary="Upload one hard example (multipart: meta JSON + image)",
    )
    async def upload_capture(request: Request) -> JSONResponse:
        # Authenticate before reading a byte of the body.
        device = authenticate(request.headers.get("authorization"), registry)
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "multipart/form-data":
            raise Rejected(415, "unsupported_media_type", "send multipart/form-data with parts 'meta' and 'image'")
        parts = await read_parts(request.headers["content-type"], request.stream(), {"meta": _META_LIMIT, "image": None})
        image = parts["image"]
        accepted, created = await _store_capture(device, bytes(parts["meta"].data), bytes(image.data), image.content_type)
        metrics.captures.labels("duplicate" if not created else "new").inc()
        return JSONResponse(accepted.model_dump(), status_code=201 if created else 200)

    async def _store_capture(device: str, meta_json: bytes, image: bytes, media_type: str) -> tuple[CaptureAccepted, bool]:
        try:
            meta = CaptureMeta.model_validate_json(meta_json)
        except ValidationError as exc:
            raise Rejected(422, "invalid_meta", _errors(exc.errors())) from exc
        if meta.device != device:
            raise Rejected(403, "device_mismatch", f"meta names device {meta.device!r} but the token is {device!r}'s")
        check = functools.partial(check_image, image, media_type, settings.max_image_pixels)
        # A typical frame is checked right here on the event loop: handing 0.5 ms of JPEG decoding
        # to a thread cost more CPU than it saved. A JPEG's decoding time grows with its bytes,
        # a PNG's with its pixels, so a PNG or a big JPEG, which could hold every other request
        # up, goes to a thread. (The loop does wait for the disk's flushes: store.groupsync.)
        inline = media_type == "image/jpeg" and len(image) <= _INLINE_JPEG_BYTES
        width, height = check() if inline else await run_in_threadpool(check)
        if (width, height) != (meta.frame_width, meta.frame_height):
            raise Rejected(
                422,
                "frame_size_mismatch",
                f"image is {width}x{height} but meta says {meta.frame_width}x{meta.frame_height}",
            )
        sha = sha256_hex(image)
        capture_id = capture_id_for(sha)
        record = CaptureRecord(
            id=capture_id, sha256=sha, received_at=utc_now(), media_type=media_type, bytes=len(image), meta=meta
        )
        try:
            created = await workspace.inbox.add_upload(record, image)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # A full store is the server's state, not the upload's fault: 507 and a retry time, which the device's
            # uploader honours, and one log line instead of a traceback per refused upload.
            log.warning("store full, upload %s refused: %s", sha[:12], exc)
            raise Rejected(507, "insufficient_storage", "the server's store is full; retry later",
                           {"Retry-After": "60"}) from None
        return CaptureAccepted(id=capture_id, sha256=sha, duplicate=not created), created

    @app.post(
        HEARTBEAT_PATH,
        status_code=201,
        response_model=HeartbeatAccepted,
        responses=_PROBLEMS,
        openapi_extra=_json_body("Heartbeat"),
        summary="Report device health (fps, latency, queue depth, model version)",
    )
    async def heartbeat(request: Request) -> HeartbeatAccepted:
        device = authenticate(request.headers.get("authorization"), registry)
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise Rejected(415, "unsupported_media_type", "send the heartbeat as application/json")
        try:
            body = Heartbeat.model_validate_json(await request.body())
        except ValidationError as exc:
            raise Rejected(422, "invalid_heartbeat", _errors(exc.errors())) from exc
        if body.device != device:
            raise Rejected(403, "device_mismatch", f"heartbeat names device {body.device!r} but the token is {device!r}'s")
        record = HeartbeatRecord(id=uuid.uuid4().hex, received_at=utc_now(), heartbeat=body)
        await workspace.inbox.add_heartbeat_shared(record)
        return HeartbeatAccepted(id=record.id)

    @app.get(f"{API_PREFIX}/whoami", responses=_PROBLEMS, summary="The device a token belongs to")
    async def whoami(request: Request) -> dict[str, str]:
        return {"device": authenticate(request.headers.get("authorization"), registry)}

    @app.get(
        f"{API_PREFIX}/blobs/{{sha256}}",
        responses={403: {"model": Problem, "description": "Unsigned, badly signed or expired URL"},
                   404: {"model": Problem, "description": "No such blob"}},
        response_class=Response,
        summary="An image, for an annotator's browser: needs the signed, expiring URL the review step made",
    )
    async def blob(sha256: str, exp: int | None = None, sig: str | None = None) -> Response:
        if exp is None or not sig:
            raise Rejected(403, "unsigned_url", "blob URLs must carry exp= and sig= (see `edgeloop review push`)")
        if not _SHA256.fullmatch(sha256):
            raise Rejected(404, "no_such_blob", "not a sha256")
        if problem := verify_blob_signature(blob_key(), sha256, exp, sig):
            raise Rejected(403, problem, "the URL's signature does not match" if problem == "bad_signature"
                           else "the URL has expired; push the task again for a fresh one")
        data = await _stored(workspace.blobs.get, sha256, "no_such_blob", f"no blob {sha256}")
        media_type = "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"
        # Content-addressed: the bytes behind a sha never change, so browsers may cache them.
        return Response(data, media_type=media_type, headers={"Cache-Control": "private, max-age=86400, immutable"})

    @app.get(
        DEPLOYMENT_PATH,
        response_model=DeploymentAnswer,
        responses={**{k: v for k, v in _PROBLEMS.items() if k in (401, 403)},
                   304: {"description": "Unchanged since the ETag in If-None-Match"}},
        summary="The model this device should run (poll it; send the last ETag back in If-None-Match)",
        description="The device's pin, else the canary's model if the device's bucket is in the canary, else "
        "the fleet's model; `artifact` null means none is named for it: run the installed model. The ETag "
        "changes exactly when the answer does.",
    )
    async def deployment(request: Request) -> Response:
        device = authenticate(request.headers.get("authorization"), registry)
        answer = answer_for(desired.current(), device)
        etag = etag_for(answer)
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if etag in _etags(request.headers.get("if-none-match")):
            return Response(status_code=304, headers=headers)
        return Response(answer.model_dump_json(), media_type="application/json", headers=headers)

    @app.get(
        f"{ARTIFACTS_PATH}/{{sha256}}",
        response_class=Response,
        responses={200: {"content": {"application/octet-stream": {}}, "description": "The whole blob"},
                   206: {"content": {"application/octet-stream": {}},
                         "description": "The byte range asked for (Range: bytes=START-[END]), with Content-Range"},
                   401: _PROBLEMS[401], 403: _PROBLEMS[403],
                   404: {"model": Problem, "description": "Not a blob of any model deployed now"},
                   416: {"model": Problem, "description": "The range starts past the end of the blob"}},
        summary="A deployed model's ONNX or reference set (schema ReferenceSet), by sha256; resumable",
        description="Streams the blob; a single `Range: bytes=START-[END]` answers 206 so that a download "
        "cut off on a flaky link resumes where it stopped. The ETag is the sha256.",
    )
    async def artifact(sha256: str, request: Request) -> Response:
        authenticate(request.headers.get("authorization"), registry)
        # Only what is deployed now: the blob store also holds every device's captures.
        if not _SHA256.fullmatch(sha256) or sha256 not in desired.current().downloadable():
            raise Rejected(404, "no_such_artifact", f"{sha256!r} is not an artifact of any model deployed now")
        blob = await _stored(workspace.objects.open, workspace.blobs.key(sha256), "no_such_artifact",
                             f"artifact {sha256} is listed but its blob is missing")
        size = blob.seek(0, os.SEEK_END)
        etag = f'"{sha256}"'
        wanted = request.headers.get("range")
        if_range = request.headers.get("if-range")
        span = _byte_range(wanted, size) if wanted and (if_range is None or if_range == etag) else None
        headers = {"ETag": etag, "Accept-Ranges": "bytes", "Cache-Control": "private, max-age=86400, immutable"}
        if span == "unsatisfiable":
            blob.close()
            raise Rejected(416, "range_not_satisfiable", f"the blob has {size} bytes; asked for {wanted!r}",
                           {"Content-Range": f"bytes */{size}"})
        start, end = span if isinstance(span, tuple) else (0, size - 1)
        headers["Content-Length"] = str(end - start + 1)
        if isinstance(span, tuple):
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"

        def chunks() -> Iterator[bytes]:
            with blob:  # a chunk at a time, local or remote: a model of any size costs the server one chunk
                blob.seek(start)
                left = end - start + 1
                while left > 0 and (chunk := blob.read(min(_CHUNK, left))):
                    left -= len(chunk)
                    yield chunk

        return StreamingResponse(chunks(), status_code=206 if isinstance(span, tuple) else 200,
                                 media_type="application/octet-stream", headers=headers)

    @app.get(
        f"{API_PREFIX}/tuf/{{name}}",
        response_class=Response,
        responses={401: _PROBLEMS[401], 403: _PROBLEMS[403],
                   404: {"model": Problem, "description": "No such metadata file (a root version not made yet)"}},
        summary="The signed rollout metadata (TUF: N.root.json, timestamp.json, snapshot.json, targets.json)",
        description="Served as the control plane signed it; devices verify it against the root they pinned, so "
        "this endpoint needs no trust of its own.",
    )
    async def tuf_metadata(name: str, request: Request) -> Response:
        authenticate(request.headers.get("authorization"), registry)
        if not _TUF_FILE.fullmatch(name):
            raise Rejected(404, "no_such_metadata", f"{name!r} is not a TUF metadata file name")
        data = await _stored(workspace.objects.get, f"tuf/{name}", "no_such_metadata",
                             f"no {name} (has `edgeloop keys init` been run?)")
        return Response(data, media_type="application/json", headers={"Cache-Control": "no-cache"})

    @app.get("/healthz", summary="Liveness: the process answers and the store is reachable")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "storage": workspace.objects.url}

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def _stored(read: Callable[[str], T], key: str, problem: str, missing: str) -> T:
    """An object of the store, read off the event loop (a remote store's read is a request); a 404 where
    there is none, so each endpoint says only what it reads and what its absence is called."""
    try:
        return await run_in_threadpool(read, key)
    except KeyError:
        raise Rejected(404, problem, missing) from None


def _etags(header: str | None) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in (header or "").split(",") if tag.strip()}


def _byte_range(header: str, size: int) -> tuple[int, int] | str | None:
    """(first, last) byte of a single `bytes=` range, "unsatisfiable", or None to send everything
    (several ranges or a malformed header: a server may ignore Range, RFC 9110 section 14.2)."""
    match = _RANGE.fullmatch(header.strip())
    if not match or match[1] == match[2] == "":
        return None
    if match[1] == "":  # bytes=-N: the last N bytes
        n = int(match[2])
        return (max(0, size - n), size - 1) if n > 0 and size > 0 else "unsatisfiable"
    start = int(match[1])
    end = min(int(match[2]), size - 1) if match[2] else size - 1
    if start >= size:
        return "unsatisfiable"
    return None if end < start else (start, end)


def _json_body(model_name: str) -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{model_name}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _errors(errors: Any) -> list[dict[str, Any]]:
    """Pydantic errors without the parts that are not JSON (exceptions in ctx) or are noise (urls)."""
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in errors]
