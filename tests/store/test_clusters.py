"""Clusters and prompts in a real catalog: a scope's active set replaced per run, lost clusters retired with their
prompts kept, prompts written twice stored once."""

from __future__ import annotations

from feedback.mining.prompts import Phrasebook, write_prompts
from store.clusters import Cluster, read_clusters, read_prompts, save_clusters, save_prompts
from store.settings import Settings, Workspace

DESCRIPTION = {"bins": {"lighting": {"value": "dark", "share": 1.0, "fixed": True}}, "medians": {}, "colours": [],
               "class": "no_helmet", "neighbour": None, "tags": {}}


def cluster(cid: str, members: tuple[str, ...], *, kind: str = "missed", noise: bool = False) -> Cluster:
    return Cluster(id=cid, model_version="m1", class_id=1, kind=kind, noise=noise, size=len(members), embedder="e",
                   description=DESCRIPTION, medoids=list(members[:2]), params={"seed": 0}, members=members)


def test_a_run_replaces_the_scopes_active_set_and_retires_what_it_lost(tmp_path):
    ws = Workspace(Settings(workspace=tmp_path / "ws"))
    with ws.catalog.connect() as con:
        save_clusters(con, "m1", [cluster("fc-a", ("1", "2", "3")), cluster("fc-b", ("4", "5")),
                                  cluster("fc-n", ("6",), noise=True)])
        save_clusters(con, None, [cluster("fc-all", ("1", "2"))])  # another scope: every model's failures
        first = read_clusters(con, model_version="m1")
        assert [(c.id, c.members) for c in first] == [("fc-a", ("1", "2", "3")), ("fc-b", ("4", "5")),
                                                      ("fc-n", ("6",))]  # largest first, noise last
        assert save_prompts(con, write_prompts(first[1], Phrasebook({}, {}, {}), variants=2)) == 2
        assert save_prompts(con, write_prompts(first[1], Phrasebook({}, {}, {}), variants=2)) == 0  # idempotent

        retired = save_clusters(con, "m1", [cluster("fc-a", ("1", "2", "3", "7")), cluster("fc-n", (), noise=True)])
        assert retired == 1
        now = read_clusters(con, model_version="m1")
        assert [(c.id, c.size, c.members) for c in now] == [("fc-a", 4, ("1", "2", "3", "7")), ("fc-n", 0, ())]
        gone = read_clusters(con, cluster_id="fc-b")[0]
        assert gone.retired and gone.members == ("4", "5")  # lineage stays readable
        assert len(read_prompts(con, "fc-b")) == 2
        assert [c.id for c in read_clusters(con, model_version=None)] == ["fc-all"]
        assert {c.id for c in read_clusters(con, any_model=True)} == {"fc-a", "fc-n", "fc-all"}
        created, updated = con.execute("SELECT created_at, updated_at FROM failure_clusters WHERE id = 'fc-a'"
                                       ).fetchone()
        assert updated >= created
