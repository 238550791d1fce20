"""Synthesis reads failure clusters through `feedback.mining`: target, neighbour, look, prompts and members."""

from __future__ import annotations

from pathlib import Path

import pytest

from feedback.synthesis.clusters import ClusterError, active_cluster_ids, load_cluster
from store.clusters import Cluster, Prompt, save_clusters, save_prompts
from store.labels import ensure_classes
from store.settings import Settings, Workspace

DARK_AND_SMALL = {
    "bins": {"lighting": {"value": "dark", "share": 0.8, "fixed": True},
             "position": {"value": "edge", "share": 0.5, "fixed": False}},
    "medians": {"rel_size": 0.05},
    "class": "no_helmet",
    "neighbour": {"class_id": 0, "class": "helmet", "source": "confusions"},
}


def test_a_mined_cluster_becomes_a_request_and_other_kinds_are_refused(tmp_path: Path):
    ws = Workspace(Settings(workspace=tmp_path / "ws", fsync=False))
    with ws.catalog.connect() as con:
        ensure_classes(con, ["helmet", "no_helmet", "vest"])
        save_clusters(con, None, [
            Cluster("c-missed", None, 1, "missed", False, 3, "emb", DARK_AND_SMALL, ["f1"], {},
                    members=("f1", "f2", "f3")),
            Cluster("c-noise", None, 1, "missed", True, 2, "emb", DARK_AND_SMALL, ["f4"], {}, members=("f4", "f5")),
            Cluster("c-spurious", None, 2, "spurious", False, 3, "emb", {}, ["f6"], {}, members=("f6",)),
        ])
        save_prompts(con, [Prompt("p1", "c-missed", 0, 0, 1, 0, "a bare head at night", "cartoon",
                                  "remove the hard hat; keep the lighting", "w1", {})])
    assert active_cluster_ids(ws) == ["c-missed"]  # noise and spurious clusters ask for no new objects
    spec = load_cluster(ws, "c-missed")
    assert (spec.target_class, spec.kind, spec.confusable_class) == (1, "missed", 0)
    assert spec.failure_ids == ("f1", "f2", "f3")
    assert spec.attributes["brightness"] == "dark" and spec.attributes["rel_size"] == 0.05
    assert "position" not in spec.attributes  # only what the cluster agrees on
    assert spec.prompts[0]["edit_instruction"] == "remove the hard hat; keep the lighting"
    with pytest.raises(ClusterError, match="spurious"):
        load_cluster(ws, "c-spurious")
    with pytest.raises(ClusterError, match="no failure cluster 'c-gone'"):
        load_cluster(ws, "c-gone")
