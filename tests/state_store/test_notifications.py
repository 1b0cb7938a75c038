"""Sync requests between replicas over PostgreSQL LISTEN/NOTIFY (``record.postgresql``).

The listener runs in a thread on its own connection; the test waits for what it delivers
(a queue), and for it to be listening by looking at ``pg_stat_activity``: no sleeps.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from reconciler.record.postgresql import PostgresStateStore, PostgresTriggers
from reconciler.record.postgresql.notifications import parse

WAIT_S = 30


@pytest.fixture
def stores(postgres_url) -> Iterator[tuple[PostgresStateStore, PostgresStateStore]]:
    a = PostgresStateStore.open(postgres_url, pool_size=2)
    b = PostgresStateStore.open(postgres_url, pool_size=2)
    yield a, b
    a.close()
    b.close()


def listening_backends(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as db:
        found = db.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND query LIKE 'LISTEN %%' AND state = 'idle'"
        ).fetchall()
    return [pid for (pid,) in found]


def wait_listening(url: str, but_not: tuple[int, ...] = ()) -> int:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        found = [pid for pid in listening_backends(url) if pid not in but_not]
        if found:
            return found[0]
    raise AssertionError("the listener never listened")


@pytest.fixture
def listener(stores, postgres_url):
    received: queue.Queue[tuple[str | None, str]] = queue.Queue()
    stopping = threading.Event()
    thread = threading.Thread(
        target=PostgresTriggers(stores[0].connections).listen,
        args=(lambda env, reason: received.put((env, reason)), stopping),
        kwargs={"poll": 0.2},
    )
    thread.start()
    wait_listening(postgres_url)
    yield received
    stopping.set()
    thread.join(timeout=WAIT_S)
    assert not thread.is_alive(), "the listener stops when asked"


def test_a_request_sent_by_one_replica_reaches_the_listener_of_another(stores, listener):
    PostgresTriggers(stores[1].connections).notify("prod", "webhook")
    PostgresTriggers(stores[1].connections).notify(None, "api")
    assert listener.get(timeout=WAIT_S) == ("prod", "webhook")
    assert listener.get(timeout=WAIT_S) == (None, "api")


def test_a_lost_listener_reconnects_and_asks_for_a_full_sync(stores, listener, postgres_url):
    [pid] = listening_backends(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert listener.get(timeout=WAIT_S) == (None, "reconnected")
    wait_listening(postgres_url, but_not=(pid,))
    PostgresTriggers(stores[1].connections).notify("staging", "webhook")
    assert listener.get(timeout=WAIT_S) == ("staging", "webhook")


def test_payloads_that_are_not_ours_are_ignored():
    assert parse("not json") is None and parse("[1]") is None
    assert parse('{"environment": 3, "reason": "x"}') is None
    assert parse('{"environment": "", "reason": "poll"}') == (None, "poll")
