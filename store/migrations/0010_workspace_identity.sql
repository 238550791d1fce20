-- Who this catalog is: one random id, made with the catalog. Caches outside the workspace (Prefect's
-- task results) key on it, so a workspace recreated at the same path never gets the old one's results.

CREATE TABLE workspace_identity (id VARCHAR PRIMARY KEY, created_at TIMESTAMPTZ NOT NULL);
INSERT INTO workspace_identity SELECT gen_random_uuid()::VARCHAR, now();
