-- Synthesis: one row per generator run, and the fate of every image it made (kept, or rejected and why).
-- Kept images are ordinary `images` rows (origin 'synthetic', lineage JSON); rejected ones keep only a thumbnail.

CREATE TABLE synthesis_runs (
    id VARCHAR PRIMARY KEY,
    generator VARCHAR NOT NULL,
    cluster_id VARCHAR,               -- the failure cluster it was made for; NULL when asked for a class
    target_class INTEGER NOT NULL,
    request JSON NOT NULL,            -- count, seed, prompts or edit instruction, attributes, cost cap
    embedder VARCHAR,                 -- whose vectors the filters compared
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    n_kept INTEGER,
    n_rejected INTEGER,
    cost_usd DOUBLE,
    domain_gap JSON                   -- Fréchet distance to real frames of the same cameras, with its real-vs-real scale
);

CREATE TABLE synthesis_outcomes (
    run_id VARCHAR NOT NULL,
    idx INTEGER NOT NULL,             -- the generator's output number within the run
    kept BOOLEAN NOT NULL,
    image_sha256 VARCHAR,             -- kept: the stored image
    reason VARCHAR,                   -- rejected: label sanity, near_duplicate, off_cluster, or the generator's own
    detail VARCHAR,
    thumb_sha256 VARCHAR,             -- rejected with pixels: a small JPEG for the report's contact sheet
    lineage JSON,                     -- rejected: what the kept ones keep in images.lineage
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (run_id, idx)
);
