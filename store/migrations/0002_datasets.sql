-- Verified labels, dataset versions and the model registry (retraining and the gate).

-- The class list the catalog is labelled in: set by the first import, checked by every later one.
CREATE TABLE classes (
    id INTEGER PRIMARY KEY,
    name VARCHAR NOT NULL UNIQUE
);

-- Every image a label refers to, real (capture, import) or synthetic; the bytes are the blob.
CREATE TABLE images (
    sha256 VARCHAR PRIMARY KEY,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    media_type VARCHAR NOT NULL,
    origin VARCHAR NOT NULL CHECK (origin IN ('real', 'synthetic')),
    source VARCHAR,            -- import:<file>, capture:<id>, synthetic:<generator>
    lineage JSON,              -- synthetic: failure cluster -> prompt -> generator/seed -> filter scores
    created_at TIMESTAMPTZ NOT NULL
);

-- Which side of the wall an image is on. Holdout is sticky: once there, always there,
-- so the real validation set only ever grows.
CREATE TABLE splits (
    image_sha256 VARCHAR PRIMARY KEY,
    split VARCHAR NOT NULL CHECK (split IN ('train', 'holdout')),
    assigned_at TIMESTAMPTZ NOT NULL
);

-- One verdict on one image: who, when, from where. The latest verified one is the truth.
CREATE TABLE labels (
    id VARCHAR PRIMARY KEY,
    image_sha256 VARCHAR NOT NULL,
    label_hash VARCHAR NOT NULL,
    status VARCHAR NOT NULL CHECK (status IN ('verified', 'skipped', 'cancelled')),
    source VARCHAR NOT NULL,   -- import | review | synthetic
    annotator VARCHAR,
    created_at TIMESTAMPTZ NOT NULL,
    provenance JSON
);

CREATE TABLE label_boxes (
    label_id VARCHAR,
    idx INTEGER,
    class_id INTEGER NOT NULL,
    x1 DOUBLE NOT NULL,
    y1 DOUBLE NOT NULL,
    x2 DOUBLE NOT NULL,
    y2 DOUBLE NOT NULL,
    PRIMARY KEY (label_id, idx)
);

CREATE TABLE datasets (
    version INTEGER PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL,
    manifest_sha256 VARCHAR NOT NULL,
    n_train INTEGER NOT NULL,
    n_holdout INTEGER NOT NULL,
    n_synthetic INTEGER NOT NULL,
    params JSON
);

CREATE TABLE dataset_items (
    version INTEGER,
    image_sha256 VARCHAR,
    split VARCHAR NOT NULL,
    origin VARCHAR NOT NULL,
    label_id VARCHAR NOT NULL,
    label_hash VARCHAR NOT NULL,
    PRIMARY KEY (version, image_sha256)
);

CREATE TABLE models (
    id VARCHAR PRIMARY KEY,
    weights_sha256 VARCHAR NOT NULL,
    parent_id VARCHAR,
    dataset_version INTEGER,
    classes JSON NOT NULL,
    imgsz INTEGER NOT NULL,
    status VARCHAR NOT NULL CHECK (status IN ('candidate', 'champion', 'rejected', 'retired')),
    created_at TIMESTAMPTZ NOT NULL,
    metrics JSON
);

CREATE TABLE training_runs (
    id VARCHAR PRIMARY KEY,
    model_id VARCHAR NOT NULL,
    parent_id VARCHAR,
    dataset_version INTEGER NOT NULL,
    profile VARCHAR NOT NULL,
    params JSON NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    duration_s DOUBLE NOT NULL,
    weights_sha256 VARCHAR NOT NULL
);

CREATE TABLE gate_decisions (
    id VARCHAR PRIMARY KEY,
    challenger_id VARCHAR NOT NULL,
    champion_id VARCHAR,
    dataset_version INTEGER,
    promoted BOOLEAN NOT NULL,
    reasons JSON NOT NULL,
    challenger_metrics JSON NOT NULL,
    champion_metrics JSON,
    decided_at TIMESTAMPTZ NOT NULL
);
