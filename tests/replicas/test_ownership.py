"""Replicas sharing environments through leases (``service.ownership`` on a real PostgreSQL).

In-process replicas (one ``Ownership`` each, each with its own store and pool) run their
rounds by hand: no thread, no sleep. A replica's death is simulated by it no longer ticking
and its leases and heartbeat reaching their expiry in the database; its pause by advancing
its own monotonic clock.
"""

from __future__ import annotations

import threading
from collections import Counter

import psycopg
import pytest

from reconciler.plan import ownership as rendezvous
from reconciler.record import Fenced, RunRecord, StoreUnavailable
from reconciler.record.postgresql import PostgresLeases, PostgresStateStore
from reconciler.record.postgresql.notifications import PostgresTriggers
from reconciler.service.ownership import Changes, Ownership
from reconciler.service.replication import Replication
from reconciler.states import EnvironmentResult

ENVIRONMENTS = [f"env-{n}" for n in range(6)]
REPLICAS = ["replica-a", "replica-b", "replica-c"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def replicas(postgres_url):
    stores, made = [], {}
    for name in REPLICAS:
        store = PostgresStateStore.open(postgres_url, pool_size=2)
        stores.append(store)
        made[name] = (
            Ownership(PostgresLeases(store.connections), name, ttl=30.0, clock=Clock()),
            store,
        )
    yield made
    for store in stores:
        store.close()


def rounds(replicas, names=REPLICAS, times=3, environments=ENVIRONMENTS):
    for _ in range(times):
        for name in names:
            for lease in replicas[name][0].tick(environments).gained:
                replicas[name][0].ready(lease.environment)  # (the takeover would run here)


def owners(replicas, names=REPLICAS) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in names:
        for environment, replica in replicas[name][0].owners().items():
            assert environment not in found, f"{environment} owned twice"
            found[environment] = replica
    return found


def expire(url: str, replica: str) -> None:
    """``replica`` died: its heartbeat and its leases run out (the database's clock)."""
    with psycopg.connect(url, autocommit=True) as db:
        past = "clock_timestamp() - interval '1 second'"
        db.execute(f"UPDATE replicas SET expires_at = {past} WHERE replica = %s", (replica,))
        db.execute(f"UPDATE leases SET expires_at = {past} WHERE holder = %s", (replica,))


def test_three_replicas_own_each_of_six_environments_exactly_once(replicas):
    rounds(replicas)
    found = owners(replicas)
    assert sorted(found) == ENVIRONMENTS
    assert found == rendezvous.assignment(ENVIRONMENTS, REPLICAS), "as the hashing says"
    assert set(Counter(found.values())) <= set(REPLICAS)
    for environment, replica in found.items():
        assert replicas[replica][0].token(environment) is not None


def test_a_dead_replicas_environments_go_to_the_others_with_newer_tokens(replicas, postgres_url):
    rounds(replicas)
    before = owners(replicas)
    dead = before["env-0"]
    alive = [r for r in REPLICAS if r != dead]
    tokens = {e: replicas[r][0].token(e) for e, r in before.items()}
    expire(postgres_url, dead)
    rounds(replicas, alive, times=2)
    after = owners(replicas, alive)
    assert sorted(after) == ENVIRONMENTS, "every environment has an owner again"
    assert after == rendezvous.assignment(ENVIRONMENTS, alive)
    for environment, replica in before.items():
        if replica == dead:
            token = replicas[after[environment]][0].token(environment)
            assert token is not None and token > (tokens[environment] or 0)
        else:
            assert after[environment] == replica, "the others keep what they had"
    # the dead one's stale token is refused by the database
    store = replicas[dead][1]
    stale = tokens["env-0"]
    assert stale is not None
    with pytest.raises(Fenced):
        store.fenced(stale).start_run(
            RunRecord("late", "env-0", None, 1.0, None, EnvironmentResult.RUNNING, {})
        )


def test_a_paused_replica_trusts_no_lease_until_it_renews_and_loses_what_was_taken(
    replicas, postgres_url
):
    rounds(replicas)
    found = owners(replicas)
    paused_name = found["env-1"]
    paused = replicas[paused_name][0]
    assert isinstance(paused.clock, Clock)
    paused.clock.now += paused.ttl  # SIGSTOP: time passes for it without a round
    mine = sorted(e for e, r in found.items() if r == paused_name)
    assert all(paused.token(e) is None for e in mine), "never starts a step on a stale lease"
    expire(postgres_url, paused_name)
    others = [r for r in REPLICAS if r != paused_name]
    rounds(replicas, others, times=2)
    changes = paused.tick(ENVIRONMENTS)  # SIGCONT: its first round
    assert sorted(changes.lost) == mine, "it stands down from what was taken"
    assert paused.owners() == {}
    assert sorted(owners(replicas)) == ENVIRONMENTS


def test_a_joining_replica_gets_its_share_only_once_the_holder_is_idle(replicas):
    rounds(replicas, ["replica-a"], times=1)
    a = replicas["replica-a"][0]
    assert sorted(a.owners()) == ENVIRONMENTS, "alone: owns everything"
    should_move = [
        e
        for e, r in rendezvous.assignment(ENVIRONMENTS, ["replica-a", "replica-b"]).items()
        if r == "replica-b"
    ]
    assert should_move, "the hash gives b something"
    busy = should_move[0]
    a.busy = lambda environment: environment == busy
    rounds(replicas, ["replica-b", "replica-a", "replica-b"], times=1)
    assert set(replicas["replica-b"][0].owners()) == set(should_move) - {busy}
    assert busy in a.owners(), "a rollout in flight is not interrupted"
    a.busy = lambda environment: False
    rounds(replicas, ["replica-a", "replica-b"], times=1)
    assert set(replicas["replica-b"][0].owners()) == set(should_move)


def test_a_gained_lease_gives_no_token_until_its_takeover_is_done(replicas):
    a = replicas["replica-a"][0]
    [lease, *_] = a.tick(["env-0"]).gained
    assert a.token("env-0") is None, "nothing reconciles it before the resume of the takeover"
    a.ready("env-0")
    assert a.token("env-0") == lease.token


class Outage:
    """``Leases`` whose database is unreachable while ``down`` (``record.StoreUnavailable``)."""

    def __init__(self, leases) -> None:
        self.leases = leases
        self.down = False

    def __getattr__(self, name):
        method = getattr(self.leases, name)

        def call(*args, **kwargs):
            if self.down:
                raise StoreUnavailable("the database is down")
            return method(*args, **kwargs)

        return call


def test_a_held_lease_renewed_after_an_outage_is_reported_trusted_again(replicas):
    """A reconcile asked for while ``token`` gave None is owed once it gives one again."""
    a = replicas["replica-a"][0]
    a.leases = Outage(a.leases)
    rounds(replicas, ["replica-a"], times=1)
    mine = sorted(a.owners())
    assert mine == ENVIRONMENTS and a.tick(ENVIRONMENTS).trusted == (), "trusted all along"
    a.leases.down = True
    assert a.tick(ENVIRONMENTS) == Changes(), "a failed round changes nothing"
    a.clock.now += a.ttl - a.margin  # the next round is late: trust ran out meanwhile
    assert all(a.token(e) is None for e in mine)
    a.leases.down = False
    changes = a.tick(ENVIRONMENTS)
    assert sorted(changes.trusted) == mine and not changes.lost and not changes.gained
    assert all(a.token(e) is not None for e in mine)
    assert a.tick(ENVIRONMENTS).trusted == (), "said once"


def test_replication_says_trusted_only_once_the_token_is_given(replicas):
    """The daemon's reconcile of a gained lease must find its token: ``trusted`` comes after
    the takeover (``gained``) and ``ready``."""
    a = replicas["replica-a"][0]
    seen: list[tuple[str, str, int | None]] = []
    done = threading.Event()

    def trusted(environment):
        seen.append(("trusted", environment, a.token(environment)))
        done.set()

    store = replicas["replica-a"][1]
    replication = Replication(a, PostgresTriggers(store.connections), fence=store.fenced)
    replication.start(
        lambda: ["env-0"],
        lambda lease: seen.append(("gained", lease.environment, a.token(lease.environment))),
        lambda _environment: None,
        lambda _environment, _reason: None,
        trusted,
    )
    try:
        assert done.wait(30), "the first round gains env-0"
    finally:
        replication.stop()
    assert seen[0] == ("gained", "env-0", None), "no token during the takeover"
    assert seen[1][:2] == ("trusted", "env-0") and seen[1][2] is not None


def test_standing_down_hands_over_at_once(replicas):
    rounds(replicas)
    leaving = replicas["replica-a"][0]
    mine = set(leaving.owners())
    leaving.stand_down()
    rounds(replicas, ["replica-b", "replica-c"], times=1)
    assert set(owners(replicas, ["replica-b", "replica-c"])) == set(ENVIRONMENTS)
    assert mine <= set(owners(replicas, ["replica-b", "replica-c"]))


def test_confirm_answers_only_for_a_held_trusted_and_live_lease(replicas, postgres_url):
    """What the Git revert push asks right before pushing (``Ownership.confirm``)."""
    rounds(replicas)
    environment, holder = sorted(owners(replicas).items())[0]
    ownership = replicas[holder][0]
    token = ownership.token(environment)
    assert token is not None and ownership.confirm(environment, token)
    assert not ownership.confirm(environment, token + 1000), "another token"
    other = next(r for r in REPLICAS if r != holder)
    assert not replicas[other][0].confirm(environment, token), "not its lease"
    ownership.clock.now += ownership.ttl  # paused past its trust: nothing unfenced
    assert not ownership.confirm(environment, token)
    ownership.clock.now -= ownership.ttl
    expire(postgres_url, holder)  # lapsed in the database (another may take it now)
    assert not ownership.confirm(environment, token)


def test_the_status_read_model_names_each_lease_holder_from_any_store(replicas, postgres_url):
    """What ``/api/v1/status`` and ``reconciler status`` show: the leases table, the same
    answer whichever replica (or a read-only store without a daemon) reads it."""
    from reconciler.report import status as read_model
    from reconciler.service import wiring
    from reconciler.settings import Settings

    rounds(replicas)
    found = owners(replicas)
    for environment in ENVIRONMENTS:
        replicas[found[environment]][1].update_environment(environment, 1.0, last_error="")
    settings = Settings(state={"url": postgres_url})
    with wiring.open_store(settings, read_only=True) as reader:
        holders = wiring.lease_holders(reader)
        assert holders is not None
        view = read_model.build(
            reader, None, url="", branch="main", owners=read_model.lease_owners(holders)
        )
    shown = {e.name: e.owner for e in view.environments}
    assert sorted(shown) == ENVIRONMENTS
    for environment, owner in shown.items():
        assert owner is not None and owner.replica == found[environment]
        assert owner.fencing_token == replicas[owner.replica][0].token(environment)
    expire(postgres_url, found["env-0"])  # a lapsed lease: no owner until the takeover
    with wiring.open_store(settings, read_only=True) as reader:
        lapsed = read_model.lease_owners(wiring.lease_holders(reader))  # type: ignore[arg-type]
    assert lapsed.of("env-0") is None
