"""check_image: the frames the ingest API accepts, and the precise reason for those it refuses."""

from __future__ import annotations

import io
import random
import zlib

import pytest
from PIL import Image

from feedback.ingest.images import check_image
from feedback.ingest.problems import Rejected
from feedback.scenes import encode_jpeg, render_scene

LIMIT = 50_000_000


def scene_jpeg(width: int = 160, height: int = 120) -> bytes:
    return encode_jpeg(render_scene(3, width=width, height=height).image, quality=85)


def encoded(mode: str, fmt: str, size: tuple[int, int] = (96, 64), **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise(size, 60).convert(mode).save(buffer, fmt, **options)
    return buffer.getvalue()


def refusal(data: bytes, media_type: str = "image/jpeg", max_pixels: int = LIMIT) -> tuple[int, str]:
    with pytest.raises(Rejected) as caught:
        check_image(data, media_type, max_pixels)
    return caught.value.status, caught.value.reason


@pytest.mark.parametrize("data, size", [
    (scene_jpeg(), (160, 120)),
    (encoded("L", "JPEG"), (96, 64)),
    (encoded("CMYK", "JPEG"), (96, 64)),
    (encoded("RGB", "JPEG", progressive=True), (96, 64)),
    (encoded("RGB", "JPEG", size=(5, 3)), (5, 3)),  # smaller than one 8x8 block
], ids=["scene", "grey", "cmyk", "progressive", "tiny"])
def test_valid_jpegs_give_their_size(data: bytes, size: tuple[int, int]) -> None:
    assert check_image(data, "image/jpeg", LIMIT) == size


def test_valid_png_gives_its_size() -> None:
    assert check_image(encoded("RGB", "PNG"), "image/png", LIMIT) == (96, 64)


def test_corrupt_compressed_data_is_refused_even_where_the_decoder_could_limp_on() -> None:
    data = bytearray(scene_jpeg(640, 480))
    start = data.index(b"\xff\xda") + 20  # inside the first scan's entropy-coded data
    data[start + 2000 : start + 2040] = bytes(40)  # a run of zeros, as a bad flash block leaves
    assert refusal(bytes(data)) == (422, "undecodable_image")


def test_every_truncation_of_a_jpeg_is_refused() -> None:
    data = scene_jpeg()
    rng = random.Random(0)
    for cut in sorted(rng.sample(range(2, len(data) - 2), 40)):
        assert refusal(data[:cut]) == (422, "undecodable_image"), f"cut at byte {cut} of {len(data)}"


def test_a_huge_jpeg_header_is_refused_before_any_decoding() -> None:
    data = bytearray(scene_jpeg())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (40_000).to_bytes(2, "big") + (40_000).to_bytes(2, "big")  # height, width
    assert refusal(bytes(data)) == (422, "too_many_pixels")


def test_a_png_bomb_is_refused_by_its_header() -> None:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
    header = (30_000).to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    assert refusal(bomb, "image/png") == (422, "too_many_pixels")


@pytest.mark.parametrize("data, media_type, expected", [
    (b"", "image/jpeg", (422, "empty_image")),
    (b"GIF89a....", "image/gif", (415, "unsupported_media_type")),
    (encoded("RGB", "PNG"), "image/jpeg", (422, "undecodable_image")),  # a PNG sent as a JPEG
    (scene_jpeg(), "image/png", (422, "undecodable_image")),
    (bytes(random.Random(1).randbytes(5000)), "image/jpeg", (422, "undecodable_image")),
], ids=["empty", "gif", "png-as-jpeg", "jpeg-as-png", "noise"])
def test_refusals_name_their_reason(data: bytes, media_type: str, expected: tuple[int, str]) -> None:
    assert refusal(data, media_type) == expected


def test_the_png_check_does_not_go_through_a_patched_image_open(monkeypatch: pytest.MonkeyPatch) -> None:
    # ultralytics, once imported, replaces PIL.Image.open with one that imports an optional
    # HEIF plugin on any unidentified file; the check must not depend on that global.
    def patched_open(*args: object, **kwargs: object) -> None:
        raise ModuleNotFoundError("No module named 'pi_heif'")

    monkeypatch.setattr(Image, "open", patched_open)
    assert check_image(encoded("RGB", "PNG"), "image/png", LIMIT) == (96, 64)
    assert refusal(scene_jpeg(), "image/png") == (422, "undecodable_image")
