"""read_parts on bodies httpx really encodes, streamed in awkward chunk sizes, and on broken ones."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from feedback.ingest.multipart import read_parts
from feedback.ingest.problems import Rejected

LIMITS = {"meta": 100, "image": None}


def encode(files: dict) -> tuple[str, bytes]:
    request = httpx.Request("POST", "http://x/", files=files)
    return request.headers["content-type"], request.read()


async def _chunks(body: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


def parse(content_type: str, body: bytes, chunk: int = 65536, limits: dict | None = None):
    return asyncio.run(read_parts(content_type, _chunks(body, chunk), limits or LIMITS))


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
def test_parts_come_back_whole_whatever_the_chunking(chunk):
    image = bytes(range(256)) * 300  # holds CR, LF and dashes, like a real JPEG
    content_type, body = encode({"meta": ("m.json", b'{"a": 1}', "application/json"),
                                 "image": ("f.jpg", image, "Image/JPEG; x=y")})
    parts = parse(content_type, body, chunk)
    assert bytes(parts["meta"].data) == b'{"a": 1}' and parts["meta"].content_type == "application/json"
    assert bytes(parts["image"].data) == image
    assert parts["image"].content_type == "image/jpeg" and parts["image"].filename == "f.jpg"


def _refused(content_type: str, body: bytes) -> str:
    with pytest.raises(Rejected) as caught:
        parse(content_type, body)
    assert (caught.value.status, caught.value.reason) == (422, "bad_parts")
    return caught.value.detail


def test_a_missing_extra_or_repeated_part_is_refused_by_name():
    ct, body = encode({"meta": ("m", b"{}", "application/json")})
    assert "got ['meta']" in _refused(ct, body)
    ct, body = encode({"meta": ("m", b"{}", "application/json"), "image": ("i", b"x", "image/png"),
                       "other": ("o", b"x", "text/plain")})
    assert "'other'" in _refused(ct, body)
    ct, body = encode([("meta", ("m", b"{}", "application/json")), ("meta", ("m", b"{}", "application/json"))])
    assert "twice" in _refused(ct, body)


def test_a_part_over_its_limit_is_refused_while_reading():
    ct, body = encode({"meta": ("m", b"x" * 101, "application/json"), "image": ("i", b"x" * 10_000, "image/png")})
    assert "'meta' is over 100 bytes" in _refused(ct, body)


def test_broken_bodies_are_refused():
    ct, body = encode({"meta": ("m", b"{}", "application/json"), "image": ("i", b"x" * 1000, "image/png")})
    assert "closing boundary" in _refused(ct, body[:-50])  # cut short
    assert "no boundary" in _refused("multipart/form-data", body)
    assert "malformed" in _refused(ct, b"garbage that is no multipart body at all" + body)
    nameless = body.replace(b'name="meta"', b'nome="meta"')
    assert "Content-Disposition" in _refused(ct, nameless)
