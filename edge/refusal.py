"""The one way a rollout step says no: an artifact that must not run here, and why.

Raised while fetching, building or checking a model; the updater records it and reports it in heartbeats.
"""


class Refused(Exception):
    """This artifact must not run here; the message says why (it is reported in heartbeats)."""
