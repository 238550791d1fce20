"""Checks an uploaded frame before anything is stored: real JPEG/PNG, sane size, decodes.

The pixel limit is read from the header before decoding, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from feedback.ingest.problems import Rejected

_PIL_FORMAT = {"image/jpeg": "JPEG", "image/png": "PNG"}


def check_image(data: bytes, media_type: str, max_pixels: int) -> tuple[int, int]:
    """Return (width, height) of a fully decodable image, or raise Rejected (415/422)."""
    if media_type not in _PIL_FORMAT:
        raise Rejected(415, "unsupported_media_type", f"image part must be image/jpeg or image/png, not {media_type!r}")
    if not data:
        raise Rejected(422, "empty_image", "the image part is empty")
    try:
        with warnings.catch_warnings():
            # We enforce our own limit below; PIL's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=[_PIL_FORMAT[media_type]]) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise Rejected(
                        422,
                        "too_many_pixels",
                        f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}",
                    )
                if img.format == "JPEG":
                    # Entropy-decode every scan (so corruption and truncation still fail) but skip
                    # most of the inverse DCT and the colour conversion: 0.7 ms instead of 1.2 ms
                    # for a 640x480 frame, on the upload hot path.
                    img.draft("L", (max(1, width // 8), max(1, height // 8)))
                img.load()  # a truncated or corrupt stream fails here, not later in training
    except Rejected:
        raise
    except Image.DecompressionBombError as exc:  # PIL's own ceiling, hit while reading the header
        raise Rejected(422, "too_many_pixels", str(exc)) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise Rejected(422, "undecodable_image", f"image is not a decodable {media_type}: {exc}") from exc
    return width, height
