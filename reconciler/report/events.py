"""The daemon's event log: ``EventLog``, the ``record.EventSink`` that appends every event to the
store and hands it to its subscribers, none of which can slow a producer down.

Contract:
* ``emit(...)`` never raises and never waits on a consumer: under one lock it stamps the time,
  appends the event to the store (its id comes from there; a failing store is logged and the
  event still goes to the subscribers, without an id) and offers it to every subscription's
  bounded queue without blocking. Ids therefore reach every subscriber in increasing order.
  The summary is made one redacted, terminal-safe line; details are made plain JSON, every
  text in them redacted.
* Retention: every ``prune_every`` appends (and at ``prune()``) the store drops the events
  beyond the newest ``keep`` and those older than ``max_age`` seconds: a cost proportional to
  what is deleted, paid once per ``prune_every`` appends, never a scan of the log per append.
* A ``Subscription`` (threads: notifications, commit statuses) or an ``AsyncSubscription``
  (the API's event stream, on the server's loop) yields the events after a cursor in id order,
  each once, none lost: those already stored at subscription time, and (for a thread) those
  that overflowed its queue, are read back from the store; an async subscription whose queue
  overflowed ends instead (an event stream's client resumes after its last id). ``matches``
  filters what it yields (the cursor still moves past what it skips). ``close()`` of the log
  ends every subscription (the daemon's shutdown ends event streams cleanly).
* At most ``max_streams`` async subscriptions at once (``TooManyStreams`` beyond).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import structlog
from pydantic import BaseModel, Field

from reconciler.record import Event, Events
from reconciler.record.events import SEVERITY
from reconciler.states import EventKind, Severity
from reconciler.support.redaction import redact
from reconciler.support.text import safe

__all__ = [
    "AsyncSubscription",
    "EventFeed",
    "EventLog",
    "EventPage",
    "EventView",
    "Subscription",
    "TooManyStreams",
]

log = structlog.get_logger(__name__)

SUMMARY_LIMIT = 500
_PAGE = 200
_CLOSED = object()
Matcher = Callable[[Event], bool]


class EventView(BaseModel):
    """One event as the API, the stream's ``data:`` and ``reconciler events -o json`` show it."""

    id: int | None = Field(description="Increasing; resume a stream after it.")
    at: float = Field(description="Seconds since the epoch.")
    kind: str
    severity: str = Field(description="info, warning or error.")
    summary: str = Field(description="One human line.")
    environment: str | None
    group: str | None
    rollout_id: str | None
    commit: str | None
    details: dict[str, Any] = Field(description="The structure: versions, steps, gates, revert.")

    @classmethod
    def of(cls, event: Event) -> EventView:
        return cls.model_validate(event.as_dict())


class EventPage(BaseModel):
    events: list[EventView] = Field(description="Newest first.")
    next: str | None = Field(description="Pass as ``cursor`` for the next (older) page.")


class TooManyStreams(RuntimeError):
    """Every event stream slot is taken."""


class EventFeed(Protocol):
    """What the API reads of the event log (``EventLog`` is one)."""

    closed: threading.Event

    def events(self, **filters: Any) -> list[Event]:
        """``record.Events.events`` with these keyword filters."""
        ...

    def subscribe_async(
        self, *, after: int | None = None, matches: Matcher | None = None
    ) -> AsyncSubscription: ...


def _redacted(value: Any) -> Any:
    """Every text in ``value`` (plain JSON) with its credentials masked."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    return value


def _plain(details: Mapping[str, Any] | None) -> dict[str, Any]:
    """``details`` as plain JSON values (anything else as its text), credentials masked (a
    gate's URL, a Git error may carry them)."""
    if not details:
        return {}
    value = _redacted(json.loads(json.dumps(dict(details), default=str)))
    return value if isinstance(value, dict) else {}


def one_line(summary: str) -> str:
    return safe(redact(" ".join(str(summary).split())), SUMMARY_LIMIT)


class _Cursor:
    """What both kinds of subscription share: the cursor, the store pages, the overflow."""

    def __init__(self, log_: EventLog, after: int, until: int, matches: Matcher | None) -> None:
        self._log = log_
        self.cursor = after
        self._until = until  # events up to this id are read from the store
        self._page: deque[Event] = deque()
        self._matches = matches
        self.overflowed = False
        self.closed = False

    def _from_store(self) -> bool:
        """Refill the page from the store when events up to ``_until`` are still unread."""
        while not self._page and self.cursor < self._until:
            found = self._log.store.events(after=self.cursor, limit=_PAGE, oldest_first=True)
            found = [e for e in found if e.id is not None and e.id <= self._until]
            if not found:
                self.cursor = self._until
                break
            self._page.extend(found)
        return bool(self._page)

    def _take(self) -> Event | None:
        """The next paged event that matches (the cursor moves past every one)."""
        while self._page:
            event = self._page.popleft()
            self.cursor = max(self.cursor, event.id or 0)
            if self._matches is None or self._matches(event):
                return event
        return None

    def _accept(self, item: Any) -> Event | None:
        """A queued item: the event to yield, or None (skipped, or the end)."""
        if item is _CLOSED:
            self.closed = True
            return None
        event: Event = item
        if event.id is not None:
            if event.id <= self.cursor:
                return None
            self.cursor = event.id
        return event if self._matches is None or self._matches(event) else None


class Subscription(_Cursor):
    """Events for a consumer thread."""

    def __init__(self, log_: EventLog, after: int, until: int, matches: Matcher | None, size: int):
        super().__init__(log_, after, until, matches)
        self._queue: queue.Queue[Any] = queue.Queue(size)

    def offer(self, item: Any) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            if item is _CLOSED:
                self.closed = True
            self.overflowed = True

    def get(self, timeout: float) -> Event | None:
        """The next event; None when ``timeout`` passed or the subscription is closed."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            if self._from_store() and (event := self._take()) is not None:
                return event
            if self.overflowed:
                self._until = self._log.resync(self)
                continue
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if (event := self._accept(item)) is not None:
                return event
        return None

    def drain(self) -> None:
        """Forget what is queued (the log's lock is held: nothing arrives meanwhile)."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is _CLOSED:
                self.closed = True

    def close(self) -> None:
        self._log.unsubscribe(self)
        self.closed = True


class AsyncSubscription(_Cursor):
    """Events for a coroutine on ``loop`` (the API's event stream)."""

    def __init__(
        self,
        log_: EventLog,
        after: int,
        until: int,
        matches: Matcher | None,
        size: int,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(log_, after, until, matches)
        self._loop = loop
        self._queue: asyncio.Queue[Any] = asyncio.Queue(size)

    def offer(self, item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._put, item)
        except RuntimeError:  # the loop is closed: nobody listens any more
            self.closed = True

    def _put(self, item: Any) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            if item is _CLOSED:
                self.closed = True
            self.overflowed = True

    async def get(self, timeout: float) -> Event | None:
        """The next event; None when ``timeout`` passed or the subscription is closed."""
        deadline = time.monotonic() + timeout
        while not self.closed:
            if await asyncio.to_thread(self._from_store) and (event := self._take()) is not None:
                return event
            if self.overflowed:  # the stream ends; its client resumes from its last id
                self.closed = True
                return None
            try:
                left = max(0.0, deadline - time.monotonic())
                item = await asyncio.wait_for(self._queue.get(), left)
            except TimeoutError:
                return None
            if (event := self._accept(item)) is not None:
                return event
        return None

    def close(self) -> None:
        self._log.unsubscribe(self)
        self.closed = True


class EventLog:
    """The ``record.EventSink`` of the daemon and of a foreground ``sync`` (see the module)."""

    def __init__(
        self,
        store: Events,
        *,
        clock: Callable[[], float] = time.time,
        keep: int | None = 100_000,
        max_age: float | None = None,
        prune_every: int = 500,
        max_streams: int = 32,
        queue_size: int = 1000,
    ) -> None:
        self.store = store
        self.clock = clock
        self.keep = keep
        self.max_age = max_age
        self.prune_every = max(1, prune_every)
        self.max_streams = max_streams
        self.queue_size = queue_size
        self.closed = threading.Event()
        self._lock = threading.Lock()
        self._subscriptions: set[Subscription | AsyncSubscription] = set()
        self._appended = 0
        try:
            self._newest = store.newest_event_id()
        except Exception:
            log.exception("event_log_unreadable")
            self._newest = 0

    # ------------------------------------------------------------------ producing
    def emit(
        self,
        kind: EventKind,
        *,
        summary: str,
        environment: str | None = None,
        group: str | None = None,
        rollout_id: str | None = None,
        commit: str | None = None,
        details: Mapping[str, Any] | None = None,
        severity: Severity | None = None,
    ) -> None:
        try:
            event = Event(
                None, 0.0, kind, severity or SEVERITY[EventKind(kind)], one_line(summary),
                environment, group, rollout_id, commit, _plain(details),
            )  # fmt: skip
        except Exception:  # a producer's bug must not stop a rollout
            log.exception("event_invalid", kind=str(kind))
            return
        with self._lock:
            event = dataclasses.replace(event, at=self.clock())
            try:
                event = self.store.append_event(event)
                self._newest = max(self._newest, event.id or 0)
            except Exception as exc:
                log.error(
                    "event_not_recorded", kind=str(kind), summary=event.summary, error=str(exc)
                )
            for subscription in self._subscriptions:
                subscription.offer(event)
            self._appended += 1
            due = self._appended % self.prune_every == 0
        log.debug("event", id=event.id, kind=str(event.kind), summary=event.summary)
        if due:
            self.prune()

    def prune(self) -> int:
        """Apply the retention now; returns how many events went. Never raises."""
        if self.keep is None and not self.max_age:
            return 0
        older = self.clock() - self.max_age if self.max_age else None
        try:
            return self.store.prune_events(keep=self.keep, older_than=older)
        except Exception:
            log.exception("event_prune_failed")
            return 0

    # ------------------------------------------------------------------ reading
    def events(self, **filters: Any) -> list[Event]:
        return self.store.events(**filters)

    @property
    def newest(self) -> int:
        return self._newest

    def subscribe(
        self, *, after: int | None = None, matches: Matcher | None = None
    ) -> Subscription:
        """Events with ids above ``after`` (None: from now on), for a thread."""
        with self._lock:
            start = self._newest if after is None else after
            subscription = Subscription(self, start, self._newest, matches, self.queue_size)
            self._register(subscription)
        return subscription

    def subscribe_async(
        self, *, after: int | None = None, matches: Matcher | None = None
    ) -> AsyncSubscription:
        """Events with ids above ``after`` (None: from now on), for a coroutine of the running
        loop; ``TooManyStreams`` when ``max_streams`` are open."""
        loop = asyncio.get_running_loop()
        with self._lock:
            streams = sum(isinstance(s, AsyncSubscription) for s in self._subscriptions)
            if streams >= self.max_streams:
                raise TooManyStreams(f"{streams} event streams are open (events.max_streams)")
            start = self._newest if after is None else after
            subscription = AsyncSubscription(
                self, start, self._newest, matches, self.queue_size, loop
            )
            self._register(subscription)
        return subscription

    def _register(self, subscription: Subscription | AsyncSubscription) -> None:
        if self.closed.is_set():
            subscription.closed = True
        else:
            self._subscriptions.add(subscription)

    def resync(self, subscription: Subscription) -> int:
        """After an overflow: forget the queue; the store serves up to the newest id."""
        with self._lock:
            subscription.overflowed = False
            subscription.drain()
            return self._newest

    def unsubscribe(self, subscription: Subscription | AsyncSubscription) -> None:
        with self._lock:
            self._subscriptions.discard(subscription)

    def close(self) -> None:
        """End every subscription (emitting still records to the store)."""
        with self._lock:
            self.closed.set()
            subscriptions, self._subscriptions = self._subscriptions, set()
        for subscription in subscriptions:
            subscription.offer(_CLOSED)
