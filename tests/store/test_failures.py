"""store/failures.py on a real catalog: a capture's failure records are replaced as a whole, and counted by model."""

from __future__ import annotations

from datetime import datetime, timezone

import duckdb
import pytest

from edge.protocol import utc_now
from store.catalog import Catalog
from store.clusters import Cluster, save_clusters
from store.failures import (
    failed_captures, failure_counts, failure_crops, failure_ids, failure_model_versions, failure_rows,
    failures_verified_boxes, most_confused_class, replace_failures, unclustered_failures, verified_box_classes,
)


def _row(fid: str, capture: str, model: str, kind: str, true: int | None, predicted: int | None) -> tuple:
    return (fid, capture, "label", model, kind, true, predicted, 0.5, None, 0.0, 0.0, 10.0, 10.0, utc_now())


def test_a_capture_s_records_are_replaced_and_counted_per_model(catalog) -> None:
    with catalog.connect() as con:
        replace_failures(con, "c1", [_row("f1", "c1", "m1", "missed", 0, None),
                                     _row("f2", "c1", "m1", "spurious", None, 1)])
        replace_failures(con, "c2", [_row("f3", "c2", "m2", "confusion", 0, 2)])
        replace_failures(con, "c1", [_row("f4", "c1", "m1", "missed", 3, None)])  # a re-review: the latest verdict
        every = sorted(failure_counts(con, None))
        m1 = failure_counts(con, "m1")
        assert (failed_captures(con, None), failed_captures(con, "m1"), failed_captures(con, "nobody")) == (2, 1, 0)
        assert sorted(failure_ids(con, ("missed", "confusion"))) == ["f3", "f4"]
        replace_failures(con, "c2", [])
        assert failed_captures(con, None) == 1
    assert every == [("confusion", 0, 2, 1), ("missed", 3, None, 1)]
    assert m1 == [("missed", 3, None, 1)]


T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def con(tmp_path) -> duckdb.DuckDBPyConnection:
    with Catalog(tmp_path / "catalog.duckdb").connect() as con:
        con.execute("INSERT INTO captures (id, sha256, device, camera, captured_at, received_at, frame_width, "
                    "frame_height, loaded_at) VALUES ('c1', 'sha1', 'd1', 'cam1', ?, ?, 640, 480, ?)", [T0, T0, T0])
        con.executemany("INSERT INTO failures VALUES (?, 'c1', 'l1', ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?)", [
            ("f2", "m1", "confusion", 1, 2, None, 10, 10, 20, 20, T0),
            ("f1", "m1", "missed", 1, None, None, 0, 0, 5, 5, T0),
            ("f3", "m2", "confusion", 3, 1, None, 30, 30, 40, 40, T0),
            ("f4", "m2", "confusion", 2, 1, None, 50, 50, 60, 60, T0),
        ])
        con.executemany("INSERT INTO label_boxes VALUES ('l1', ?, ?, ?, ?, ?, ?)",
                        [(1, 2, 10.0, 10.0, 20.0, 20.0), (0, 1, 0.0, 0.0, 5.0, 5.0)])
        yield con


def test_failures_come_in_id_order_with_their_frame_and_scope(con) -> None:
    rows = failure_rows(con, None)
    assert [r.id for r in rows] == ["f1", "f2", "f3", "f4"]
    assert (rows[0].sha256, rows[0].camera, rows[0].frame_width, rows[0].kind) == ("sha1", "cam1", 640, "missed")
    assert [r.id for r in failure_rows(con, "m2")] == ["f3", "f4"]
    assert failure_model_versions(con) == ["m1", "m2"]
    assert failures_verified_boxes(con, "m1")["l1"].tolist() == [[0, 0, 5, 5], [10, 10, 20, 20]]  # by box index
    assert failure_crops(con, ["f2", "gone"]) == {"f2": ("sha1", 10.0, 10.0, 20.0, 20.0)}


def test_only_failures_outside_active_clusters_count_as_new(con) -> None:
    assert unclustered_failures(con) == 4
    cluster = Cluster(id="fc", model_version=None, class_id=1, kind="confusion", noise=False, size=2, embedder="e",
                      description={}, medoids=["f2"], params={}, members=("f2", "f3"))
    save_clusters(con, None, [cluster])
    assert unclustered_failures(con) == 2
    save_clusters(con, None, [])  # retired: its members are unclustered again
    assert unclustered_failures(con) == 4


def test_the_most_confused_class_counts_both_directions(con) -> None:
    assert most_confused_class(con, 1) == 2  # 1->2 and 2->1: twice; 3->1: once
    assert most_confused_class(con, 3) == 1
    assert most_confused_class(con, 7) is None
    assert verified_box_classes(con) == {"l1/0": 1, "l1/1": 2}
