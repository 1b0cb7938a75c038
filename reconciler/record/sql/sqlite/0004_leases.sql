-- Issue 13: leases of environments to replicas exist only in PostgreSQL (several replicas
-- share one database). A SQLite state store has one process, serialised by the state-dir
-- flock (service.leadership): nothing to create here.
SELECT 1;
