"""Exponential backoff: ONE helper for every retry loop (push retries, the daemon's fetch backoff).

Contract:

* ``Backoff(base, cap, jitter)`` is frozen data. ``delay(n)`` is the wait after the ``n``-th
  doubling: ``min(cap, base * 2**n)`` for ``n >= 0``, then, with ``jitter`` ``j`` in ``[0, 1]``,
  drawn uniformly from ``[d * (1 - j), d]`` (jitter only ever shortens a wait, so ``cap`` is a
  true upper bound). ``jitter=0`` is deterministic.
* ``waits()`` yields ``delay(0), delay(1), ...`` without end: zip it with the attempts.
* ``sleep(seconds, cancel)`` waits on a ``threading.Event``: it returns ``False`` as soon as the
  event is set (a shutdown), ``True`` after the full wait. It never calls ``time.sleep``, so a
  retry loop built on it is always interruptible.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["Backoff", "sleep"]

# Beyond this many doublings ``2.0**n`` would overflow: the product is past any cap anyway.
_MAX_DOUBLINGS = 1000


@dataclass(frozen=True)
class Backoff:
    """Exponential from ``base`` seconds, capped at ``cap`` seconds, shortened by ``jitter``."""

    base: float
    cap: float
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0:
            raise ValueError("backoff base and cap must not be negative")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("backoff jitter must be between 0 and 1")

    def delay(self, n: int, *, uniform: Callable[[float, float], float] = random.uniform) -> float:
        """Seconds to wait after the ``n``-th doubling (``n = 0``: ``base``)."""
        if n < 0:
            raise ValueError("backoff attempt must not be negative")
        full = min(self.cap, self.base * 2.0 ** min(n, _MAX_DOUBLINGS))
        if self.jitter == 0.0 or full == 0.0:
            return full
        return uniform(full * (1.0 - self.jitter), full)

    def waits(self) -> Iterator[float]:
        """``delay(0), delay(1), ...``: the waits between consecutive attempts."""
        n = 0
        while True:
            yield self.delay(n)
            n += 1


def sleep(seconds: float, cancel: threading.Event | None = None) -> bool:
    """Wait ``seconds``; ``False`` as soon as ``cancel`` is set, ``True`` after the full wait."""
    event = cancel if cancel is not None else threading.Event()
    if seconds <= 0:
        return not event.is_set()
    return not event.wait(seconds)
