-- The thresholds each gate verdict was reached with, and where each model came from:
-- trained here (`edgeloop train`) or trained elsewhere and registered (`edgeloop models register`).
-- Older verdicts keep NULL thresholds: what the command line was given then is not known.

ALTER TABLE gate_decisions ADD COLUMN margin DOUBLE;
ALTER TABLE gate_decisions ADD COLUMN tolerance DOUBLE;

ALTER TABLE models ADD COLUMN origin VARCHAR;  -- trained | external
ALTER TABLE models ADD COLUMN note VARCHAR;

-- Before this, a model without a training run could only have come in as a .pt given to the gate.
UPDATE models SET origin = CASE WHEN id IN (SELECT model_id FROM training_runs) THEN 'trained' ELSE 'external' END;
