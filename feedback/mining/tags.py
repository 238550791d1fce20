"""Zero-shot tags for failure crops: with CLIP weights configured, each crop gets the closest phrase of every
group of the settings' attribute vocabulary (environment, weather, viewpoint ...), scored against its text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# CLIP was trained on captions: a phrase scores better inside one than bare.
TEMPLATE = "a photo of {}"


def zero_shot_tags(embedder: object, vectors: np.ndarray,
                   vocabulary: Mapping[str, Sequence[str]]) -> list[dict[str, str]]:
    """Per row of `vectors` (the crops' image vectors from `embedder`), the best phrase of each vocabulary
    group; rows without a vector get no tags. `embedder` must embed text into its image space
    (`embed_texts`, as CLIP does); pretrained weights make the tags meaningful, random ones only runnable."""
    embed_texts = getattr(embedder, "embed_texts", None)
    if embed_texts is None:
        raise TypeError(f"{getattr(embedder, 'name', embedder)!r} cannot embed text: zero-shot tags need CLIP")
    tags: list[dict[str, str]] = [{} for _ in range(len(vectors))]
    usable = np.isfinite(vectors).all(axis=1) if vectors.size else np.zeros(len(vectors), bool)
    if not usable.any():
        return tags
    for group, phrases in vocabulary.items():
        if not phrases:
            continue
        text = np.asarray(embed_texts([TEMPLATE.format(p) for p in phrases]), np.float32)
        if text.shape[1] != vectors.shape[1]:
            raise ValueError(f"text vectors ({text.shape[1]}) and crop vectors ({vectors.shape[1]}) differ in "
                             "size: the crops were embedded by another model")
        best = np.argmax(np.nan_to_num(vectors) @ text.T, axis=1)
        for i in np.flatnonzero(usable):
            tags[i][group] = phrases[int(best[i])]
    return tags
