-- The model's per-class maximum score over the frame, before its confidence threshold, indexed
-- by class id, as the device sent it (CaptureMeta.class_evidence); NULL from older devices.

ALTER TABLE captures ADD COLUMN class_evidence FLOAT[];
