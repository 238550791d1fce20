"""Signed, expiring URLs for blobs, so an annotator's browser can load an image without a token.

The key lives in the object store (created on first use), so every API replica and the CLI share it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from urllib.parse import urlencode

from store.objects import ObjectStore

KEY = "secrets/blob-url.key"


def signing_key(objects: ObjectStore) -> bytes:
    """The shared HMAC key; the first caller creates it (put_if_absent: one winner)."""
    if not objects.exists(KEY):
        objects.put_if_absent(KEY, secrets.token_bytes(32))
    return objects.get(KEY)


def _signature(key: bytes, sha256: str, expires: int) -> str:
    return hmac.new(key, f"{sha256}.{expires}".encode(), hashlib.sha256).hexdigest()


def signed_blob_url(base_url: str, sha256: str, key: bytes, ttl_s: int = 7 * 24 * 3600, now: float | None = None) -> str:
    expires = int((now if now is not None else time.time()) + ttl_s)
    query = urlencode({"exp": expires, "sig": _signature(key, sha256, expires)})
    return f"{base_url.rstrip('/')}/v1/blobs/{sha256}?{query}"


def verify_blob_signature(key: bytes, sha256: str, expires: int, signature: str, now: float | None = None) -> str | None:
    """None when valid; otherwise why not ('expired' or 'bad_signature')."""
    if not hmac.compare_digest(_signature(key, sha256, expires), signature):
        return "bad_signature"
    if expires < (now if now is not None else time.time()):
        return "expired"
    return None
