"""sd-inpaint end to end on the CPU with a tiny random inpainting pipeline: the mask is respected, boxes are exact."""

from __future__ import annotations

import numpy as np
import pytest

from feedback.synthesis.compose.swap import MaterialError
from feedback.synthesis.diffusion.sd_inpaint import SdInpaintGenerator
from feedback.synthesis.port import LabelledFrame, SynthesisRequest, SyntheticImage
from tests.feedback.synthesis.tiny_models import inpaint_pipe

CLASSES = ("helmet", "no_helmet", "person")


def frame(seed: int, boxes: list[list[float]], class_ids: list[int]) -> LabelledFrame:
    image = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    return LabelledFrame(f"{seed:064x}", image, np.asarray(boxes, float), np.asarray(class_ids))


MATERIAL = [
    frame(1, [[10.4, 12.0, 26.0, 30.6], [34.0, 4.0, 62.0, 46.0]], [0, 2]),
    frame(2, [[5.0, 5.0, 20.0, 22.0]], [0]),
]


@pytest.fixture(scope="module")
def gen() -> SdInpaintGenerator:
    return SdInpaintGenerator(inpaint_pipe(), CLASSES, {"no_helmet": ["bare head"]}, batch_size=2, steps=2,
                              guidance_scale=1.0, size=32)


def outside_mask_unchanged(out: SyntheticImage) -> None:
    source = next(f for f in MATERIAL if f.image_sha256 == out.lineage["source_image_sha256"])
    x1, y1, x2, y2 = out.lineage["mask"]
    inside = np.zeros(source.image.shape[:2], bool)
    inside[y1:y2, x1:x2] = True
    assert out.image.shape == source.image.shape and out.image.dtype == np.uint8
    np.testing.assert_array_equal(out.image[~inside], source.image[~inside])
    assert (out.image[inside] != source.image[inside]).any()  # the box itself was painted


def test_replaces_a_confusable_box(gen: SdInpaintGenerator) -> None:
    request = SynthesisRequest(target_class=1, count=3, seed=2, confusable_classes=(0,), cluster_id="c7")
    out = list(gen.generate(request, MATERIAL))
    assert len(out) == 3 and all(isinstance(o, SyntheticImage) for o in out)
    assert [o.lineage["seed"] for o in out] == [2, 3, 4]
    for o in out:
        outside_mask_unchanged(o)
        source = next(f for f in MATERIAL if f.image_sha256 == o.lineage["source_image_sha256"])
        j = o.lineage["replaced_box_index"]
        assert o.lineage["mode"] == "replace" and o.lineage["from_class"] == 0
        np.testing.assert_array_equal(o.boxes, source.boxes)  # the box stays; only its class changes
        expected = source.class_ids.copy()
        expected[j] = 1
        assert o.class_ids.tolist() == expected.tolist()
        bx1, by1, bx2, by2 = source.boxes[j]
        assert o.lineage["mask"] == [int(np.floor(bx1)), int(np.floor(by1)), int(np.ceil(bx2)), int(np.ceil(by2))]


def test_inserts_a_new_box_clear_of_labelled_ones(gen: SdInpaintGenerator) -> None:
    request = SynthesisRequest(target_class=1, count=2, seed=0, attributes={"rel_size": 0.25})
    out = list(gen.generate(request, MATERIAL))
    assert len(out) == 2
    for o in out:
        outside_mask_unchanged(o)
        source = next(f for f in MATERIAL if f.image_sha256 == o.lineage["source_image_sha256"])
        assert o.lineage["mode"] == "insert"
        np.testing.assert_array_equal(o.boxes[:-1], source.boxes)
        assert o.class_ids.tolist() == [*source.class_ids.tolist(), 1]
        new = o.boxes[-1]
        np.testing.assert_allclose(new, o.lineage["box"], atol=1e-3)
        assert 0 <= new[0] < new[2] <= 64 and 0 <= new[1] < new[3] <= 48


def test_deterministic_by_seed(gen: SdInpaintGenerator) -> None:
    request = SynthesisRequest(target_class=1, count=2, seed=9, confusable_classes=(0,))
    first = [o.image for o in gen.generate(request, MATERIAL)]
    again = [o.image for o in gen.generate(request, MATERIAL)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    other = [o.image for o in gen.generate(SynthesisRequest(target_class=1, count=2, seed=10, confusable_classes=(0,)),
                                           MATERIAL)]
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_needs_material(gen: SdInpaintGenerator) -> None:
    with pytest.raises(MaterialError, match="verified real frames"):
        list(gen.generate(SynthesisRequest(target_class=1, count=1), []))
    with pytest.raises(MaterialError, match=r"no box of classes \[2\]"):
        list(gen.generate(SynthesisRequest(target_class=1, count=1, confusable_classes=(2,)), MATERIAL[1:]))
