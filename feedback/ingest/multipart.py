"""Reads an upload's multipart/form-data body into memory, part by part, as it streams in.

python-multipart does the parsing. Starlette's form reader on top of it spools every file
part to a temporary file and wraps it for arbitrary forms; an upload here is two small
parts that are checked in memory anyway, and that machinery was a tenth of the server's
time per upload.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from feedback.ingest.problems import Rejected


@dataclass
class Part:
    name: str
    content_type: str  # lower case, without parameters; "" when the part has none
    filename: str | None
    data: bytearray = field(default_factory=bytearray)


def _bad(detail: str) -> Rejected:
    return Rejected(422, "bad_parts", detail)


async def read_parts(content_type: str, body: AsyncIterator[bytes], limits: dict[str, int | None]) -> dict[str, Part]:
    """The parts of the body by name: exactly one of each name in `limits`, each at most
    that many bytes (None: only the request's body limit, which the middleware enforces)."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise _bad("the multipart Content-Type has no boundary")
    parts: dict[str, Part] = {}
    current: list[Part] = []  # the part being read, once its headers are in
    header: dict[bytes, bytes] = {}
    field_name, field_value = bytearray(), bytearray()
    ended = False

    def on_header_field(data: bytes, start: int, end: int) -> None:
        field_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        field_value.extend(data[start:end])

    def on_header_end() -> None:
        header[bytes(field_name).lower()] = bytes(field_value)
        field_name.clear()
        field_value.clear()

    def on_headers_finished() -> None:
        disposition, options = parse_options_header(header.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if disposition != b"form-data" or not name:
            raise _bad("every part needs 'Content-Disposition: form-data; name=...'")
        if name not in limits:
            raise _bad(f"unexpected part {name!r}: send exactly the parts {sorted(limits)}")
        if name in parts:
            raise _bad(f"part {name!r} appears twice")
        media_type, _ = parse_options_header(header.get(b"content-type", b""))
        filename = options.get(b"filename")
        part = Part(name, media_type.decode("latin-1").lower(), filename.decode("utf-8", "replace") if filename else None)
        parts[name] = part
        current[:] = [part]
        header.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part = current[0]
        part.data.extend(data[start:end])
        limit = limits[part.name]
        if limit is not None and len(part.data) > limit:
            raise _bad(f"part {part.name!r} is over {limit} bytes")

    def on_end() -> None:
        nonlocal ended
        ended = True

    parser = MultipartParser(boundary, {
        "on_header_field": on_header_field, "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data, "on_end": on_end,
    })
    try:
        async for chunk in body:
            parser.write(chunk)
    except FormParserError as exc:
        raise _bad(f"malformed multipart body: {exc}") from exc
    if not ended:
        raise _bad("the multipart body ends before its closing boundary")
    if parts.keys() != limits.keys():
        raise _bad(f"expected exactly the parts {sorted(limits)}, got {sorted(parts)}")
    return parts
