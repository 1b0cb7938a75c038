-- Issue 13: environments leased to replicas, with fencing tokens (record.postgresql.leases).
--
-- leases: one row per environment ever leased. token comes from lease_tokens (strictly
-- increasing over every environment), holder is the replica, expires_at is on the database's
-- clock (replicas' clocks never matter). A lease is live while expires_at > clock_timestamp().
-- replicas: the live members (a heartbeat moves expires_at), for rendezvous hashing.
CREATE SEQUENCE lease_tokens AS bigint;
CREATE TABLE leases (
    environment text PRIMARY KEY,
    holder text NOT NULL,
    token bigint NOT NULL,
    acquired_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE TABLE replicas (
    replica text PRIMARY KEY,
    address text NOT NULL DEFAULT '',
    started_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);

-- Fencing: a write of an environment's journal (runs, rollouts, rollout_steps), of its
-- deployed versions or of its quarantine is refused (SQLSTATE RC001) when that environment is
-- leased and the writing transaction does not carry the live lease's token in
-- reconciler.fencing_token: a newer token exists (another replica took over), or the lease
-- expired or was released. FOR SHARE orders the check against a takeover (acquire updates the
-- row): a write either commits before the new token exists, or sees it and is refused.
-- An environment never leased is not fenced (one replica without leases: issue 13 part 1).
CREATE FUNCTION reconciler_fence(env text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    given bigint := nullif(current_setting('reconciler.fencing_token', true), '')::bigint;
    held leases%ROWTYPE;
BEGIN
    IF env IS NULL THEN
        RETURN;
    END IF;
    SELECT * INTO held FROM leases WHERE environment = env FOR SHARE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF given IS NULL OR given <> held.token OR held.expires_at <= clock_timestamp() THEN
        RAISE EXCEPTION USING
            ERRCODE = 'RC001',
            MESSAGE = format('fenced: environment %s is leased to %s with token %s'
                             ' (this write carries %s)', env, held.holder, held.token,
                             coalesce(given::text, 'no token')),
            HINT = CASE WHEN given IS NULL THEN 'the write carries no fencing token'
                        WHEN given = held.token THEN 'the lease expired'
                        ELSE 'another lease holds the environment' END;
    END IF;
END $$;

CREATE FUNCTION reconciler_fenced_write() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed record;
BEGIN
    IF TG_OP = 'DELETE' THEN
        changed := OLD;
    ELSE
        changed := NEW;
    END IF;
    IF TG_TABLE_NAME = 'rollout_steps' THEN
        PERFORM reconciler_fence(
            (SELECT environment FROM rollouts WHERE id = changed.rollout_id));
    ELSE
        PERFORM reconciler_fence(changed.environment);
    END IF;
    RETURN changed;
END $$;

CREATE TRIGGER deployed_fenced BEFORE INSERT OR UPDATE OR DELETE ON deployed
    FOR EACH ROW EXECUTE FUNCTION reconciler_fenced_write();
CREATE TRIGGER runs_fenced BEFORE INSERT OR UPDATE OR DELETE ON runs
    FOR EACH ROW EXECUTE FUNCTION reconciler_fenced_write();
CREATE TRIGGER rollouts_fenced BEFORE INSERT OR UPDATE OR DELETE ON rollouts
    FOR EACH ROW EXECUTE FUNCTION reconciler_fenced_write();
CREATE TRIGGER rollout_steps_fenced BEFORE INSERT OR UPDATE OR DELETE ON rollout_steps
    FOR EACH ROW EXECUTE FUNCTION reconciler_fenced_write();
CREATE TRIGGER quarantine_fenced BEFORE INSERT OR UPDATE OR DELETE ON quarantine
    FOR EACH ROW EXECUTE FUNCTION reconciler_fenced_write();
