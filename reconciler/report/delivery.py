"""A consumer of the event log in its own thread, with a cursor that survives restarts.

Contract (``EventWorker``; notifications and commit statuses are ones):
* ``start(log, count)`` subscribes after the cursor persisted under ``cursor_key`` (in the
  store's meta) or, the first time, after the newest event: a new consumer never replays
  history. ``handle(event)`` is called in the worker's thread for each event ``wants`` accepts,
  in id order, once: the cursor is persisted after each handled event (and at least every few
  seconds while skipping), so a restart neither resends nor loses what came before it.
* Events older than ``catch_up`` seconds at start (left undelivered by a stop or a crash) are
  skipped, not sent late; ``count("<name>", "skipped")`` says how many.
* ``handle`` may take long (a slow receiver, retries): only this worker waits; producers never
  do (``report.events``). ``stopping`` (set by ``stop``) ends its waits.
* ``stop(timeout)`` asks the thread to end and waits up to ``timeout``; the thread ends by
  itself when the log closes, after the events already queued for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import ClassVar, Protocol

import structlog

from reconciler.record import Event
from reconciler.report.events import EventLog, Subscription

__all__ = ["Count", "CursorStore", "EventWorker"]

log = structlog.get_logger(__name__)

Count = Callable[[str, str], None]
_PERSIST_EVERY_S = 5.0


class CursorStore(Protocol):
    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...


class EventWorker:
    """Base class: subclasses define ``wants``, ``handle`` and ``metric`` (the name of the
    ``report.metrics.Metrics`` counter their outcomes go to)."""

    metric: ClassVar[str] = ""

    def __init__(
        self,
        name: str,
        meta: CursorStore,
        cursor_key: str,
        *,
        catch_up: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.meta = meta
        self.cursor_key = cursor_key
        self.catch_up = catch_up
        self.clock = clock
        self.stopping = threading.Event()
        self.count: Count = lambda _label, _result: None
        self._thread: threading.Thread | None = None
        self._subscription: Subscription | None = None
        self._since = 0.0
        self._done = 0  # every event up to this id is handled or not wanted

    # -- for subclasses
    def wants(self, event: Event) -> bool:
        return True

    def handle(self, event: Event) -> None:
        raise NotImplementedError

    # -- lifecycle
    def start(self, events: EventLog, count: Count | None = None) -> None:
        if count is not None:
            self.count = count
        saved = self._saved()
        self._since = self.clock() - self.catch_up
        self._done = saved if saved is not None else events.newest
        self._subscription = events.subscribe(after=self._done, matches=self.wants)
        self._thread = threading.Thread(target=self._run, name=f"events-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """After the log closed: let the thread finish what is queued for a moment, then stop
        it (what is left is handled at the next start)."""
        if self._thread is not None:
            self._thread.join(min(timeout / 2, 3.0))
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout / 2)
        self._persist()

    def _saved(self) -> int | None:
        try:
            value = self.meta.get_meta(self.cursor_key)
            return int(value) if value else None
        except Exception:
            log.exception("event_cursor_unreadable", worker=self.name)
            return None

    def _persist(self) -> None:
        if self._subscription is None:
            return
        try:
            self.meta.set_meta(self.cursor_key, str(self._done))
        except Exception:
            log.exception("event_cursor_not_saved", worker=self.name)

    def _run(self) -> None:
        assert self._subscription is not None
        subscription, persisted = self._subscription, time.monotonic()
        while not self.stopping.is_set():
            event = subscription.get(timeout=0.5)
            if event is None:
                self._done = max(self._done, subscription.cursor)  # the rest was not wanted
                if subscription.closed:
                    break
            elif event.at < self._since:
                self.count(self.name, "skipped")
                self._done = max(self._done, event.id or 0)
            else:
                try:
                    self.handle(event)
                except Exception:  # one bad event must not end the consumer
                    log.exception("event_consumer_failed", worker=self.name, event_id=event.id)
                    self.count(self.name, "failed")
                if self.stopping.is_set():
                    break  # cut short: handled again at the next start
                self._done = max(self._done, event.id or 0)
                self._persist()
                persisted = time.monotonic()
                continue
            if time.monotonic() - persisted > _PERSIST_EVERY_S:
                self._persist()
                persisted = time.monotonic()
        subscription.close()
