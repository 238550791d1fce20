"""Zero-shot tags: with a CLIP embedder, every crop is tagged from the settings' vocabulary and clusters report
the tags they share. Random CLIP weights make the tags meaningless; this checks the path runs end to end."""

from __future__ import annotations

import numpy as np
import pytest

from feedback.embeddings.clip import ImageEmbedder
from feedback.mining.mine import mine_clusters
from feedback.mining.prompts import Phrasebook, write_prompts
from feedback.mining.tags import zero_shot_tags
from tests.feedback.mining.planted import planted_site

VOCABULARY = {"environment": ["a construction site", "a warehouse"], "time": ["daytime", "night"], "empty": []}


@pytest.fixture(scope="module")
def clip() -> ImageEmbedder:
    return ImageEmbedder()  # random weights, seeded: runs offline


def test_text_vectors_share_the_image_space(clip):
    text = clip.embed_texts(["a photo of a warehouse", "a photo of night"])
    assert text.shape == (2, clip.dim) and np.allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)
    assert not np.allclose(text[0], text[1])


def test_every_crop_gets_one_phrase_per_group_and_unembedded_ones_none(clip):
    vectors = clip.embed([np.full((40, 40, 3), v, np.uint8) for v in (20, 200)])
    vectors = np.vstack([vectors, np.full((1, clip.dim), np.nan, np.float32)])
    tags = zero_shot_tags(clip, vectors, VOCABULARY)
    assert [set(t) for t in tags] == [{"environment", "time"}, {"environment", "time"}, set()]
    assert all(t["time"] in VOCABULARY["time"] for t in tags[:2])
    with pytest.raises(TypeError, match="cannot embed text"):
        zero_shot_tags(object(), vectors, VOCABULARY)


def test_clusters_mined_with_clip_carry_tags_into_prompts(tmp_path, scene_pt, clip):
    ws, _ = planted_site(tmp_path / "ws", scene_pt, dark=range(100, 104), far=[200], plain=[300, 301])
    ws.settings.attribute_vocabulary = VOCABULARY
    clusters = mine_clusters(ws, clip, progress=False)
    assert clusters and all(c.embedder == clip.name for c in clusters)
    for c in clusters:
        assert set(c.description["tags"]) == {"environment", "time"}
        assert all(t["value"] in VOCABULARY[g] for g, t in c.description["tags"].items())
    book = Phrasebook(class_phrases={}, edit_phrases={}, vocabulary=VOCABULARY)
    for c in clusters:
        fixed = {t["value"] for t in c.description["tags"].values() if t["fixed"]}
        prompt = write_prompts(c, book, variants=1)[0].prompt
        assert all(v in prompt for v in fixed)
