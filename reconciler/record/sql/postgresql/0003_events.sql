-- Issue 14: the event log; the same columns as sqlite/0003_events.sql. Ids only grow (an
-- identity column: never reused), so a client resumes a stream after the last id it saw.
-- Appends take a transaction-level advisory lock (record.postgresql.store), so ids commit in
-- the order they are drawn: a reader paging "after id N" never sees N+2 before N+1 exists.
-- Pruning deletes the oldest rows through the primary key; reads filter an environment by
-- its own index. Events are not fenced: a replica that lost a lease may still tell what it saw.
CREATE TABLE events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at double precision NOT NULL,
    kind text NOT NULL,
    severity text NOT NULL,
    environment text,
    grp text,
    rollout_id text,
    commit_sha text,
    summary text NOT NULL,
    details text NOT NULL DEFAULT '{}'
);
CREATE INDEX events_by_environment ON events (environment, id);
