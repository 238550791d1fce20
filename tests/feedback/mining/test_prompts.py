"""The prompt writer on clusters described from known attributes: slots, variants, negatives, edit instructions."""

from __future__ import annotations

import pytest

from feedback.mining.attributes import describe
from feedback.mining.prompts import WRITER_VERSION, Phrasebook, write_prompts
from store.clusters import Cluster

BOOK = Phrasebook(
    class_phrases={"no_helmet": ["a construction worker's bare head without a hard hat", "bare head"],
                   "helmet": ["a construction worker wearing a hard hat"]},
    edit_phrases={"helmet->no_helmet": "remove the hard hat from this worker's head"},
    vocabulary={"environment": ["a construction site", "a warehouse"], "viewpoint": ["a security camera"],
                "season": ["winter", "summer"]},
)


def attrs(brightness: float = 120, rel_size: float = 0.15, centre_offset: float = 0.5, overlap: float = 0.0,
          colours: tuple[str, ...] = ()) -> dict:
    return {"brightness": brightness, "contrast": 40.0, "blur": 400.0, "rel_size": rel_size,
            "centre_offset": centre_offset, "truncated": False, "overlap": overlap, "neighbours": 0.0,
            "aspect": 1.0, "colours": list(colours)}


def cluster(kind: str, class_name: str, members: list[dict], *, neighbour: str | None = None,
            confused: list[str] | None = None, tags: dict | None = None) -> Cluster:
    ids = {"helmet": 0, "no_helmet": 1, "crane_hook": 7}
    extras = {"confused_with": confused} if confused else {}
    d = describe(members, extras)
    d["class"] = class_name
    d["neighbour"] = {"class_id": ids[neighbour], "class": neighbour, "source": "test"} if neighbour else None
    d["tags"] = tags or {}
    return Cluster(id=f"fc-{kind}-{class_name}", model_version="m1", class_id=ids[class_name], kind=kind,
                   noise=False, size=len(members), embedder="e", description=d, medoids=[], params={},
                   members=tuple(f"f{i}" for i in range(len(members))))


def test_a_missed_rare_class_in_the_dark_is_asked_for_in_the_dark_and_made_from_its_neighbour():
    c = cluster("missed", "no_helmet", [attrs(brightness=25)] * 8 + [attrs(brightness=90)] * 2, neighbour="helmet")
    first, *variants = write_prompts(c, BOOK, variants=5, seed=3)
    assert first.prompt == ("a realistic photo of a construction worker's bare head without a hard hat, "
                            "in dim, dark low light, at a medium distance from the camera, "
                            "off-centre in the frame")
    assert first.edit_instruction == ("remove the hard hat from this worker's head; keep the dark, dim lighting, "
                                      "the pose and the background unchanged")
    assert "a construction worker wearing a hard hat" in first.negative_prompt  # never the look-alike
    assert "bright daylight" in first.negative_prompt
    assert first.target_class == 1 and first.confusable_class == 0
    for p in variants:
        assert "in dim, dark low light" in p.prompt  # fixed by the cluster
        assert p.lineage["choices"].keys() == {"environment", "viewpoint", "season"}  # only what it leaves open
        assert p.lineage["choices"]["season"] in p.prompt  # a site's own vocabulary group joins the prompt
        parts = p.prompt.split(", ")
        assert p.lineage["choices"]["environment"] in p.prompt
        assert not {"centre", "off-centre", "edge", "small", "medium", "large"} & set(parts)  # only as phrases
    assert len({p.prompt for p in variants}) > 1
    assert first.lineage == {**first.lineage, "cluster_id": c.id, "failure_ids": list(c.members),
                             "writer_version": WRITER_VERSION, "variant": 0, "seed": 3}
    assert first.lineage["attributes"]["bins"]["lighting"]["value"] == "dark"


def test_open_slots_vary_and_unmeasured_ones_are_chosen_from_the_vocabulary():
    mixed = [attrs(brightness=b, rel_size=s) for b, s in [(20, 0.03), (120, 0.2), (240, 0.5), (120, 0.03)] * 3]
    c = cluster("missed", "no_helmet", mixed, neighbour="helmet")
    prompts = write_prompts(c, BOOK, variants=12, seed=0)
    assert not any(w in prompts[0].prompt for w in ("dark", "daylight", "sunlight", "far away", "close"))
    lighting = {p.lineage["choices"]["lighting"] for p in prompts[1:]}
    assert len(lighting) >= 2 and {p.lineage["choices"]["environment"] for p in prompts[1:]} <= {
        "a construction site", "a warehouse"}


def test_variants_differ_while_open_combinations_remain():
    # Dark, medium, off-centre: fixed. Open: environment (2) x viewpoint (1) x season (2), four combinations.
    c = cluster("missed", "no_helmet", [attrs(brightness=25)] * 10, neighbour="helmet")
    for seed in range(20):
        _, *variants = write_prompts(c, BOOK, variants=5, seed=seed)
        assert len({p.prompt for p in variants}) == 4, seed  # four draws, four combinations: each once
        again = write_prompts(c, BOOK, variants=5, seed=seed)
        assert [p.id for p in again[1:]] == [p.id for p in variants]  # still seeded
    # A fifth variant has nothing new left to ask for: it repeats one rather than failing.
    assert len(write_prompts(c, BOOK, variants=6)) == 6


def test_a_fixed_zero_shot_tag_is_kept_in_every_variant():
    tags = {"environment": {"value": "a warehouse", "share": 0.9, "fixed": True},
            "viewpoint": {"value": "a security camera", "share": 0.4, "fixed": False}}
    c = cluster("missed", "no_helmet", [attrs()] * 6, tags=tags)
    prompts = write_prompts(c, BOOK, variants=4)
    assert all("at a warehouse" in p.prompt for p in prompts)
    assert "seen from" not in prompts[0].prompt and "environment" not in prompts[1].lineage["choices"]
    # No neighbour: the edit adds the class where one fits.
    assert prompts[0].edit_instruction.startswith("add a construction worker's bare head without a hard hat")
    assert prompts[0].confusable_class is None


def test_spurious_clusters_ask_for_look_alikes_without_the_class():
    c = cluster("spurious", "helmet", [attrs(colours=("yellow", "grey"))] * 6)
    p = write_prompts(c, BOOK, variants=1)[0]
    assert p.prompt.startswith("a realistic photo of grey and yellow objects that look like a construction "
                               "worker wearing a hard hat but are not")
    assert p.negative_prompt.split(", ")[-2:] == ["a construction worker wearing a hard hat", "motion blur"]
    assert p.edit_instruction == ("add grey and yellow objects that look like a construction worker wearing a hard "
                                  "hat but are clearly not one; keep the lighting and the rest of the scene unchanged")


def test_spurious_clusters_made_mostly_of_second_boxes_on_found_objects_get_no_prompts():
    c = cluster("spurious", "helmet", [attrs(overlap=0.8)] * 6)
    c.description["duplicates"] = 0.5
    assert write_prompts(c, BOOK, variants=3) == []
    c.description["duplicates"] = 0.4  # mostly phantoms: their look-alikes are still worth asking for
    assert len(write_prompts(c, BOOK, variants=3)) == 3


def test_confusions_name_what_they_are_mistaken_for_and_unknown_classes_read_as_their_name():
    c = cluster("confusion", "crane_hook", [attrs(overlap=0.4)] * 6, neighbour="helmet", confused=["helmet"] * 6)
    p = write_prompts(c, BOOK, variants=1)[0]
    assert p.prompt.startswith("a realistic photo of crane hook, partly hidden behind other objects, "
                               "easily mistaken for a construction worker wearing a hard hat")
    assert p.edit_instruction.startswith("turn a construction worker wearing a hard hat into crane hook;")
    loc = write_prompts(cluster("localization", "helmet", [attrs(overlap=0.4)] * 6), BOOK, variants=1)[0]
    assert loc.edit_instruction.startswith("make a construction worker wearing a hard hat partly hidden")


def test_variants_must_be_positive():
    with pytest.raises(ValueError, match="variants 0"):
        write_prompts(cluster("missed", "helmet", [attrs()] * 5), BOOK, variants=0)


def test_classes_without_phrases_are_recorded_and_an_edit_from_one_names_labels_as_labels():
    """Without class_phrases a class is named by its class name; the prompt's lineage lists such classes (the
    report flags them), and an edit from an unphrased class never poses its name as a description."""
    bare = Phrasebook(class_phrases={}, edit_phrases={}, vocabulary={})
    missed = cluster("missed", "no_helmet", [attrs()] * 6, neighbour="helmet")
    p = write_prompts(missed, bare, variants=1)[0]
    assert p.lineage["unphrased"] == ["no_helmet", "helmet"]
    assert p.edit_instruction.startswith("change this helmet into: no_helmet;")
    assert "turn helmet into no helmet" not in p.edit_instruction
    # The phrased side keeps its words; a fully phrased pair says nothing is missing.
    assert write_prompts(cluster("missed", "no_helmet", [attrs()] * 6, neighbour="crane_hook"), BOOK,
                         variants=1)[0].edit_instruction.startswith(
        "change this crane_hook into: a construction worker's bare head without a hard hat;")
    assert write_prompts(missed, BOOK, variants=1)[0].lineage["unphrased"] == []
    confusion = cluster("confusion", "crane_hook", [attrs(overlap=0.4)] * 6, neighbour="helmet")
    assert write_prompts(confusion, BOOK, variants=1)[0].lineage["unphrased"] == ["crane_hook"]
