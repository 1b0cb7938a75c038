-- The schema of the first release (it set PRAGMA user_version = 1 and had no
-- schema_migrations table; such databases are adopted as this migration, unchanged).
CREATE TABLE deployed (
    environment TEXT NOT NULL,
    host TEXT NOT NULL,
    app TEXT NOT NULL,
    version TEXT NOT NULL,
    grp TEXT NOT NULL,
    commit_sha TEXT,
    rollout_id TEXT,
    deployed_at REAL NOT NULL,
    PRIMARY KEY (environment, host, app)
);
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    environment TEXT NOT NULL,
    commit_sha TEXT,
    started_at REAL NOT NULL,
    finished_at REAL,
    result TEXT NOT NULL,
    summary TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX runs_by_env ON runs (environment, started_at);
CREATE TABLE rollouts (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    grp TEXT NOT NULL,
    commit_sha TEXT,
    apps TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    started_at REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX rollouts_by_env ON rollouts (environment, grp, started_at);
CREATE TABLE rollout_steps (
    rollout_id TEXT NOT NULL REFERENCES rollouts (id),
    phase TEXT NOT NULL,
    step_index INTEGER NOT NULL,
    percent INTEGER NOT NULL,
    hosts TEXT NOT NULL,
    state TEXT NOT NULL,
    host_results TEXT NOT NULL DEFAULT '{}',
    gate_results TEXT NOT NULL DEFAULT '[]',
    run_dir TEXT NOT NULL DEFAULT '',
    started_at REAL NOT NULL,
    finished_at REAL,
    PRIMARY KEY (rollout_id, phase, step_index)
);
CREATE TABLE environments (
    environment TEXT PRIMARY KEY,
    suspended INTEGER NOT NULL DEFAULT 0,
    last_attempted_commit TEXT,
    last_applied_commit TEXT,
    last_result TEXT NOT NULL DEFAULT '',
    last_error TEXT NOT NULL DEFAULT '',
    updated_at REAL
);
CREATE TABLE quarantine (
    environment TEXT NOT NULL,
    grp TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    commit_sha TEXT,
    rollout_id TEXT,
    reason TEXT NOT NULL DEFAULT '',
    revert TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    PRIMARY KEY (environment, grp)
);
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
