-- Issue 12: what hosts report (observed state), the history of drift (since when, last heal,
-- flapping), why a rollout ran (a change or a self-heal) and each attempt of a step.
CREATE TABLE observed (
    environment TEXT NOT NULL,
    host TEXT NOT NULL,
    app TEXT NOT NULL,
    version TEXT,
    status TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    observed_at REAL NOT NULL,
    PRIMARY KEY (environment, host, app)
);
CREATE TABLE drift (
    environment TEXT NOT NULL,
    host TEXT NOT NULL,
    app TEXT NOT NULL,
    since REAL,
    healed_at REAL,
    flapping INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (environment, host, app)
);
ALTER TABLE rollouts ADD COLUMN trigger TEXT NOT NULL DEFAULT 'change';
ALTER TABLE rollout_steps ADD COLUMN attempts TEXT NOT NULL DEFAULT '[]';
