"""The event log's part of the state store contract, on every backend (see conftest)."""

from __future__ import annotations

import threading

import pytest

from reconciler import record
from reconciler.record import Event
from reconciler.states import EventKind, Severity


def event(kind="rollout_started", at=1.0, env="prod", group="web", severity=None, **details):
    severity = severity or record.events.SEVERITY[EventKind(kind)]
    return Event(None, at, kind, severity, f"{kind} at {at}", env, group, "ro1", "c1", details)


def test_append_gives_increasing_ids_and_round_trips(store):
    first = store.append_event(event(at=1.0, versions={"shop": {"from": ["1"], "to": "2"}}))
    second = store.append_event(event("gate_failed", at=2.0, env=None, group=None))
    assert first.id is not None and second.id is not None and second.id > first.id > 0
    [newest, oldest] = store.events()
    assert newest == second and oldest == first
    assert oldest.kind is EventKind.ROLLOUT_STARTED and oldest.severity is Severity.INFO
    assert oldest.details == {"versions": {"shop": {"from": ["1"], "to": "2"}}}
    assert (newest.environment, newest.group, newest.rollout_id) == (None, None, "ro1")
    assert store.newest_event_id() == second.id


def test_an_empty_log(store):
    assert store.events() == [] and store.newest_event_id() == 0
    assert store.prune_events(keep=10, older_than=100.0) == 0


def test_filters_combine_and_an_empty_collection_matches_nothing(store):
    for n, (kind, env, group) in enumerate(
        [
            ("rollout_started", "prod", "web"),
            ("gate_failed", "prod", "web"),
            ("rollout_started", "stage", "web"),
            ("rollout_rolled_back", "prod", "worker"),
            ("source_down", None, None),
        ]
    ):
        store.append_event(event(kind, at=float(n), env=env, group=group))
    summaries = lambda **f: [e.summary for e in store.events(oldest_first=True, **f)]  # noqa: E731
    assert summaries(environment="prod") == [
        "rollout_started at 0.0", "gate_failed at 1.0", "rollout_rolled_back at 3.0",
    ]  # fmt: skip
    assert summaries(environment="prod", group="web", kinds=["gate_failed"]) == [
        "gate_failed at 1.0"
    ]
    assert summaries(severities=[Severity.ERROR]) == [
        "gate_failed at 1.0", "rollout_rolled_back at 3.0", "source_down at 4.0",
    ]  # fmt: skip
    assert summaries(kinds=[]) == [] and summaries(severities=()) == []
    with pytest.raises(ValueError):
        store.events(kinds=["no_such_kind"])


def test_pages_by_id_newest_first_or_oldest_first(store):
    ids = [store.append_event(event(at=float(n))).id for n in range(10)]
    page = store.events(limit=4)
    assert [e.id for e in page] == ids[::-1][:4]
    older = store.events(limit=4, before=page[-1].id)
    assert [e.id for e in older] == ids[::-1][4:8]
    assert [e.id for e in store.events(after=ids[6], oldest_first=True)] == ids[7:]
    assert [e.id for e in store.events(after=ids[1], before=ids[4], oldest_first=True)] == ids[2:4]


def test_prune_keeps_the_newest_and_the_recent_and_ids_are_never_reused(store):
    ids = [store.append_event(event(at=float(n))).id for n in range(10)]
    assert store.prune_events(keep=6) == 4
    assert [e.id for e in store.events(oldest_first=True)] == ids[4:]
    assert store.prune_events(older_than=7.0) == 3  # at 4, 5 and 6
    assert [e.at for e in store.events(oldest_first=True)] == [7.0, 8.0, 9.0]
    assert store.prune_events(keep=None, older_than=None) == 0
    assert store.prune_events(older_than=100.0) == 3
    assert store.events() == []
    again = store.append_event(event(at=11.0))
    assert again.id is not None and again.id > ids[-1], "an id is never given twice"


def test_a_stored_kind_that_is_no_kind_is_a_store_error(backend, store):
    store.append_event(event())
    backend.execute("UPDATE events SET kind = 'paused'")
    with pytest.raises(record.StoreError):
        store.events()


def test_concurrent_appends_get_distinct_increasing_ids(store):
    found: list[int] = []
    lock = threading.Lock()

    def append() -> None:
        for n in range(25):
            got = store.append_event(event(at=float(n))).id
            with lock:
                found.append(got)

    threads = [threading.Thread(target=append) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(found)) == 100
    assert [e.id for e in store.events(limit=1000, oldest_first=True)] == sorted(found)
