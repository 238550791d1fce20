"""The system of record: blob store, DuckDB catalog, inbox, device registry."""
