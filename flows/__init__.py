"""Prefect flows and the `edgeloop` command line: thin orchestration of feedback and store."""
