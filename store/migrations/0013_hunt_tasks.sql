-- The rare-class pass (issue 26): one yes / no / not-sure question per candidate box ("is this a no_helmet?").
-- A yes or a not-sure sends the frame to a full review; a no is a verified hard negative for the probe. None of
-- them is a label: only fully reviewed frames train.
CREATE TABLE hunt_tasks (
    id VARCHAR PRIMARY KEY,           -- <capture id>/<candidate box idx>: the box's embeddings ref
    capture_id VARCHAR NOT NULL,
    class_id INTEGER NOT NULL,        -- the class asked about
    x1 DOUBLE NOT NULL,
    y1 DOUBLE NOT NULL,
    x2 DOUBLE NOT NULL,
    y2 DOUBLE NOT NULL,
    score DOUBLE,                     -- the probe's P(class) for the box when it was asked
    reviewer VARCHAR NOT NULL,
    project VARCHAR,
    task_id VARCHAR,
    status VARCHAR NOT NULL CHECK (status IN ('pushed', 'yes', 'no', 'unsure', 'cancelled')),
    pushed_at TIMESTAMPTZ NOT NULL,
    resolved_at TIMESTAMPTZ,
    effort JSON,
    effort_s DOUBLE
);
