"""Leases of environments and fencing tokens on PostgreSQL (``record.postgresql.leases``).

Time passing is simulated by moving ``expires_at`` into the past in the database (the lease
clock is the database's), never by sleeping. Fencing is checked by the database itself:
the writes go through the real store and the refusal comes from its triggers.
"""

from __future__ import annotations

import threading

import psycopg
import pytest

from reconciler import record
from reconciler.record import Fenced
from reconciler.record.postgresql import PostgresLeases, PostgresStateStore
from reconciler.states import EnvironmentResult, Phase, RolloutState, StepState

TTL = 30.0


@pytest.fixture
def store(postgres_url):
    opened = PostgresStateStore.open(postgres_url, pool_size=4)
    yield opened
    opened.close()


@pytest.fixture
def leases(store):
    return PostgresLeases(store.connections)


def lapse(url: str, environment: str) -> None:
    """The lease's time is up (as if its holder had stopped renewing long enough)."""
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(
            "UPDATE leases SET expires_at = clock_timestamp() - interval '1 second'"
            " WHERE environment = %s",
            (environment,),
        )


def run(id="run1", env="prod"):
    return record.RunRecord(id, env, "c" * 40, 1.0, None, EnvironmentResult.RUNNING, {})


def rollout(id="ro1", env="prod", run_id="run1"):
    return record.RolloutRecord(
        id, run_id, env, "web", "c" * 40, {"shop": "2.0"}, RolloutState.RUNNING, "", 1.0, None
    )


def step(rollout_id="ro1", index=1, state=StepState.RUNNING):
    return record.StepRecord(
        rollout_id, Phase.DEPLOY, index, 50, ("h1",), state, {}, [], "", 2.0, None
    )


def deployed(host="h1", version="2.0", env="prod"):
    return record.DeployedVersion(env, host, "shop", version, "web", "c" * 40, "ro1", 3.0)


def quarantine(env="prod"):
    return record.QuarantineRecord(env, "web", "f" * 8, "c" * 40, "ro1", "gates", "", 4.0)


# ------------------------------------------------------------------ leases
def test_a_free_lease_is_taken_once_and_renewed_with_the_same_token(leases):
    mine = leases.acquire("prod", "replica-a", TTL)
    assert mine is not None and mine.holder == "replica-a" and mine.live
    assert leases.acquire("prod", "replica-b", TTL) is None, "held live: not taken"
    assert leases.acquire("prod", "replica-a", TTL) is None, "not even by its holder"
    renewed = leases.renew(mine, TTL)
    assert renewed is not None and renewed.token == mine.token
    assert renewed.expires_at >= mine.expires_at
    assert [(lease.environment, lease.holder, lease.token) for lease in leases.leases()] == [
        ("prod", "replica-a", mine.token)
    ]


def test_a_lapsed_lease_is_never_renewed_and_its_next_holder_gets_a_newer_token(
    leases, postgres_url
):
    first = leases.acquire("prod", "replica-a", TTL)
    assert first is not None
    lapse(postgres_url, "prod")
    assert [lease.live for lease in leases.leases()] == [False]
    assert leases.renew(first, TTL) is None, "a lapsed lease is lost"
    second = leases.acquire("prod", "replica-b", TTL)
    assert second is not None and second.token > first.token
    assert leases.renew(first, TTL) is None, "taken: lost for good"


def test_a_released_lease_is_free_at_once_and_its_holder_gets_a_new_token_back(leases):
    first = leases.acquire("prod", "replica-a", TTL)
    assert first is not None
    leases.release(first)
    again = leases.acquire("prod", "replica-a", TTL)
    assert again is not None and again.token > first.token
    leases.release(first)  # an old lease: no effect on the new one
    assert leases.renew(again, TTL) is not None


def test_tokens_increase_across_environments(leases):
    tokens = [leases.acquire(env, "replica-a", TTL) for env in ("a", "b", "c")]
    assert all(t is not None for t in tokens)
    values = [t.token for t in tokens if t is not None]
    assert values == sorted(values) and len(set(values)) == 3


def test_replicas_racing_for_a_free_lease_one_wins(store, postgres_url):
    """Eight connections acquire the same lapsed lease at once: exactly one gets it."""
    leases = PostgresLeases(store.connections)
    old = leases.acquire("prod", "replica-0", TTL)
    assert old is not None
    lapse(postgres_url, "prod")
    barrier, won = threading.Barrier(8), []
    others = [PostgresStateStore.open(postgres_url, pool_size=1) for _ in range(8)]

    def race(n: int) -> None:
        barrier.wait()
        got = PostgresLeases(others[n].connections).acquire("prod", f"replica-{n + 1}", TTL)
        if got is not None:
            won.append(got)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for other in others:
        other.close()
    assert len(won) == 1 and won[0].token > old.token
    [held] = leases.leases()
    assert (held.holder, held.token) == (won[0].holder, won[0].token)


def test_members_are_live_while_their_heartbeat_lasts(leases, postgres_url):
    leases.heartbeat("replica-b", "http://127.0.0.1:2", TTL)
    leases.heartbeat("replica-a", "http://127.0.0.1:1", TTL)
    assert [(r.replica, r.address) for r in leases.live_replicas()] == [
        ("replica-a", "http://127.0.0.1:1"),
        ("replica-b", "http://127.0.0.1:2"),
    ]
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("UPDATE replicas SET expires_at = clock_timestamp() WHERE replica = 'replica-b'")
    assert [r.replica for r in leases.live_replicas()] == ["replica-a"]
    leases.heartbeat("replica-b", "http://127.0.0.1:2", TTL)  # back
    leases.leave("replica-a")
    assert [r.replica for r in leases.live_replicas()] == ["replica-b"]


# ------------------------------------------------------------------ fencing
def journal_writes(store) -> dict[str, object]:
    """Every fenced write, each a thunk (the rollout ro1 of run1 exists)."""
    return {
        "start_run": lambda: store.start_run(run("run2")),
        "finish_run": lambda: store.finish_run("run1", EnvironmentResult.FAILED, 9.0, {}),
        "start_rollout": lambda: store.start_rollout(rollout("ro2")),
        "finish_rollout": lambda: store.finish_rollout("ro1", RolloutState.FAILED, "x", 9.0),
        "finish_rollout_if_running": lambda: store.finish_rollout_if_running(
            "ro1", RolloutState.FAILED, "x", 9.0
        ),
        "journal_step": lambda: store.journal_step(step(index=2)),
        "record_deployed": lambda: store.record_deployed([deployed("h2"), deployed("h3")]),
        "record_deployed one": lambda: store.record_deployed([deployed("h1", "9.9")]),
        "forget_deployed": lambda: store.forget_deployed("prod", [("h1", "shop")]),
        "set_quarantine": lambda: store.set_quarantine(quarantine()),
        "forget_hosts": lambda: store.forget_hosts("prod", ["h1"]),
    }


def seeded(store, leases) -> record.Lease:
    """prod leased to replica-a, with a run, a rollout, a step and a deployed version."""
    lease = leases.acquire("prod", "replica-a", TTL)
    assert lease is not None
    fenced = store.fenced(lease.token)
    fenced.start_run(run())
    fenced.start_rollout(rollout())
    fenced.journal_step(step())
    fenced.record_deployed([deployed()])
    return lease


def snapshot(url: str) -> list[object]:
    with psycopg.connect(url) as db:
        return [
            db.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            for table in ("runs", "rollouts", "rollout_steps", "deployed", "quarantine")
        ]


def test_the_holder_writes_with_its_token(store, leases):
    lease = seeded(store, leases)
    fenced = store.fenced(lease.token)
    for name, write in journal_writes(fenced).items():
        write()  # none refused
        assert name
    assert store.rollout("ro1").state is RolloutState.FAILED


@pytest.mark.parametrize("case", ["taken over", "lapsed", "no token"])
def test_every_journal_and_deployed_write_without_the_live_token_is_refused(
    store, leases, postgres_url, case
):
    lease = seeded(store, leases)
    writer = store.fenced(lease.token)
    if case == "taken over":
        lapse(postgres_url, "prod")
        newer = leases.acquire("prod", "replica-b", TTL)
        assert newer is not None and newer.token > lease.token
    elif case == "lapsed":
        lapse(postgres_url, "prod")
    else:
        writer = store
    before = snapshot(postgres_url)
    for name, write in journal_writes(writer).items():
        with pytest.raises(Fenced, match="fenced: environment prod"):
            write()
        assert snapshot(postgres_url) == before, f"{name} changed nothing"


def test_the_new_holder_resumes_where_the_old_one_was_fenced(store, leases, postgres_url):
    old = seeded(store, leases)
    lapse(postgres_url, "prod")
    new = leases.acquire("prod", "replica-b", TTL)
    assert new is not None
    with pytest.raises(Fenced):
        store.fenced(old.token).journal_step(step(index=1, state=StepState.SUCCEEDED))
    resumer = store.fenced(new.token)
    assert resumer.finish_rollout_if_running("ro1", RolloutState.ROLLED_BACK, "resumed", 9.0)
    assert [s.state for s in store.steps("ro1")] == [StepState.INTERRUPTED]


def test_a_token_of_another_environment_is_refused(store, leases):
    seeded(store, leases)
    staging = leases.acquire("staging", "replica-a", TTL)
    assert staging is not None
    with pytest.raises(Fenced):
        store.fenced(staging.token).record_deployed([deployed("h9")])


def test_unleased_environments_and_unfenced_tables_are_written_as_before(store, leases):
    """Without leases (one replica, issue 13 part 1) nothing is fenced; the environment row,
    observations, drift marks and meta are never fenced (suspend/resume from any replica)."""
    store.start_run(run("run-staging", env="staging"))
    store.record_deployed([deployed(env="staging")])
    seeded(store, leases)
    store.update_environment("prod", 5.0, suspended=True)
    store.record_observed([])
    store.set_meta("k", "v")
    assert store.environment_status("prod").suspended


def test_a_takeover_waits_for_a_fenced_write_in_flight(store, leases, postgres_url):
    """The check and the takeover are ordered by the lease row: a takeover waits for the
    fenced transaction that checked the old token, then every later write of that token is
    refused. The wait is observed in pg_stat_activity, not timed."""
    old = seeded(store, leases)
    with psycopg.connect(postgres_url) as writer:  # a transaction left open mid-write
        writer.execute("SELECT set_config('reconciler.fencing_token', %s, true)", (str(old.token),))
        writer.execute(
            "UPDATE rollout_steps SET state = 'succeeded' WHERE rollout_id = 'ro1'"
        )  # checked: holds the lease row FOR SHARE
        lapse_done: list[record.Lease | None] = []

        def take_over() -> None:
            with psycopg.connect(postgres_url, autocommit=True) as db:
                db.execute(
                    "UPDATE leases SET expires_at = clock_timestamp() WHERE environment = 'prod'"
                )
            lapse_done.append(leases.acquire("prod", "replica-b", TTL))

        thread = threading.Thread(target=take_over)
        thread.start()
        with psycopg.connect(postgres_url, autocommit=True) as watcher:
            waiting = 0
            while waiting == 0 and thread.is_alive():
                [(waiting,)] = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database()"
                ).fetchall()
        assert waiting >= 1, "the takeover waits for the write in flight"
        writer.commit()
        thread.join()
    [new] = lapse_done
    assert new is not None and new.token > old.token
    assert [s.state for s in store.steps("ro1")] == [StepState.SUCCEEDED], "committed first"
    with pytest.raises(Fenced):
        store.fenced(old.token).journal_step(step(index=1, state=StepState.FAILED))
