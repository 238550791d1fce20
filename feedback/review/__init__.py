"""Deciding what people review, and bringing their verdicts back as verified labels."""
