-- Failure mining: the model's blind spots as clusters of failure records, their measured description,
-- and the prompts and edit instructions written for them (the lineage synthetic images point back to).

-- One blind spot of one (class, failure kind) group of one model's failures, or that group's noise bucket.
-- A re-run that finds a cluster again with nearly the same members keeps its id; a cluster no longer
-- found is retired, never deleted, so prompts and synthetic images keep their lineage.
CREATE TABLE failure_clusters (
    id VARCHAR PRIMARY KEY,
    model_version VARCHAR,            -- the failures' model; NULL: clustered over every model's failures
    class_id INTEGER NOT NULL,        -- the true class, or the predicted one for spurious detections
    kind VARCHAR NOT NULL CHECK (kind IN ('missed', 'spurious', 'confusion', 'localization')),
    noise BOOLEAN NOT NULL,           -- the group's failures that fit no cluster (kept, never dropped)
    size INTEGER NOT NULL,
    embedder VARCHAR NOT NULL,        -- whose crop vectors were clustered
    description JSON NOT NULL,        -- measured attributes: bins with shares, medians, colours, confused-with ...
    medoids JSON NOT NULL,            -- failure ids nearest the cluster's centre, nearest first
    params JSON NOT NULL,             -- seed, min size, k, silhouette and its null
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    retired_at TIMESTAMPTZ
);

CREATE TABLE failure_cluster_members (
    cluster_id VARCHAR NOT NULL,
    failure_id VARCHAR NOT NULL,
    PRIMARY KEY (cluster_id, failure_id)
);

-- Text for generators, one row per variant; lineage: cluster id, failure ids, attributes, writer version.
CREATE TABLE prompts (
    id VARCHAR PRIMARY KEY,           -- a hash of everything below but the time: rewriting is idempotent
    cluster_id VARCHAR NOT NULL,
    variant INTEGER NOT NULL,         -- 0: what the cluster fixes only; 1..: the rest varied by seed
    seed INTEGER NOT NULL,
    target_class INTEGER NOT NULL,
    confusable_class INTEGER,         -- the neighbour an edit turns into the target class
    prompt VARCHAR NOT NULL,
    negative_prompt VARCHAR NOT NULL,
    edit_instruction VARCHAR NOT NULL,
    writer_version VARCHAR NOT NULL,
    lineage JSON NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
