"""Bearer-token authentication of devices against the published registry.

The API never opens DuckDB: it reads the registry file the CLI publishes to the store.
"""

from __future__ import annotations

from store.devices import RegistryReader

from feedback.ingest.problems import Rejected

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="edgeloop"'}


def authenticate(authorization: str | None, registry: RegistryReader) -> str:
    """Return the device name the token belongs to, or raise 401/403."""
    if not authorization:
        raise Rejected(401, "missing_token", "send 'Authorization: Bearer <device token>'", _CHALLENGE)
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Rejected(401, "malformed_authorization", "expected 'Authorization: Bearer <device token>'", _CHALLENGE)
    found = registry.lookup(token.strip())
    if found is None:
        raise Rejected(401, "unknown_token", "this token belongs to no registered device", _CHALLENGE)
    if found.revoked:
        raise Rejected(403, "revoked_token", f"the token of device {found.device!r} has been revoked")
    return found.device
