-- Each model's own operating point per class (DESIGN decision 9): class name -> confidence, chosen for a
-- target precision on verified images its reported recall is not measured on. NULL: one global threshold.

ALTER TABLE models ADD COLUMN thresholds JSON;
