"""Acceptance: on a site whose model misses bare heads only in the dark or only when small and far away, the
clusters recover those two blind spots and each cluster's prompt names its own condition.

Everything runs through the product's path: captures in the catalog, verified labels, the review's failure
matching, the champion's features as the embedder, clusters saved and read back, prompts written from them.
"""

from __future__ import annotations

import pytest
from sklearn.metrics import adjusted_rand_score

from feedback.embeddings.choice import default_embedder
from feedback.mining.mine import mine_clusters
from feedback.mining.prompts import Phrasebook, write_prompts
from store.settings import Settings
from tests.feedback.mining.planted import (
    BARE,
    dark_frame,
    make_site,
    missed_bare_heads,
    plain_frame,
    planted_site,
    review,
)

PHRASES = {"no_helmet": ["a construction worker's bare head without a hard hat"]}


@pytest.fixture(scope="module")
def site(tmp_path_factory, scene_pt):
    ws, groups = planted_site(tmp_path_factory.mktemp("planted") / "ws", scene_pt, dark=range(100, 118),
                              far=range(200, 203), plain=range(300, 310))
    embedder = default_embedder(ws)
    return ws, groups, embedder, mine_clusters(ws, embedder, progress=False)


def bare_missed(clusters):
    return [c for c in clusters if c.class_id == BARE and c.kind == "missed"]


def test_clusters_recover_the_planted_blind_spots(site):
    ws, groups, embedder, clusters = site
    assert embedder.name.startswith("detector:")  # the champion's own features, offline
    truth = missed_bare_heads(ws, groups)
    assert {"dark", "far"} == set(truth.values()) and len(truth) >= 60
    found = {f: c.id for c in bare_missed(clusters) for f in c.members}  # noise is one more label
    assert set(found) == set(truth)
    ids = sorted(truth)
    ari = adjusted_rand_score([truth[f] for f in ids], [found[f] for f in ids])
    assert ari >= 0.8, f"adjusted Rand index {ari:.3f}"
    real = [c for c in bare_missed(clusters) if not c.noise]
    assert len(real) == 2
    # Each cluster's description fixes its planted condition, and only it.
    by_group = {max({"dark", "far"}, key=lambda g: sum(truth[f] == g for f in c.members)): c for c in real}
    assert by_group["dark"].description["bins"]["lighting"]["value"] == "dark"
    assert by_group["dark"].description["bins"]["lighting"]["fixed"]
    assert by_group["far"].description["bins"]["size"] == {"value": "small", "share": pytest.approx(1.0, abs=0.1),
                                                           "fixed": True}
    assert not (by_group["far"].description["bins"]["lighting"]["value"] == "dark"
                and by_group["far"].description["bins"]["lighting"]["fixed"])
    assert by_group["dark"].description["bins"]["size"]["value"] != "small"


def test_every_failure_lands_in_one_cluster_or_noise(site):
    ws, _, _, clusters = site
    with ws.catalog.connect() as con:
        failures = {f for (f,) in con.execute("SELECT id FROM failures").fetchall()}
    members = [f for c in clusters for f in c.members]
    assert len(members) == len(set(members)) == len(failures) and set(members) == failures
    # The plain frames' spurious boxes form a group of their own.
    assert any(c.kind == "spurious" and c.class_name == "helmet" for c in clusters)
    # Each spurious cluster knows how much of it is second boxes on objects already found.
    with ws.catalog.connect() as con:
        duplicate = dict(con.execute("SELECT id, iou IS NOT NULL FROM failures WHERE kind = 'spurious'").fetchall())
    for c in (c for c in clusters if c.kind == "spurious"):
        assert c.description["duplicates"] == pytest.approx(sum(duplicate[f] for f in c.members) / c.size, abs=1e-3)


def test_each_clusters_prompt_names_its_planted_attribute(site):
    ws, groups, _, clusters = site
    truth = missed_bare_heads(ws, groups)
    book = Phrasebook.from_settings(Settings(workspace=ws.settings.workspace, class_phrases=PHRASES))
    for c in (c for c in bare_missed(clusters) if not c.noise):
        group = max({"dark", "far"}, key=lambda g: sum(truth[f] == g for f in c.members))
        first, *others = write_prompts(c, book, variants=4)
        assert first.prompt.startswith("a realistic photo of a construction worker's bare head without a hard hat")
        if group == "dark":
            assert "dark" in first.prompt and "far away" not in first.prompt
            # Variants vary what the cluster leaves open, never its darkness.
            assert all("dim, dark low light" in p.prompt for p in others)
            assert "bright daylight" in first.negative_prompt
        else:
            assert "small and far away" in first.prompt and "dark" not in first.prompt
            assert all("small and far away" in p.prompt for p in others)
            assert "close-up" in first.negative_prompt
        assert len({p.prompt for p in others}) == len(others)  # seeded variants differ
        assert first.lineage["cluster_id"] == c.id and set(first.lineage["failure_ids"]) == set(c.members)


def test_rerun_is_deterministic_and_new_reviews_keep_cluster_ids(site):
    ws, groups, embedder, clusters = site
    again = mine_clusters(ws, embedder.name, progress=False)
    assert [(c.id, c.members) for c in again] == [(c.id, c.members) for c in clusters]
    truth = missed_bare_heads(ws, groups)
    before = {c.id: set(c.members) for c in bare_missed(clusters) if not c.noise}
    dark_id = max(before, key=lambda i: sum(truth[f] == "dark" for f in before[i]))
    # Two more dark frames are reviewed: their missed bare heads join the dark cluster, whose id stays.
    more = review(ws, [("dark", dark_frame(s)) for s in (150, 151)], blind=True, start=len(groups))
    new = set(missed_bare_heads(ws, groups | more)) - set(truth)
    assert len(new) >= 2
    after = mine_clusters(ws, default_embedder(ws), progress=False)
    now = {c.id: set(c.members) for c in bare_missed(after) if not c.noise}
    assert set(now) == set(before)
    assert len(now[dark_id] & new) >= len(new) - 1
    assert all(len(now[i] & before[i]) / len(now[i] | before[i]) >= 0.8 for i in now)
    with ws.catalog.connect() as con:
        retired = con.execute("SELECT count(*) FROM failure_clusters WHERE retired_at IS NOT NULL AND NOT noise "
                              "AND class_id = ? AND kind = 'missed'", [BARE]).fetchone()[0]
    assert retired == 0


def test_prompts_are_stable_for_a_seed(site):
    _, _, _, clusters = site
    book = Phrasebook.from_settings(Settings(class_phrases=PHRASES))
    c = next(c for c in bare_missed(clusters) if not c.noise)
    a, b = write_prompts(c, book, variants=3, seed=7), write_prompts(c, book, variants=3, seed=7)
    assert [p.prompt for p in a] == [p.prompt for p in b] and [p.id for p in a] == [p.id for p in b]
    other = write_prompts(c, book, variants=3, seed=8)
    assert a[0].prompt == other[0].prompt  # variant 0 says only what the cluster fixes
    assert [p.prompt for p in a[1:]] != [p.prompt for p in other[1:]]
    assert not {p.id for p in a} & {p.id for p in other}


def test_an_embedder_name_without_vectors_is_refused_by_name(site):
    ws, _, _, _ = site
    with pytest.raises(ValueError, match="'clip:never-run'"):
        mine_clusters(ws, "clip:never-run", progress=False)


def test_second_boxes_on_found_objects_are_told_apart_and_get_no_prompts(tmp_path, scene_pt):
    ws = make_site(tmp_path / "ws", scene_pt)
    crowded = [s for s in range(400, 440) if len(plain_frame(s)[1])][:12]  # a frame with an object to repeat
    review(ws, [("dup", plain_frame(s)) for s in crowded], blind=False)
    review(ws, [("plain", plain_frame(s)) for s in range(500, 512)], blind=False, start=12)
    clusters = mine_clusters(ws, default_embedder(ws), progress=False)
    with ws.catalog.connect() as con:
        duplicate = dict(con.execute("SELECT id, iou IS NOT NULL FROM failures WHERE kind = 'spurious'").fetchall())
    assert sum(duplicate.values()) == 12 and len(duplicate) == 24  # a duplicate a "dup" frame, a phantom a plain one
    book = Phrasebook({}, {}, {})
    spurious = [c for c in clusters if c.kind == "spurious"]
    for c in spurious:
        share = sum(duplicate[f] for f in c.members) / c.size
        assert c.description["duplicates"] == pytest.approx(share, abs=1e-3)
        assert (write_prompts(c, book) == []) == (share >= 0.5)
    # The phantom boxes (2, 2, 30, 30) all lie in one corner: they still get prompts for their look-alikes.
    assert any(write_prompts(c, book) for c in spurious)
