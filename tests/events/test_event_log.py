"""The event log hub (``report.events.EventLog``) on the real SQLite store: ordered, lossless
subscriptions, overflow read back from the store, retention, and a producer that never fails."""

from __future__ import annotations

import asyncio
import threading

import pytest

from reconciler.record.sqlite import SqliteStateStore
from reconciler.report.events import EventLog, TooManyStreams
from reconciler.states import EventKind, Severity


@pytest.fixture
def store(tmp_path):
    store = SqliteStateStore(tmp_path / "state.db")
    yield store
    store.close()


def emit(log: EventLog, n: int, kind=EventKind.STEP_FINISHED, **kw) -> None:
    log.emit(kind, summary=f"event {n}", environment="prod", **kw)


def test_emit_records_with_default_severity_one_line_and_plain_details(store):
    log = EventLog(store, clock=lambda: 42.0)
    log.emit(
        EventKind.GATE_FAILED,
        summary="gate failed\non web-01: https://user:hunter2@example.com/x",
        environment="prod",
        group="web",
        details={
            "host": "web-01",
            "when": {1, 2} and (1, 2),
            "obj": object,
            "detail": ["GET https://u:hunter2@example.com/healthz?token=t0k -> 500"],
        },
    )
    [event] = store.events()
    assert event.severity is Severity.ERROR and event.at == 42.0
    assert event.summary == "gate failed on web-01: https://***@example.com/x"
    assert event.details["host"] == "web-01" and event.details["when"] == [1, 2]
    assert isinstance(event.details["obj"], str)
    assert "hunter2" not in str(event.details) and "t0k" not in str(event.details)
    assert log.newest == event.id


def test_a_failing_store_never_fails_the_producer_and_subscribers_still_hear(store):
    log = EventLog(store)
    subscription = log.subscribe()
    store.close()  # every write now raises StoreError
    emit(log, 1)
    event = subscription.get(timeout=1)
    assert event is not None and event.id is None and event.summary == "event 1"


def test_subscribers_get_every_event_in_id_order_from_many_producers(store):
    log = EventLog(store)
    subscription = log.subscribe()
    threads = [
        threading.Thread(target=lambda t=t: [emit(log, t * 100 + n) for n in range(30)])
        for t in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = [subscription.get(timeout=2) for _ in range(120)]
    ids = [e.id for e in got if e is not None]
    assert ids == sorted(ids) and len(set(ids)) == 120
    assert subscription.get(timeout=0.05) is None


def test_a_subscription_after_an_id_reads_the_stored_backlog_first(store):
    log = EventLog(store)
    for n in range(5):
        emit(log, n)
    subscription = log.subscribe(after=2)
    emit(log, 5)
    got = [subscription.get(timeout=1) for _ in range(3)]
    assert [e.summary for e in got if e] == ["event 2", "event 3", "event 4"]
    assert subscription.get(timeout=1).summary == "event 5"


def test_an_overflowing_queue_loses_nothing_it_is_read_back_from_the_store(store):
    log = EventLog(store, queue_size=3)
    subscription = log.subscribe()
    for n in range(50):  # nobody reads meanwhile: the queue overflows
        emit(log, n)
    got = []
    while (event := subscription.get(timeout=0.2)) is not None:
        got.append(event.summary)
    assert got == [f"event {n}" for n in range(50)]


def test_matches_filters_and_close_ends_subscriptions(store):
    log = EventLog(store)
    subscription = log.subscribe(matches=lambda e: e.kind is EventKind.GATE_FAILED)
    emit(log, 1)
    emit(log, 2, kind=EventKind.GATE_FAILED)
    assert subscription.get(timeout=1).summary == "event 2"
    log.close()
    assert subscription.get(timeout=1) is None and subscription.closed
    assert log.subscribe().closed, "a subscription after close is closed at once"
    emit(log, 3)  # still recorded
    assert store.events()[0].summary == "event 3"


def test_retention_prunes_every_n_appends_by_count_and_age(store):
    now = [0.0]
    log = EventLog(store, clock=lambda: now[0], keep=20, max_age=100.0, prune_every=10)
    for n in range(35):
        now[0] = float(n)
        emit(log, n)
    # pruned at the 10th, 20th and 30th append: at most 20 kept then, 5 more since
    assert len(store.events(limit=1000)) == 25
    now[0] = 200.0
    assert log.prune() == 25 and store.events() == []


def test_async_subscriptions_are_capped_and_end_on_overflow(store):
    log = EventLog(store, max_streams=1, queue_size=2)

    async def scenario() -> tuple[list[str], bool]:
        first = log.subscribe_async()
        with pytest.raises(TooManyStreams):
            log.subscribe_async()
        emit(log, 1)
        got = [(await first.get(timeout=1)).summary]
        for n in range(10):
            emit(log, n + 2)
        await asyncio.sleep(0.1)  # the loop runs the queued puts: the queue overflows
        while (event := await first.get(timeout=0.2)) is not None:
            got.append(event.summary)
        return got, first.closed

    got, closed = asyncio.run(scenario())
    assert closed, "an overflowing stream ends (its client resumes after its last id)"
    assert got[0] == "event 1"
