"""Retraining a challenger and deciding whether it replaces the champion."""
