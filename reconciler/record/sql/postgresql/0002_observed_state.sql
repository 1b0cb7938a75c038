-- Issue 12: what hosts report (observed state), the history of drift (since when, last heal,
-- flapping), why a rollout ran (a change or a self-heal) and each attempt of a step.
-- The same tables and columns as sqlite/0002_observed_state.sql.
CREATE TABLE observed (
    environment text NOT NULL,
    host text NOT NULL,
    app text NOT NULL,
    version text,
    status text NOT NULL,
    detail text NOT NULL DEFAULT '',
    observed_at double precision NOT NULL,
    PRIMARY KEY (environment, host, app)
);
CREATE TABLE drift (
    environment text NOT NULL,
    host text NOT NULL,
    app text NOT NULL,
    since double precision,
    healed_at double precision,
    flapping integer NOT NULL DEFAULT 0 CHECK (flapping IN (0, 1)),
    PRIMARY KEY (environment, host, app)
);
ALTER TABLE rollouts ADD COLUMN trigger text NOT NULL DEFAULT 'change';
ALTER TABLE rollout_steps ADD COLUMN attempts text NOT NULL DEFAULT '[]';
