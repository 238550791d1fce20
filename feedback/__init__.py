"""Turning captures into a better model: ingest API, review, synthesis, training, gate."""
