"""Sync requests between replicas: PostgreSQL ``LISTEN``/``NOTIFY`` on one channel.

Contract:
* ``PostgresTriggers(connections)``: ``notify(environment, reason)`` publishes a sync request
  on ``CHANNEL`` (delivered to every listening session of the database once the sending
  transaction commits; autocommit: at once). An empty environment means every environment.
  The payload is JSON ``{"environment": ..., "reason": ...}``, cut to the names' limits
  (a NOTIFY payload must stay under 8000 bytes).
* ``listen(on_request, stopping)`` runs until ``stopping`` is set, on a dedicated
  connection (never a pooled one: ``LISTEN`` belongs to its session), calling
  ``on_request(environment | None, reason)`` for each request. When the connection is lost
  it reconnects with backoff and then calls ``on_request(None, "reconnected")``: requests
  sent while it was away are lost, so the replica syncs everything it owns once.
* Delivery is at most once and unordered across senders; a request is a nudge, never the
  truth: the owner re-reads Git and the store when it reconciles.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg
import structlog

from reconciler.errors import ReconcilerError
from reconciler.record.postgresql.connection import Connections

if TYPE_CHECKING:
    from reconciler.record.protocols import SyncRequests

__all__ = ["CHANNEL", "PostgresTriggers"]

CHANNEL = "reconciler_sync"
_NAME_LIMIT = 200
_RETRY_S = (0.5, 1.0, 2.0, 5.0)

log = structlog.get_logger(__name__)

OnRequest = Callable[[str | None, str], None]


def _payload(environment: str | None, reason: str) -> str:
    return json.dumps(
        {"environment": (environment or "")[:_NAME_LIMIT], "reason": reason[:_NAME_LIMIT]},
        separators=(",", ":"),
    )


def parse(payload: str) -> tuple[str | None, str] | None:
    """``(environment or None, reason)`` of a payload; None when it is not ours."""
    try:
        found: Any = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(found, dict):
        return None
    environment, reason = found.get("environment"), found.get("reason")
    if not isinstance(environment, str) or not isinstance(reason, str):
        return None
    return (environment or None), reason


class PostgresTriggers:
    """Publish and receive sync requests; see the module's contract."""

    def __init__(self, connections: Connections) -> None:
        self.connections = connections

    def notify(self, environment: str | None, reason: str) -> None:
        with self.connections.writer() as db:
            db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, _payload(environment, reason)))

    def listen(self, on_request: OnRequest, stopping: threading.Event, poll: float = 1.0) -> None:
        """Deliver requests until ``stopping`` is set (checked every ``poll`` seconds)."""
        failures = 0
        while not stopping.is_set():
            try:
                with self.connections.connect() as db:
                    db.execute(f"LISTEN {CHANNEL}")
                    if failures:
                        log.info("sync_listener_reconnected", after_failures=failures)
                        on_request(None, "reconnected")
                    failures = 0
                    while not stopping.is_set():
                        for note in db.notifies(timeout=poll, stop_after=1):
                            request = parse(note.payload)
                            if request is not None:
                                on_request(*request)
            except (ReconcilerError, psycopg.Error) as exc:  # StoreUnavailable, StoreError
                failures += 1
                log.warning("sync_listener_lost", error=str(exc), failures=failures)
            except Exception as exc:  # a broken callback must not end listening
                failures += 1
                log.warning("sync_listener_failed", error=f"{type(exc).__name__}: {exc}")
            stopping.wait(_RETRY_S[min(failures, len(_RETRY_S)) - 1] if failures else 0)


if TYPE_CHECKING:  # mypy proves the class implements the Protocol

    def _conforms(triggers: PostgresTriggers) -> SyncRequests:
        return triggers
