"""store/vectors.py on a real catalog: vectors are stored once per (kind, ref, model) and read back as one matrix,
and the catalog says which captures still lack one."""

from __future__ import annotations

import numpy as np

from store.inbox import load_inbox
from store.vectors import BOX, CAPTURE, box_ref, captures_without_vectors, read_vectors, store_vectors


def test_stored_vectors_come_back_in_ref_order_and_the_first_stored_stands(catalog) -> None:
    first = [("b", np.array([0.0, 1.0])), ("a", np.array([1.0, 0.0]))]
    assert store_vectors(catalog, CAPTURE, "m", first) == 2
    assert store_vectors(catalog, CAPTURE, "m", [("a", np.array([5.0, 5.0])), ("c", np.array([0.5, 0.5]))]) == 1
    with catalog.connect() as con:
        refs, vectors = read_vectors(con, CAPTURE, "m")
        wanted, some = read_vectors(con, CAPTURE, "m", ["c", "a", "missing"])
        other = read_vectors(con, BOX, "m")
    assert refs == ["a", "b", "c"]
    np.testing.assert_array_equal(vectors, np.float32([[1, 0], [0, 1], [0.5, 0.5]]))
    assert vectors.dtype == np.float32
    assert wanted == ["a", "c"]
    np.testing.assert_array_equal(some, np.float32([[1, 0], [0.5, 0.5]]))
    assert other[0] == [] and other[1].shape == (0, 0)
    assert store_vectors(catalog, CAPTURE, "m", []) == 0


def test_captures_without_vectors_are_those_the_model_has_not_embedded(catalog, inbox, make_capture) -> None:
    records = [make_capture(i) for i in range(3)]
    for r in records:
        inbox.add_capture(r)
    load_inbox(catalog, inbox)
    store_vectors(catalog, CAPTURE, "m", [(records[0].id, np.ones(2))])
    store_vectors(catalog, BOX, "m", [(box_ref(records[1].id, 0), np.ones(2))])  # a box is not the frame
    with catalog.connect() as con:
        todo = captures_without_vectors(con, "m")
        everything = captures_without_vectors(con, "other model")
    assert sorted(todo) == sorted((r.id, r.sha256) for r in records[1:])
    assert len(everything) == 3
