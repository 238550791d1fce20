"""`edgeloop clusters` and `edgeloop prompts` on a site with planted blind spots, through the CLI."""

from __future__ import annotations

import json

import cv2
import pytest
from typer.testing import CliRunner

from flows.cli import app
from tests.feedback.mining.planted import make_site, plain_frame, planted_site, review

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def site(tmp_path_factory, scene_pt):
    root = tmp_path_factory.mktemp("mining_cli") / "ws"
    ws, _ = planted_site(root, scene_pt, dark=range(100, 108), far=[200], plain=[300, 301])
    return ws, ["-w", str(root)]


def test_bad_values_are_named(site):
    _, w = site
    code, _, err = run("prompts", *w)
    assert code == 2 and "edgeloop clusters" in err  # nothing clustered yet
    code, _, err = run("clusters", "--model-version", "nope", *w)
    assert code == 2 and "'nope'" in err and "m1" in err
    code, _, err = run("clusters", "--min-size", "1", *w)
    assert code == 2 and "--min-size 1" in err


def test_clusters_then_prompts(site):
    ws, w = site
    code, out, err = run("clusters", "--json", *w)
    assert code == 0, err
    result = json.loads(out)
    with ws.catalog.connect() as con:
        failures = {f for (f,) in con.execute("SELECT id FROM failures").fetchall()}
    members = [f for item in result["items"] for f in item["members"]]
    # Every failure belongs to exactly one cluster or to its group's noise.
    assert len(members) == len(set(members)) == result["failures"] == len(failures) and set(members) == failures
    assert result["embedder"].startswith("detector:") and result["noise"] == sum(
        i["size"] for i in result["items"] if i["noise"])
    bare = [i for i in result["items"] if i["class"] == "no_helmet" and i["kind"] == "missed" and not i["noise"]]
    assert {i["fixed"].get("lighting") for i in bare} >= {"dark"} and {i["fixed"].get("size") for i in bare} >= {
        "small"}
    for item in result["items"]:
        sheet = cv2.imread(item["sheet"])
        assert sheet is not None and sheet.shape[0] == 36 + 128
        assert set(item["medoids"]) <= set(item["members"]) and item["medoids"]
    again = json.loads(run("clusters", "--json", *w)[1])
    assert [(i["id"], i["members"]) for i in again["items"]] == [(i["id"], i["members"]) for i in result["items"]]

    code, out, err = run("prompts", "--variants", "3", "--json", *w)
    assert code == 0, err
    written = json.loads(out)
    real = [i for i in result["items"] if not i["noise"]]
    assert len(written["prompts"]) == 3 * len(real) == written["added"]
    assert {p["cluster"] for p in written["prompts"]} == {i["id"] for i in real}
    assert all(p["prompt"].startswith("a realistic photo of") and p["negative_prompt"] and p["edit_instruction"]
               for p in written["prompts"])
    dark = next(i for i in bare if i["fixed"].get("lighting") == "dark")
    assert all("dark" in p["prompt"] for p in written["prompts"] if p["cluster"] == dark["id"])
    assert json.loads(run("prompts", "--variants", "3", "--json", *w)[1])["added"] == 0  # stored once
    with ws.catalog.connect() as con:
        lineage = json.loads(con.execute("SELECT lineage FROM prompts WHERE cluster_id = ? AND variant = 0",
                                         [dark["id"]]).fetchone()[0])
    assert lineage["cluster_id"] == dark["id"] and sorted(lineage["failure_ids"]) == sorted(dark["members"])

    noise = next(i for i in result["items"] if i["noise"])
    code, out, _ = run("prompts", "--cluster", noise["id"], "--variants", "1", "--json", *w)
    assert code == 0 and [p["cluster"] for p in json.loads(out)["prompts"]] == [noise["id"]]
    code, _, err = run("prompts", "--cluster", "fc-nope", *w)
    assert code == 2 and "fc-nope" in err
    code, _, err = run("prompts", "--variants", "0", *w)
    assert code == 2 and "--variants 0" in err
    code, out, _ = run("prompts", "--cluster", dark["id"], "--variants", "2", *w)
    assert code == 0 and "edit:" in out and dark["id"] in out


def test_the_table_for_people(site):
    _, w = site
    code, out, err = run("clusters", *w)
    assert code == 0, err
    assert "failure clusters" in out and "no_helmet" in out and "contact sheets:" in out


def test_a_cluster_of_duplicate_boxes_is_shown_without_prompts(tmp_path, scene_pt):
    ws = make_site(tmp_path / "ws", scene_pt)
    crowded = [s for s in range(400, 440) if len(plain_frame(s)[1])][:12]
    review(ws, [("dup", plain_frame(s)) for s in crowded], blind=False)  # a second box on a found object each
    w = ["-w", str(tmp_path / "ws")]
    code, out, err = run("clusters", "--json", *w)
    assert code == 0, err
    spurious = [i for i in json.loads(out)["items"] if i["kind"] == "spurious"]
    assert spurious
    for item in spurious:
        code, out, err = run("prompts", "--cluster", item["id"], *w)
        assert code == 0, err
        assert "no prompts: 100% are second boxes on objects already found" in out and "edit:" not in out
        code, out, err = run("prompts", "--cluster", item["id"], "--json", *w)
        assert code == 0, err
        doc = json.loads(out)
        assert doc["prompts"] == [] and [n["cluster"] for n in doc["no_prompts"]] == [item["id"]]
        assert doc["no_prompts"][0]["reason"].startswith("100% are second boxes")
