"""Report frames the model got wrong by hand: image files in, captures through the ingest API.

Used by `edgeloop upload`; the same client and protocol as the agent's uploader.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import get_args

from PIL import Image, UnidentifiedImageError
from rich.progress import track

from edge.client import IngestClient, TransientError, UploadRejected
from edge.protocol import CaptureMeta, SourceRef, Trigger, is_safe_name, utc_now

_MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png"}


class UploadError(Exception):
    """A file or server problem, phrased for the person at the terminal."""


def read_frame(path: Path) -> tuple[bytes, str, int, int]:
    """Return (bytes, media type, width, height), or raise UploadError naming the file."""
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as img:
            media_type = _MEDIA_TYPES.get(img.format or "")
            width, height = img.size
    except FileNotFoundError as exc:
        raise UploadError(f"{path}: no such file") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise UploadError(f"{path}: not a readable image ({exc})") from exc
    if media_type is None:
        raise UploadError(f"{path}: is {img.format}, but only JPEG and PNG are accepted")
    return data, media_type, width, height


def upload_files(
    paths: list[Path],
    *,
    server: str,
    token: str,
    trigger: str = "operator",
    note: str | None = None,
    camera: str = "manual",
    model_version: str = "unknown",
    progress: bool = True,
) -> list[dict[str, object]]:
    """Upload each file as a capture; every file is checked before the first byte is sent."""
    if trigger not in get_args(Trigger):
        raise UploadError(f"--trigger {trigger!r} is not one of {', '.join(get_args(Trigger))}")
    if not is_safe_name(camera):
        raise UploadError(f"--camera {camera!r} may only use letters, digits, '_', '.', '-' (1-64 chars)")
    if note is not None and len(note) > 2000:
        raise UploadError(f"--note is {len(note)} characters; the limit is 2000")
    frames = [(p, *read_frame(p)) for p in paths]
    results: list[dict[str, object]] = []
    try:
        with IngestClient(server, token) as client:
            device = client.whoami()
            for path, data, media_type, width, height in track(frames, "uploading", disable=not progress):
                meta = CaptureMeta(
                    device=device, camera=camera, captured_at=utc_now(), frame_width=width, frame_height=height,
                    model_version=model_version, triggers=[trigger], source=SourceRef(uri=path.name), note=note,
                )
                accepted = client.upload_capture(meta, data, media_type)
                results.append({"file": str(path), **accepted.model_dump()})
    except UploadRejected as exc:
        raise UploadError(f"server refused the upload: {exc}") from exc
    except TransientError as exc:
        raise UploadError(f"cannot reach {server}: {exc}") from exc
    return results
