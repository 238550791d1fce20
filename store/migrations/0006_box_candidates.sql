-- Box-level review selection: what the deployed model sees in each candidate capture down to a low
-- confidence (the boxes a second opinion scores), recorded per embedder so models never mix.

CREATE TABLE box_candidates (
    capture_id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,           -- the embedder name (detector weights sha, layers, sizes)
    idx INTEGER NOT NULL,
    class_id INTEGER NOT NULL,
    confidence DOUBLE NOT NULL,
    x1 DOUBLE NOT NULL,
    y1 DOUBLE NOT NULL,
    x2 DOUBLE NOT NULL,
    y2 DOUBLE NOT NULL,
    PRIMARY KEY (capture_id, model, idx)
);

-- Which captures a model has scanned (a scan may find no box at all).
CREATE TABLE box_scans (
    capture_id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    boxes INTEGER NOT NULL,
    scanned_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (capture_id, model)
);
