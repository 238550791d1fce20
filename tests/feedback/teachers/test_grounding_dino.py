"""The GroundingDINO (+ SAM) teacher on tiny random models: phrases map to classes, thresholds hold, SAM tightens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from feedback.teachers.grounding_dino import GroundingDinoTeacher, Ontology, phrase_spans, tight_box
from feedback.teachers.port import Teacher
from store.settings import Settings
from tests.feedback.synthesis.tiny_models import grounding_dino, sam

CLASSES = ("helmet", "no_helmet", "person")
PHRASES = {"no_helmet": ["bare head", "head without helmet"]}
IMAGE = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def dino():  # noqa: ANN201
    return grounding_dino()


@pytest.fixture(scope="module")
def sam_parts():  # noqa: ANN201
    return sam()


def teacher(dino, **kw) -> GroundingDinoTeacher:  # noqa: ANN001
    return GroundingDinoTeacher(*dino, CLASSES, Ontology.of(CLASSES, PHRASES), **kw)


def test_ontology_maps_phrases_to_classes() -> None:
    onto = Ontology.of(CLASSES, PHRASES)
    assert onto.phrases == ("helmet", "bare head", "head without helmet", "person")
    assert onto.class_ids == (0, 1, 1, 2)
    assert onto.caption == "helmet. bare head. head without helmet. person."
    assert Ontology.of(CLASSES).phrases == ("helmet", "no helmet", "person")
    with pytest.raises(ValueError, match=r"\['hat'\]"):
        Ontology.of(CLASSES, {"hat": ["a hat"]})
    with pytest.raises(ValueError, match="free of '.'"):
        Ontology.of(CLASSES, {"person": ["a man. a woman"]})


def test_each_phrase_finds_its_own_tokens(dino) -> None:  # noqa: ANN001
    onto = Ontology.of(CLASSES, PHRASES)
    tokenizer = dino[1].tokenizer
    ids = tokenizer(onto.caption)["input_ids"]
    for phrase, span in zip(onto.phrases, phrase_spans(tokenizer, onto), strict=True):
        assert tokenizer.decode([ids[t] for t in span]).replace(" ", "") == phrase.replace(" ", "")


def test_predicts_project_classes_as_the_reference_post_processing_does(dino) -> None:  # noqa: ANN001
    t = teacher(dino, box_threshold=0.0, text_threshold=0.0)
    assert isinstance(t, Teacher) and t.classes == CLASSES
    found = t.predict(IMAGE)
    assert len(found) > 0
    assert ((found.xyxy >= 0) & (found.xyxy <= [80, 48, 80, 48])).all()
    onto = t.ontology
    assert [onto.class_ids[onto.phrases.index(p)] for p in found.data["phrase"]] == found.class_id.tolist()
    # Every box is one that transformers' own post-processing finds for the same image and caption.
    model, processor = dino
    from PIL import Image

    inputs = processor(images=Image.fromarray(IMAGE[..., ::-1]), text=onto.caption, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
    [ref] = processor.post_process_grounded_object_detection(out, inputs["input_ids"], threshold=0.0,
                                                             text_threshold=0.0, target_sizes=[(48, 80)])
    ref_boxes = ref["boxes"].numpy().clip(0, [80, 48, 80, 48])
    for box in found.xyxy:
        assert np.abs(ref_boxes - box).max(axis=1).min() < 1e-3
    assert np.array_equal(t.predict(IMAGE).xyxy, found.xyxy)  # deterministic


def test_thresholds_filter(dino) -> None:  # noqa: ANN001
    everything = teacher(dino, box_threshold=0.0, text_threshold=0.0).predict(IMAGE)
    cut = float(np.median(everything.confidence))
    some = teacher(dino, box_threshold=cut, text_threshold=0.0).predict(IMAGE)
    assert 0 < len(some) < len(everything) and (some.confidence > cut).all()
    assert len(teacher(dino, box_threshold=1.0).predict(IMAGE)) == 0


def test_sam_turns_boxes_into_their_masks_tight_boxes(dino, sam_parts) -> None:  # noqa: ANN001
    plain = teacher(dino, box_threshold=0.0, text_threshold=0.0).predict(IMAGE)
    refined = teacher(dino, box_threshold=0.0, text_threshold=0.0, sam=sam_parts[0],
                      sam_processor=sam_parts[1]).predict(IMAGE)
    assert refined.mask is not None and refined.mask.shape == (len(plain), 48, 80)
    assert refined.class_id.tolist() == plain.class_id.tolist()
    for box, mask, before in zip(refined.xyxy, refined.mask, plain.xyxy, strict=True):
        expected = tight_box(mask)
        np.testing.assert_array_equal(box, before if expected is None else expected)
    assert not np.array_equal(refined.xyxy, plain.xyxy)


def test_tight_box() -> None:
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True
    assert tight_box(mask).tolist() == [3, 2, 9, 5]
    assert tight_box(np.zeros((4, 4), bool)) is None


def test_loads_from_settings(dino, tmp_path) -> None:  # noqa: ANN001
    model, processor = dino
    model.save_pretrained(tmp_path / "gd")
    processor.save_pretrained(tmp_path / "gd")
    settings = Settings(workspace=tmp_path / "ws", grounding_model=str(tmp_path / "gd"), class_phrases=PHRASES,
                        grounding_box_threshold=0.0, grounding_text_threshold=0.0)
    loaded = GroundingDinoTeacher.from_settings(settings, CLASSES)
    np.testing.assert_allclose(loaded.predict(IMAGE).xyxy, teacher(dino, box_threshold=0.0,
                                                                     text_threshold=0.0).predict(IMAGE).xyxy, atol=1e-4)
