"""The prompt writer: a failure cluster's measured description becomes text-to-image prompts ("[subject] [state]
[environment] [lighting] [viewpoint]"), seeded variants of what the cluster leaves open, a negative prompt, and an
edit instruction for edit-based generators; each with lineage back to the cluster and its failures.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from store.clusters import Cluster, Prompt
from store.settings import Settings

WRITER_VERSION = "prompt-writer-1"

LIGHTING = {"dark": "in dim, dark low light", "normal": "in even daylight", "bright": "in harsh, bright sunlight"}
CONTRAST = {"low": "flat and hazy", "high": "with hard shadows"}
SIZE = {"small": "small and far away from the camera", "medium": "at a medium distance from the camera",
        "large": "close to the camera, filling much of the frame"}
POSITION = {"edge": "at the edge of the frame, partly cut off", "off-centre": "off-centre in the frame",
            "centre": "in the centre of the frame"}
CROWDING = {"occluded": "partly hidden behind other objects", "crowded": "among a crowd of other people and objects",
            "isolated": ""}
FOCUS = {"blurry": "slightly out of focus, motion-blurred", "sharp": ""}
SHAPE = {"tall": "tall and narrow in view", "wide": "wide and low in view", "square": ""}
# Measured attributes a variant picks a value for when the cluster leaves them open (vocabulary groups too).
SLOTS = {"lighting": LIGHTING, "size": SIZE, "position": POSITION}
# What a fixed attribute rules out: said in the negative prompt.
OPPOSITE = {("lighting", "dark"): "bright daylight", ("lighting", "bright"): "darkness, night",
            ("size", "small"): "close-up, portrait", ("size", "large"): "distant wide shot",
            ("focus", "sharp"): "motion blur"}
NEGATIVE = "cartoon, illustration, painting, 3d render, text, watermark, deformed anatomy"
# A spurious cluster at least this much made of second boxes on objects already found (duplicates NMS let
# through) gets no prompts: more images of those objects would not teach the model to box each once.
DUPLICATE_SHARE = 0.5
# Draws a variant gets to differ from the ones before it.
REDRAWS = 32


def wants_images(cluster: Cluster) -> bool:
    """False for a cluster of duplicate boxes, whose remedy is NMS's IoU or the confidence threshold."""
    return not (cluster.kind == "spurious" and cluster.description.get("duplicates", 0.0) >= DUPLICATE_SHARE)


@dataclass(frozen=True)
class Phrasebook:
    """The words a site uses for its classes and edits, and the attribute vocabulary, from settings."""

    class_phrases: Mapping[str, Sequence[str]]
    edit_phrases: Mapping[str, str]
    vocabulary: Mapping[str, Sequence[str]]

    @classmethod
    def from_settings(cls, settings: Settings) -> Phrasebook:
        return cls(settings.class_phrases, settings.edit_phrases, settings.attribute_vocabulary)

    def phrase(self, class_name: str) -> str:
        """The class as generator text: its first configured phrase, else its name in words."""
        phrases = self.class_phrases.get(class_name)
        return phrases[0] if phrases else class_name.replace("_", " ")

    def unphrased(self, *class_names: str | None) -> list[str]:
        """Those of `class_names` without a configured phrase: prompts name them by their class names, which a
        generator may not understand ("no helmet"), so the lineage and the report say so."""
        return [n for n in dict.fromkeys(class_names) if n is not None and not self.class_phrases.get(n)]


def write_prompts(cluster: Cluster, book: Phrasebook, *, variants: int = 4, seed: int = 0) -> list[Prompt]:
    """`variants` prompts for the cluster: variant 0 says only what the cluster fixes; the others add a seeded
    choice for each slot the cluster leaves open (lighting, distance, place in frame, environment, weather,
    viewpoint), so a generator covers the rest while keeping the blind spot. None for a cluster of duplicate
    boxes (`wants_images`)."""
    if variants < 1:
        raise ValueError(f"variants {variants} must be at least 1")
    if not wants_images(cluster):
        return []
    d = cluster.description
    fixed = {k: v["value"] for k, v in d["bins"].items() if v["fixed"] and v["value"] is not None}
    tags = {g: v["value"] for g, v in d.get("tags", {}).items() if v["fixed"] and v["value"] is not None}
    target = cluster.class_name
    neighbour = d.get("neighbour") or None
    negative = _negative(cluster, book, fixed, neighbour)
    edit = _edit(cluster, book, fixed, neighbour)
    cluster_key = int(hashlib.sha1(cluster.id.encode()).hexdigest()[:8], 16)
    out: list[Prompt] = []
    for variant in range(variants):
        choices = _distinct_choices([seed, cluster_key, variant], [p.lineage["choices"] for p in out], fixed, tags,
                                    book.vocabulary) if variant else {}
        picked_bins = {k: v for k, v in choices.items() if k in SLOTS}
        picked_tags = {k: v for k, v in choices.items() if k not in SLOTS}
        text = _prompt(cluster, book, {**fixed, **picked_bins}, {**tags, **picked_tags}, neighbour)
        lineage = {"cluster_id": cluster.id, "failure_ids": list(cluster.members), "class": target,
                   "kind": cluster.kind, "fixed": fixed, "tags": tags, "choices": choices,
                   "attributes": d, "writer_version": WRITER_VERSION, "seed": seed, "variant": variant,
                   "unphrased": book.unphrased(target, (neighbour or {}).get("class"))}
        digest = hashlib.sha1("|".join([cluster.id, str(variant), str(seed), WRITER_VERSION, text, negative,
                                        edit]).encode()).hexdigest()
        out.append(Prompt(id=f"pr-{digest[:16]}", cluster_id=cluster.id, variant=variant, seed=seed,
                          target_class=cluster.class_id,
                          confusable_class=None if neighbour is None else int(neighbour["class_id"]),
                          prompt=text, negative_prompt=negative, edit_instruction=edit,
                          writer_version=WRITER_VERSION, lineage=lineage))
    return out


def _distinct_choices(key: list[int], taken: list[dict[str, str]], fixed: Mapping[str, str],
                      tags: Mapping[str, str], vocabulary: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """A variant's picks, redrawn (seeded, a few times at most) while they repeat an earlier variant's: variants
    exist to differ, and with few open slots two independent draws often coincide. The first draw is the one
    `key` always gave, so prompts that never collided keep their text and ids."""
    for attempt in range(REDRAWS):
        choices = _choices(np.random.default_rng(key + ([attempt] if attempt else [])), fixed, tags, vocabulary)
        if choices not in taken:
            break
    return choices  # every open combination is taken: a repeat is all there is


def _choices(rng: np.random.Generator, fixed: Mapping[str, str], tags: Mapping[str, str],
             vocabulary: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """One seeded pick for every open slot; slots the cluster fixes are left alone. Slot order is fixed so a
    seed always draws the same picks."""
    picks: dict[str, str] = {}
    for slot, options in SLOTS.items():
        if slot not in fixed:
            picks[slot] = list(options)[int(rng.integers(len(options)))]
    for group in sorted(vocabulary):
        if group not in tags and vocabulary[group]:
            picks[group] = vocabulary[group][int(rng.integers(len(vocabulary[group])))]
    return picks


def _colours(d: Mapping[str, Any]) -> str:
    names = [c["name"] for c in d.get("colours", [])][:2]
    return " and ".join(names)


def _prompt(cluster: Cluster, book: Phrasebook, bins: Mapping[str, str], tags: Mapping[str, str],
            neighbour: Mapping[str, Any] | None) -> str:
    d = cluster.description
    phrase = book.phrase(cluster.class_name)
    colours = _colours(d)
    if cluster.kind == "spurious":
        # The model sees this class where there is none: ask for its look-alikes, without the class itself.
        subject = f"{colours + ' ' if colours else ''}objects that look like {phrase} but are not"
    else:
        subject = phrase
    state = [CROWDING.get(bins.get("crowding", ""), ""), FOCUS.get(bins.get("focus", ""), ""),
             SHAPE.get(bins.get("shape", ""), "")]
    if colours and cluster.kind != "spurious":
        state.append(f"with {colours} colours")
    if cluster.kind == "confusion" and neighbour:
        state.append(f"easily mistaken for {book.phrase(neighbour['class'])}")
    # Vocabulary groups beyond these two are the site's own: their phrase joins the state as it is.
    state += [tags[g] for g in sorted(tags) if g not in ("environment", "viewpoint")]
    environment = tags.get("environment")
    lighting = " ".join(p for p in (LIGHTING.get(bins.get("lighting", ""), ""),
                                    CONTRAST.get(bins.get("contrast", ""), "")) if p)
    viewpoint = [SIZE.get(bins.get("size", ""), ""), POSITION.get(bins.get("position", ""), "")]
    if tags.get("viewpoint"):
        viewpoint.append(f"seen from {tags['viewpoint']}")
    parts = [f"a realistic photo of {subject}", *state, f"at {environment}" if environment else "", lighting,
             *viewpoint]
    return ", ".join(p for p in parts if p)


def _negative(cluster: Cluster, book: Phrasebook, fixed: Mapping[str, str],
              neighbour: Mapping[str, Any] | None) -> str:
    parts = [NEGATIVE]
    if cluster.kind == "spurious":
        parts.append(book.phrase(cluster.class_name))
    elif neighbour:
        parts.append(book.phrase(neighbour["class"]))  # the generator must not make the look-alike instead
    parts += [OPPOSITE[(k, v)] for k, v in sorted(fixed.items()) if (k, v) in OPPOSITE]
    return ", ".join(parts)


def _edit(cluster: Cluster, book: Phrasebook, fixed: Mapping[str, str], neighbour: Mapping[str, Any] | None) -> str:
    """For generators that edit a verified real frame: what to change, and that the rest stays."""
    target = cluster.class_name
    phrase = book.phrase(target)
    lighting = fixed.get("lighting")
    keep = f"keep the {'dark, dim ' if lighting == 'dark' else 'bright ' if lighting == 'bright' else ''}lighting"
    if cluster.kind == "spurious":
        colours = _colours(cluster.description)
        return (f"add {colours + ' ' if colours else ''}objects that look like {phrase} but are clearly not one; "
                f"{keep} and the rest of the scene unchanged")
    if cluster.kind == "localization":
        state = [w for w in (CROWDING.get(fixed.get("crowding", ""), ""),
                             POSITION.get(fixed.get("position", ""), "") if fixed.get("position") == "edge" else "")
                 if w]
        change = f"make {phrase} {' and '.join(state)}" if state else f"keep {phrase} and change only what is around it"
        return f"{change}; {keep} and the background unchanged"
    if neighbour:
        # A missed rare class is made from its confusable neighbour: the scene stays real, only the object changes.
        source = neighbour["class"]
        change = book.edit_phrases.get(f"{source}->{target}") or _change(book, source, target)
        return f"{change}; {keep}, the pose and the background unchanged"
    where = SIZE.get(fixed.get("size", ""), "")
    return f"add {phrase}{', ' + where if where else ''}, where one fits naturally; {keep} and the rest unchanged"


def _change(book: Phrasebook, source: str, target: str) -> str:
    """The generic edit from one class into another. Without phrases for the object being edited, its name in
    words would pose as a description ("turn package into no helmet"); the class names are given as what they
    are, labels, until class_phrases says what they look like."""
    if book.unphrased(source):
        return f"change this {source} into: {target if book.unphrased(target) else book.phrase(target)}"
    return f"turn {book.phrase(source)} into {book.phrase(target)}"
