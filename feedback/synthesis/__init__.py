"""Synthetic data for the model's blind spots: generators behind one port, filters, lineage.

Synthetic images go to training only (DESIGN decision 4), never past the dataset's synthetic cap.
"""
