-- Runs once, as the opsdeck superuser in the opsdeck database, when the postgres container
-- initialises an empty data volume (docker-entrypoint-initdb.d). On an existing volume, run these
-- statements by hand: docker compose exec postgres psql -U opsdeck -d opsdeck -f /docker-entrypoint-initdb.d/10-opsdeck.sql

-- Query statistics for the monitoring cockpit (the server also needs
-- shared_preload_libraries=pg_stat_statements, set on the postgres command line).
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
-- Table and index bloat measurements.
CREATE EXTENSION IF NOT EXISTS pgstattuple;
-- Trigram similarity operators and index support (gin_trgm_ops, gist_trgm_ops).
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- Opsdeck normally sends statement_timeout as a connection startup option. Behind PgBouncer in
-- transaction mode that option is dropped, so the limit is also set on the role: it holds either
-- way. A startup option (or SET) still overrides it, e.g. for migrations.
ALTER ROLE opsdeck SET statement_timeout = '30s';
