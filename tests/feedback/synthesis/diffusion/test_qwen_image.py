"""qwen-image (labelled by the GroundingDINO teacher) and qwen-image-edit on tiny random Qwen-Image pipelines."""

from __future__ import annotations

import numpy as np
import pytest

from feedback.synthesis.diffusion.qwen_image import QwenImageEditGenerator, QwenImageGenerator
from feedback.synthesis.port import LabelledFrame, Rejected, SynthesisRequest, SyntheticImage
from feedback.teachers.grounding_dino import GroundingDinoTeacher, Ontology
from tests.feedback.synthesis.tiny_models import grounding_dino, qwen_image_edit_pipe, qwen_image_pipe

CLASSES = ("helmet", "no_helmet", "person")
PHRASES = {"no_helmet": ["bare head"]}


@pytest.fixture(scope="module")
def dino():  # noqa: ANN201
    return grounding_dino()


def teacher(dino, box_threshold: float) -> GroundingDinoTeacher:  # noqa: ANN001
    return GroundingDinoTeacher(*dino, CLASSES, Ontology.of(CLASSES, PHRASES), box_threshold=box_threshold,
                                text_threshold=0.0)


@pytest.fixture(scope="module")
def t2i():  # noqa: ANN201
    return qwen_image_pipe()


def test_text_to_image_is_labelled_by_the_teacher(t2i, dino) -> None:  # noqa: ANN001
    judge = teacher(dino, box_threshold=0.0)
    gen = QwenImageGenerator(t2i, judge, CLASSES, PHRASES, batch_size=2, steps=2, true_cfg_scale=1.0, size=64)
    request = SynthesisRequest(target_class=1, count=2, seed=11, cluster_id="c2")
    out = list(gen.generate(request, []))
    assert len(out) == 2 and all(isinstance(o, SyntheticImage) for o in out)
    assert [o.lineage["seed"] for o in out] == [11, 12]
    for o in out:
        assert o.image.shape == (64, 64, 3) and o.image.dtype == np.uint8
        assert o.lineage["prompt"] == "a photo of bare head" and o.lineage["teacher"] == judge.name
        # The labels are the teacher's answer on this very image, and they include the target class.
        found = judge.predict(o.image)
        np.testing.assert_array_equal(o.boxes, found.xyxy)
        assert o.class_ids.tolist() == found.class_id.tolist() and 1 in o.class_ids
    assert not np.array_equal(out[0].image, out[1].image)
    [again] = QwenImageGenerator(t2i, judge, CLASSES, PHRASES, batch_size=1, steps=2, true_cfg_scale=1.0,
                                 size=64).generate(SynthesisRequest(target_class=1, count=1, seed=12), [])
    np.testing.assert_array_equal(again.image, out[1].image)  # image i depends on its seed, not on its batch


def test_text_to_image_without_the_target_is_rejected(t2i, dino) -> None:  # noqa: ANN001
    gen = QwenImageGenerator(t2i, teacher(dino, box_threshold=1.0), CLASSES, PHRASES, steps=2, true_cfg_scale=1.0,
                             size=64)
    [out] = gen.generate(SynthesisRequest(target_class=1, count=1, seed=0), [])
    assert isinstance(out, Rejected) and out.reason == "teacher found no no_helmet"


def test_edit_changes_only_the_neighbourhood_of_a_verified_box() -> None:
    rng = np.random.default_rng(3)
    frame = LabelledFrame("ab" * 32, rng.integers(0, 256, (96, 128, 3), dtype=np.uint8),
                          np.array([[40.0, 30.0, 60.0, 52.0], [90.0, 10.0, 120.0, 80.0]]), np.array([0, 2]))
    gen = QwenImageEditGenerator(qwen_image_edit_pipe(), batch_size=2, steps=2, true_cfg_scale=1.0, size=64)
    request = SynthesisRequest(target_class=1, count=2, seed=4, confusable_classes=(0,),
                               edit_instruction="remove the hard hat from this worker's head")
    out = list(gen.generate(request, [frame]))
    assert len(out) == 2 and all(isinstance(o, SyntheticImage) for o in out)
    for o in out:
        assert o.image.shape == frame.image.shape
        np.testing.assert_array_equal(o.boxes, frame.boxes)
        assert o.class_ids.tolist() == [1, 2]
        assert o.lineage["edit_instruction"] == request.edit_instruction and o.lineage["from_class"] == 0
        x1, y1, x2, y2 = o.lineage["neighbourhood"]
        inside = np.zeros(frame.image.shape[:2], bool)
        inside[y1:y2, x1:x2] = True
        assert inside[30:52, 40:60].all()  # the edited box lies in its neighbourhood
        np.testing.assert_array_equal(o.image[~inside], frame.image[~inside])
        assert (o.image[30:52, 40:60] != frame.image[30:52, 40:60]).any()
    assert [o.lineage["seed"] for o in out] == [4, 5]
    assert not np.array_equal(out[0].image, out[1].image)
