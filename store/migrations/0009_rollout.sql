-- Rolling models out: published artifacts (ONNX + reference set, what devices build and check),
-- rollouts (a canary share of the fleet, then promoted or rolled back), per-device pins, and what
-- devices now report about it in heartbeats and captures (optional fields; NULL from older devices).

CREATE TABLE artifacts (
    model_id VARCHAR PRIMARY KEY,      -- one artifact per registered model; publishing again replaces it
    onnx_sha256 VARCHAR NOT NULL,
    onnx_bytes BIGINT NOT NULL,
    reference_sha256 VARCHAR NOT NULL,
    manifest JSON NOT NULL,            -- edge.protocol.ArtifactManifest, as devices receive it
    parity JSON NOT NULL,              -- the ONNX against the .pt on holdout frames
    published_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE rollouts (
    id VARCHAR PRIMARY KEY,
    model_id VARCHAR NOT NULL,
    baseline_model_id VARCHAR,         -- what the rest of the fleet ran (NULL: each device's installed model)
    canary_pct DOUBLE NOT NULL CHECK (canary_pct > 0 AND canary_pct <= 100),
    state VARCHAR NOT NULL CHECK (state IN ('canary', 'promoted', 'rolled_back')),
    started_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- Every change an operator made, with the canary judgment it was made on.
CREATE TABLE rollout_events (
    rollout_id VARCHAR NOT NULL,
    happened_at TIMESTAMPTZ NOT NULL,
    action VARCHAR NOT NULL,           -- start | grow | promote | rollback
    canary_pct DOUBLE,
    forced BOOLEAN NOT NULL DEFAULT false,
    judgment JSON
);

CREATE TABLE device_pins (
    device VARCHAR PRIMARY KEY,
    model_id VARCHAR NOT NULL,
    pinned_at TIMESTAMPTZ NOT NULL
);

ALTER TABLE heartbeats ADD COLUMN frames BIGINT;
ALTER TABLE heartbeats ADD COLUMN errors BIGINT;
ALTER TABLE heartbeats ADD COLUMN update_state VARCHAR;
ALTER TABLE heartbeats ADD COLUMN update_target VARCHAR;
ALTER TABLE heartbeats ADD COLUMN update_detail VARCHAR;
ALTER TABLE captures ADD COLUMN update_state VARCHAR;
