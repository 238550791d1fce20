"""Prefect flows and the `edgeloop` command line: thin orchestration of feedback and store."""

import os

# Prefect starts a temporary API for in-process runs (`edgeloop cycle`, the demo); on a loaded two-core
# machine that takes longer than its default 20 s. Set before Prefect reads its settings.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# Offline by default: the temporary API must not try to send telemetry.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
