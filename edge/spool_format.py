"""The spool's file format: one file per entry, checksummed, named so that listing the folder rebuilds the queue.

A file that fails its checksum or does not parse raises `CorruptEntry`; the spool sets it aside.
"""

from __future__ import annotations

import hashlib
import struct
from typing import NamedTuple

# One file per entry:
#   header | media type | meta JSON | image | sha256 of everything before it.
# Header: magic, format version, priority, created_at (unix seconds), three lengths.
_MAGIC = b"ELSP"
_VERSION = 1
_HEADER = struct.Struct("<4sBqdHII")
_DIGEST_SIZE = hashlib.sha256().digest_size
_SUFFIX = ".entry"


class CorruptEntry(Exception):
    """A spool file that fails its checksum or does not parse."""


class Record(NamedTuple):
    priority: int
    created_at: float
    media_type: str
    meta_json: bytes
    image: bytes


def encode(record: Record) -> bytes:
    media_type = record.media_type.encode("ascii")
    header = _HEADER.pack(
        _MAGIC, _VERSION, record.priority, record.created_at, len(media_type), len(record.meta_json), len(record.image)
    )
    body = b"".join((header, media_type, record.meta_json, record.image))
    return body + hashlib.sha256(body).digest()


def decode(data: bytes) -> Record:
    if len(data) < _HEADER.size + _DIGEST_SIZE:
        raise CorruptEntry(f"only {len(data)} bytes")
    body, digest = data[:-_DIGEST_SIZE], data[-_DIGEST_SIZE:]
    if hashlib.sha256(body).digest() != digest:
        raise CorruptEntry("checksum mismatch")
    magic, version, priority, created_at, mt_len, meta_len, image_len = _HEADER.unpack_from(body)
    if magic != _MAGIC or version != _VERSION:
        raise CorruptEntry(f"unknown format {magic!r} v{version}")
    if _HEADER.size + mt_len + meta_len + image_len != len(body):
        raise CorruptEntry("lengths do not add up")
    start = _HEADER.size
    media_type = body[start : start + mt_len].decode("ascii")
    meta_json = body[start + mt_len : start + mt_len + meta_len]
    image = body[start + mt_len + meta_len :]
    return Record(priority, created_at, media_type, meta_json, image)


# The file name carries the id (creation time in ns, zero-padded, so it sorts) and the
# priority: listing ready/ is enough to rebuild the queue, with no index file to go stale.
def file_name(entry_id: str, priority: int) -> str:
    return f"{entry_id}_p{priority}{_SUFFIX}"


def parse_file_name(name: str) -> tuple[str, int] | None:
    if not name.endswith(_SUFFIX):
        return None
    entry_id, sep, priority = name.removesuffix(_SUFFIX).partition("_p")
    if not (sep and entry_id.isdigit()):
        return None
    try:
        return entry_id, int(priority)
    except ValueError:
        return None
