-- Issue 14: the event log. Ids only grow (AUTOINCREMENT: never reused, not even after the
-- oldest or newest rows were pruned), so a client resumes a stream after the last id it saw.
-- Pruning deletes the oldest rows through the primary key; reads filter an environment by
-- its own index.
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    environment TEXT,
    grp TEXT,
    rollout_id TEXT,
    commit_sha TEXT,
    summary TEXT NOT NULL,
    details TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_by_environment ON events (environment, id);
