"""The event log over HTTP: ``GET /api/v1/events`` (pages) and ``GET /api/v1/events/stream``
(Server-Sent Events), added to the daemon's API by ``report.api.create_app``.

Contract:
* Both are reads: the guard's read rule applies (open on loopback; ``api.read_token_file``'s
  or ``api.token_file``'s bearer token when a read token is configured).
* Filters (both): ``environment``, ``group``, ``kind`` (repeatable), ``severity`` (repeatable,
  exact) or ``min_severity``; ids ``after`` / ``before``. ``GET /api/v1/events`` answers at most
  ``limit`` events, newest first, and ``next``: the ``cursor`` of the next (older) page, or
  null at the end.
* The stream sends, per event, ``id: <id>``, ``event: <kind>`` and ``data: <the event as
  JSON, one line>``; a comment line (``: heartbeat``) after ``events.heartbeat`` of silence; and
  ``retry: 3000``. It starts after the ``Last-Event-ID`` header's id (or ``after``; neither:
  from now on) and loses nothing in between: what is already stored is read back first. It ends
  cleanly when the daemon shuts down (a last ``event: end`` with ``{"reason": "shutdown"}``), and
  ends without that event when the client reads too slowly to keep up (the client resumes from
  its last id). Beyond ``events.max_streams`` open streams: 503. The stream is not in the
  OpenAPI document (it never ends: no schema fuzzer can call it).
"""

# No ``from __future__ import annotations``: FastAPI reads the route functions' annotations.
import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from reconciler.record import Event
from reconciler.report.events import EventFeed, EventPage, EventView, TooManyStreams
from reconciler.states import EventKind, Severity

__all__ = ["router", "sse"]

#: The stream's path (the web page follows it).
STREAM = "/api/v1/events/stream"
END = 'event: end\ndata: {"reason": "shutdown"}\n\n'
MAX_ID = 2**62


def sse(event: Event) -> str:
    """One event in the Server-Sent Events format."""
    data = json.dumps(EventView.of(event).model_dump(), separators=(",", ":"))
    head = f"id: {event.id}\n" if event.id is not None else ""
    return f"{head}event: {event.kind}\ndata: {data}\n\n"


def _severities(exact: list[Severity], minimum: Severity | None) -> set[Severity] | None:
    chosen = set(exact) if exact else None
    if minimum is not None:
        at_least = {s for s in Severity if s.at_least(minimum)}
        chosen = at_least if chosen is None else chosen & at_least
    return chosen


def _last_event_id(request: Request, after: int | None) -> int | None:
    raw = request.headers.get("last-event-id")
    if raw is None or not raw.strip():
        return after
    if not raw.strip().isdigit() or len(raw.strip()) > 18:
        raise HTTPException(400, "Last-Event-ID must be an event id")
    return int(raw.strip())


def router(
    feed: Callable[[], EventFeed], stopping: Callable[[], bool], heartbeat: float
) -> APIRouter:
    """The routes, reading the event log ``feed()`` of the daemon."""
    api = APIRouter(tags=["events"])
    Id = Annotated[int | None, Query(ge=0, le=MAX_ID)]
    Kinds = Annotated[list[EventKind], Query()]
    Severities = Annotated[list[Severity], Query()]

    @api.get("/api/v1/events", response_model=EventPage)
    def events(
        environment: Annotated[str | None, Query(max_length=255)] = None,
        group: Annotated[str | None, Query(max_length=255)] = None,
        kind: Kinds = [],  # noqa: B006 - FastAPI copies defaults
        severity: Severities = [],  # noqa: B006
        min_severity: Severity | None = None,
        after: Id = None,
        before: Id = None,
        cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> EventPage:
        """The event log, newest first: commits accepted and rejected, rollouts and their
        steps, gates, rollbacks, reverts, drift, the source, suspensions, quarantines.
        ``GET /api/v1/events/stream`` streams the same events (Server-Sent Events)."""
        if cursor is not None:
            before = min(int(cursor), before) if before is not None else int(cursor)
        found = feed().events(
            environment=environment,
            group=group,
            kinds=kind or None,
            severities=_severities(severity, min_severity),
            after=after,
            before=before,
            limit=limit,
        )
        more = len(found) == limit and found[-1].id is not None
        return EventPage(
            events=[EventView.of(e) for e in found], next=str(found[-1].id) if more else None
        )

    @api.get(STREAM, include_in_schema=False)
    async def stream(
        request: Request,
        environment: Annotated[str | None, Query(max_length=255)] = None,
        group: Annotated[str | None, Query(max_length=255)] = None,
        kind: Kinds = [],  # noqa: B006
        severity: Severities = [],  # noqa: B006
        min_severity: Severity | None = None,
        after: Id = None,
    ) -> StreamingResponse:
        start = _last_event_id(request, after)
        kinds, severities = set(kind), _severities(severity, min_severity)

        def matches(event: Event) -> bool:
            return (
                (environment is None or event.environment == environment)
                and (group is None or event.group == group)
                and (not kinds or event.kind in kinds)
                and (severities is None or event.severity in severities)
            )

        log = feed()
        if stopping() or log.closed.is_set():
            raise HTTPException(503, "the daemon is shutting down")
        try:
            subscription = log.subscribe_async(after=start, matches=matches)
        except TooManyStreams as exc:
            raise HTTPException(503, str(exc)) from exc

        async def body() -> AsyncIterator[str]:
            try:
                yield "retry: 3000\n: connected\n\n"
                while True:
                    event = await subscription.get(timeout=heartbeat)
                    if event is not None:
                        yield sse(event)
                    elif not subscription.closed:
                        yield ": heartbeat\n\n"
                    else:
                        if log.closed.is_set():
                            yield END
                        return
            finally:
                subscription.close()

        return StreamingResponse(
            body(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return api
