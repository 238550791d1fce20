-- The first schema: devices, what they uploaded (captures, their detections and the
-- reasons they were uploaded), and how they are doing (heartbeats).

CREATE TABLE devices (
    name VARCHAR PRIMARY KEY,
    token_sha256 VARCHAR UNIQUE NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);

CREATE TABLE captures (
    id VARCHAR PRIMARY KEY,
    sha256 VARCHAR NOT NULL,
    device VARCHAR NOT NULL,
    camera VARCHAR NOT NULL,
    captured_at TIMESTAMPTZ NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    frame_width INTEGER,
    frame_height INTEGER,
    media_type VARCHAR,
    bytes BIGINT,
    model_version VARCHAR,
    source_uri VARCHAR,
    source_frame BIGINT,
    source_ts DOUBLE,
    note VARCHAR,
    loaded_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE detections (
    capture_id VARCHAR,
    idx INTEGER,
    class_id INTEGER,
    class_name VARCHAR,
    confidence DOUBLE,
    x1 DOUBLE,
    y1 DOUBLE,
    x2 DOUBLE,
    y2 DOUBLE,
    PRIMARY KEY (capture_id, idx)
);

CREATE TABLE triggers (
    capture_id VARCHAR,
    reason VARCHAR,
    PRIMARY KEY (capture_id, reason)
);

CREATE TABLE heartbeats (
    id VARCHAR PRIMARY KEY,
    device VARCHAR,
    sent_at TIMESTAMPTZ,
    received_at TIMESTAMPTZ,
    model_version VARCHAR,
    fps DOUBLE,
    inference_ms_p50 DOUBLE,
    inference_ms_p99 DOUBLE,
    queue_depth INTEGER,
    dropped_frames BIGINT,
    uptime_s DOUBLE
);
