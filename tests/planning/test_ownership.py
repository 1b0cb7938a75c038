"""Rendezvous hashing of environments over replicas (``plan.ownership``)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from reconciler.plan import ownership

names = st.text(alphabet="abcdefghij-0123456789", min_size=1, max_size=12)


def test_nobody_owns_without_replicas_and_a_single_replica_owns_everything():
    assert ownership.owner("prod", []) is None
    assert set(ownership.assignment(["a", "b", "c"], ["only"]).values()) == {"only"}


def test_every_replica_computes_the_same_owner_whatever_the_order_of_members():
    members = ["replica-1", "replica-2", "replica-3"]
    environments = [f"env-{n}" for n in range(50)]
    assert ownership.assignment(environments, members) == ownership.assignment(
        environments, list(reversed(members))
    )


def test_environments_spread_over_the_replicas():
    owners = Counter(ownership.assignment([f"env-{n}" for n in range(300)], "abc").values())
    assert set(owners) == {"a", "b", "c"}
    assert all(count > 60 for count in owners.values()), owners  # about 100 each


@given(
    st.lists(names, min_size=1, max_size=30, unique=True), st.sets(names, min_size=2, max_size=6)
)
def test_a_leaving_replica_moves_only_its_own_environments(environments, replicas):
    before = ownership.assignment(environments, replicas)
    gone = sorted(replicas)[0]
    after = ownership.assignment(environments, replicas - {gone})
    for environment in environments:
        if before[environment] != gone:
            assert after[environment] == before[environment]
        else:
            assert after[environment] != gone


@given(
    st.lists(names, min_size=1, max_size=30, unique=True),
    st.sets(names, min_size=1, max_size=6),
    names,
)
def test_a_joining_replica_takes_only_what_it_wins(environments, replicas, joining):
    before = ownership.assignment(environments, replicas)
    after = ownership.assignment(environments, replicas | {joining})
    for environment in environments:
        assert after[environment] in (before[environment], joining)
