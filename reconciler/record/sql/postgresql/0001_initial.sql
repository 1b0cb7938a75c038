-- The schema of the first release, in PostgreSQL types: the same tables and columns as
-- sqlite/0001_initial.sql (times: double precision seconds; JSON: compact JSON text, as
-- record.rows writes it; booleans: integers 0/1, as record.rows writes them).
-- PostgreSQL has no rowid: runs, rollouts and rollout_steps get seq, an identity column that
-- orders ties the way SQLite's rowid does (first written first; an upsert keeps it).
CREATE TABLE deployed (
    environment text NOT NULL,
    host text NOT NULL,
    app text NOT NULL,
    version text NOT NULL,
    grp text NOT NULL,
    commit_sha text,
    rollout_id text,
    deployed_at double precision NOT NULL,
    PRIMARY KEY (environment, host, app)
);
CREATE TABLE runs (
    id text PRIMARY KEY,
    environment text NOT NULL,
    commit_sha text,
    started_at double precision NOT NULL,
    finished_at double precision,
    result text NOT NULL,
    summary text NOT NULL DEFAULT '{}',
    seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE
);
CREATE INDEX runs_by_env ON runs (environment, started_at);
CREATE INDEX runs_unfinished ON runs (started_at, seq) WHERE finished_at IS NULL;
CREATE TABLE rollouts (
    id text PRIMARY KEY,
    run_id text NOT NULL,
    environment text NOT NULL,
    grp text NOT NULL,
    commit_sha text,
    apps text NOT NULL,
    state text NOT NULL,
    reason text NOT NULL DEFAULT '',
    started_at double precision NOT NULL,
    finished_at double precision,
    seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE
);
CREATE INDEX rollouts_by_env ON rollouts (environment, grp, started_at);
CREATE INDEX rollouts_unfinished ON rollouts (started_at, seq) WHERE finished_at IS NULL;
CREATE TABLE rollout_steps (
    rollout_id text NOT NULL REFERENCES rollouts (id),
    phase text NOT NULL,
    step_index integer NOT NULL,
    percent integer NOT NULL,
    hosts text NOT NULL,
    state text NOT NULL,
    host_results text NOT NULL DEFAULT '{}',
    gate_results text NOT NULL DEFAULT '[]',
    run_dir text NOT NULL DEFAULT '',
    started_at double precision NOT NULL,
    finished_at double precision,
    seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    PRIMARY KEY (rollout_id, phase, step_index)
);
CREATE TABLE environments (
    environment text PRIMARY KEY,
    suspended integer NOT NULL DEFAULT 0 CHECK (suspended IN (0, 1)),
    last_attempted_commit text,
    last_applied_commit text,
    last_result text NOT NULL DEFAULT '',
    last_error text NOT NULL DEFAULT '',
    updated_at double precision
);
CREATE TABLE quarantine (
    environment text NOT NULL,
    grp text NOT NULL,
    fingerprint text NOT NULL,
    commit_sha text,
    rollout_id text,
    reason text NOT NULL DEFAULT '',
    revert text NOT NULL DEFAULT '',
    created_at double precision NOT NULL,
    PRIMARY KEY (environment, grp)
);
CREATE TABLE meta (
    key text PRIMARY KEY,
    value text NOT NULL
);
