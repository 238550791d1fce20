"""Synthesis lineage in a real catalog: a run and its outcomes written and read back as the report reads them,
and the reads over synthetic images' lineage (perceptual hashes, hard verdicts) and frames (size, camera)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from store.catalog import Catalog
from store.labels import add_image
from store.synthesis import (
    Outcome, add_outcomes, all_runs, count_hard_synthetic, finish_run, image_cameras, image_sizes, latest_dataset_mix,
    outcome_images, outcome_reasons, start_run, synthetic_phashes,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_a_run_and_its_outcomes_read_back(tmp_path) -> None:
    with Catalog(tmp_path / "catalog.duckdb").connect() as con:
        start_run(con, "r1", "swap", "fc-1", 1, {"count": 2, "seed": 0}, "e")
        add_outcomes(con, "r1", [])  # a batch that made nothing
        add_image(con, "kept", 64, 48, "image/jpeg", "synthetic", "synthetic:swap",
                  {"filters": {"phash": ["ff", "01"], "champion": [{"hard": True}]}})
        add_outcomes(con, "r1", [Outcome(0, True, image_sha256="kept"),
                                 Outcome(1, False, reason="near_duplicate", thumb_sha256="thumb", lineage={"a": 1})])
        finish_run(con, "r1", kept=1, rejected=1, cost_usd=0.0, domain_gap={"frechet": 1.5})
        [run] = all_runs(con)
        assert run[:4] == ("r1", "swap", "fc-1", 1) and run[5:8] == (1, 1, 0.0)
        assert json.loads(run[8]) == {"frechet": 1.5}
        assert sorted(outcome_reasons(con), key=str) == sorted([("fc-1", 1, True, None),
                                                                ("fc-1", 1, False, "near_duplicate")], key=str)
        images = {row[4]: row for row in outcome_images(con)}
        assert json.loads(images["kept"][5])["filters"]["phash"] == ["ff", "01"]  # a kept image's own lineage
        assert json.loads(images["thumb"][5]) == {"a": 1}
        assert synthetic_phashes(con) == [("kept", ["ff", "01"])]
        assert count_hard_synthetic(con) == 1
        assert latest_dataset_mix(con) is None
        assert image_sizes(con) == {"kept": (64, 48)}


def test_cameras_by_image_take_the_first_and_leave_imported_ones_out(tmp_path) -> None:
    with Catalog(tmp_path / "catalog.duckdb").connect() as con:
        con.executemany("INSERT INTO captures (id, sha256, device, camera, captured_at, received_at, loaded_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)", [("c1", "s1", "d2", "cam", T0, T0, T0),
                                                         ("c2", "s1", "d1", "cam", T0, T0, T0)])
        assert image_cameras(con, ["s1", "imported"]) == {"s1": "d1/cam"}
