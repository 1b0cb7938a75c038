"""The producer side of the event log: the ``EventSink`` Protocol every stage emits through.

Contract:
* ``emit(kind, summary=..., ...)`` records that something happened. It never raises and never
  waits on anything slow: the daemon's sink (``report.events.EventLog``) appends to the store
  and hands the event to subscribers through bounded queues; notifications, commit statuses and
  event streams run in their own threads. A rollout can therefore emit anywhere, even in a
  ``finally``.
* ``summary`` is one human line (newlines are folded by the sink); ``details`` are plain JSON
  values (the structure a chat message or a web page renders: apps and versions from -> to,
  step k/n and its hosts, the gate, host and what it saw, the revert commit).
* ``severity`` defaults to the kind's (``SEVERITY``); a producer passes one only when the same
  kind can mean more or less (none do today).
* ``SilentSink`` emits nothing: the default of the rollout engine and the source stage, and what
  read-only commands use. Tests record events with ``reconciler.testing.fakes.RecordingSink``.

Pure: no I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Protocol

from reconciler.states import EventKind, Severity

__all__ = ["SEVERITY", "EventSink", "SilentSink"]

_I, _W, _E = Severity.INFO, Severity.WARNING, Severity.ERROR

#: The severity of each kind of event.
SEVERITY: Mapping[EventKind, Severity] = MappingProxyType(
    {
        EventKind.COMMIT_ACCEPTED: _I,
        EventKind.COMMIT_REJECTED: _E,
        EventKind.ROLLOUT_STARTED: _I,
        EventKind.STEP_FINISHED: _I,
        EventKind.GATE_FAILED: _E,
        EventKind.ROLLOUT_SUCCEEDED: _I,
        EventKind.ROLLOUT_DEGRADED: _W,
        EventKind.ROLLOUT_ROLLED_BACK: _E,
        EventKind.ROLLOUT_FAILED: _E,
        EventKind.ROLLOUT_SUPERSEDED: _I,
        EventKind.ROLLOUT_INTERRUPTED: _W,
        EventKind.ROLLOUT_RESUMED: _W,
        EventKind.REVERT_PUSHED: _W,
        EventKind.REVERT_AWAITING_HUMAN: _E,
        EventKind.REVERT_PUSH_FAILED: _E,
        EventKind.ENVIRONMENT_SYNCED: _I,
        EventKind.DRIFT_DETECTED: _W,
        EventKind.DRIFT_HEALED: _I,
        EventKind.SOURCE_DOWN: _E,
        EventKind.SOURCE_UP: _I,
        EventKind.ENVIRONMENT_SUSPENDED: _W,
        EventKind.ENVIRONMENT_RESUMED: _I,
        EventKind.QUARANTINE_SET: _W,
        EventKind.QUARANTINE_LIFTED: _I,
    }
)


class EventSink(Protocol):
    """Where the stages tell what happened (see the module docstring)."""

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
    ) -> None: ...


class SilentSink:
    """An ``EventSink`` that records nothing."""

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
        return None
