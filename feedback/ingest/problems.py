"""Every refusal the ingest API gives: a status, a machine-readable reason, a sentence.

Raised anywhere in a request (even from inside the body stream) and turned into JSON once.
"""

from __future__ import annotations


class Rejected(Exception):
    """A request refused with a 4xx (or 507: the store is full); nothing has been written when this is raised."""

    def __init__(self, status: int, reason: str, detail: object, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {reason}: {detail}")
        self.status, self.reason, self.detail, self.headers = status, reason, detail, headers
