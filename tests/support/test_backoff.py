"""support.backoff: the one exponential backoff, and a wait that a shutdown interrupts."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.support.backoff import Backoff, sleep

#: A promptness bound for waits interrupted from another thread (a loaded shared machine).
PROMPTNESS_S = 5.0


def test_doubles_from_the_base_up_to_the_cap():
    retry = Backoff(base=0.2, cap=5.0)
    assert [retry.delay(n) for n in range(7)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    waits = retry.waits()
    assert [next(waits) for _ in range(3)] == [0.2, 0.4, 0.8]


def test_is_the_daemons_fetch_backoff():
    """The daemon waits ``poll_interval * 2**failures``, at most 600 s."""
    for poll_interval in (0.0, 0.5, 30.0):
        retry = Backoff(poll_interval, 600.0)
        for failures in range(1, 200):
            assert retry.delay(failures) == min(600.0, poll_interval * 2**failures)


def test_huge_attempt_numbers_stay_at_the_cap():
    assert Backoff(1.0, 600.0).delay(10_000) == 600.0
    assert Backoff(1e300, 600.0).delay(1_000) == 600.0
    assert Backoff(0.0, 600.0).delay(10_000) == 0.0


@given(
    base=st.floats(0, 100),
    cap=st.floats(0, 1000),
    jitter=st.floats(0, 1),
    n=st.integers(0, 200),
)
def test_jitter_only_shortens_and_stays_within_its_share(base, cap, jitter, n):
    retry = Backoff(base, cap, jitter)
    full = Backoff(base, cap).delay(n)
    delay = retry.delay(n)
    assert full * (1 - jitter) - 1e-9 <= delay <= full <= cap


def test_jitter_draws_from_the_given_source():
    retry = Backoff(1.0, 10.0, jitter=0.5)
    assert retry.delay(1, uniform=lambda low, high: low) == 1.0
    assert retry.delay(1, uniform=lambda low, high: high) == 2.0


@pytest.mark.parametrize(
    "args", [(-1.0, 1.0, 0.0), (1.0, -1.0, 0.0), (1.0, 1.0, -0.1), (1.0, 1.0, 1.5)]
)
def test_invalid_parameters_are_refused(args):
    with pytest.raises(ValueError):
        Backoff(*args)
    with pytest.raises(ValueError):
        Backoff(1.0, 1.0).delay(-1)


def test_sleep_waits_the_full_time_unless_cancelled():
    started = time.monotonic()
    assert sleep(0.05, threading.Event()) is True
    assert time.monotonic() - started >= 0.05
    assert sleep(0.0) is True


def test_sleep_returns_as_soon_as_the_event_is_set():
    cancel = threading.Event()
    timer = threading.Timer(0.1, cancel.set)
    timer.start()
    started = time.monotonic()
    assert sleep(600.0, cancel) is False
    assert time.monotonic() - started < PROMPTNESS_S
    assert sleep(600.0, cancel) is False  # already set: no wait at all
    assert sleep(0.0, cancel) is False
