-- Human review: embeddings for diverse selection, what was sent to reviewers and what came
-- back, and the failure records that compare a verdict with what the deployed model said.

-- One vector per (kind, ref, model): kind 'capture' (ref = capture id) or 'crop' (ref = failure id).
CREATE TABLE embeddings (
    kind VARCHAR NOT NULL,
    ref VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    vector FLOAT[] NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (kind, ref, model)
);

-- A capture sent to a reviewer (Label Studio task, or the oracle) and what became of it.
CREATE TABLE review_tasks (
    capture_id VARCHAR PRIMARY KEY,
    reviewer VARCHAR NOT NULL,        -- label-studio | oracle
    project VARCHAR,                  -- Label Studio project id
    task_id VARCHAR,                  -- Label Studio task id
    strategy VARCHAR NOT NULL,        -- active | random
    score DOUBLE,
    score_parts JSON,                 -- uncertainty, diversity, class balance, operator flag
    status VARCHAR NOT NULL CHECK (status IN ('pushed', 'verified', 'skipped', 'cancelled')),
    pushed_at TIMESTAMPTZ NOT NULL,
    resolved_at TIMESTAMPTZ,
    label_id VARCHAR
);

-- What the deployed model got wrong on a reviewed capture (IoU >= 0.5, one-to-one matching).
CREATE TABLE failures (
    id VARCHAR PRIMARY KEY,
    capture_id VARCHAR NOT NULL,
    label_id VARCHAR NOT NULL,
    model_version VARCHAR,
    kind VARCHAR NOT NULL CHECK (kind IN ('missed', 'spurious', 'confusion', 'localization')),
    true_class INTEGER,               -- NULL for spurious
    predicted_class INTEGER,          -- NULL for missed
    confidence DOUBLE,
    iou DOUBLE,
    x1 DOUBLE NOT NULL,               -- the crop box: the true box, or the prediction if spurious
    y1 DOUBLE NOT NULL,
    x2 DOUBLE NOT NULL,
    y2 DOUBLE NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
