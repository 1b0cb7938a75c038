"""Notifications: events routed to chat, mail and webhooks (apprise channels), asynchronously.

Contract:
* One ``RouteWorker`` per configured route (``notifications.routes``), each an
  ``report.delivery.EventWorker`` in its own thread: a rollout never waits for a notification,
  and a slow or dead destination delays only its own route.
* A route takes an event when every filter it sets matches: ``environments``, ``groups``,
  ``kinds`` (empty: any) and ``min_severity``. An event that names no environment (or no
  group), such as ``commit_rejected`` or ``source_down``, concerns them all: it passes those
  filters.
* Each event is sent once to each channel of the route: tried up to ``attempts`` times, with
  waits from ``backoff`` doubling to ``max_backoff`` (``support.backoff``); the last delivered
  event id is persisted per route, so a restart never resends, and duplicates of one
  transition are never sent twice.
* Every outcome is counted (``count(route, result)``: ``sent``, ``failed``, ``skipped``:
  ``reconciler_notifications_total``); failures are logged with the channel's masked name,
  never its URL.
* ``message(event)`` is the text: a title (``prod/web: rolled back``) and a body whose first
  line is the summary, then what changed (apps, versions from -> to), where it stands (step
  k/n, hosts), why it failed (gate, host, what it saw), the revert commit, the commit, and the
  event and rollout ids.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from reconciler.edges.notify import Channel, NotifyKind
from reconciler.record import Event
from reconciler.report.delivery import CursorStore, EventWorker
from reconciler.settings import NotificationRoute, NotificationSettings
from reconciler.states import EventKind, Severity
from reconciler.support.backoff import Backoff

__all__ = ["RouteWorker", "matches", "message"]

log = structlog.get_logger(__name__)

_SUCCESS = frozenset(
    {
        EventKind.ROLLOUT_SUCCEEDED,
        EventKind.ENVIRONMENT_SYNCED,
        EventKind.SOURCE_UP,
        EventKind.DRIFT_HEALED,
        EventKind.QUARANTINE_LIFTED,
        EventKind.ENVIRONMENT_RESUMED,
    }
)
_KINDS: Mapping[Severity, NotifyKind] = {
    Severity.INFO: "info",
    Severity.WARNING: "warning",
    Severity.ERROR: "failure",
}


def matches(route: NotificationRoute, event: Event) -> bool:
    """Whether ``route`` takes ``event`` (see the module docstring)."""
    if route.environments and event.environment and event.environment not in route.environments:
        return False
    if route.groups and event.group and event.group not in route.groups:
        return False
    if route.kinds and event.kind not in route.kinds:
        return False
    return event.severity.at_least(route.min_severity)


def _versions(versions: Mapping[str, Any]) -> list[str]:
    lines = []
    for app, v in versions.items():
        before = "/".join(x or "none" for x in v.get("from") or []) or "none"
        lines.append(f"{app}: {before} -> {v.get('to')}")
    return lines


def _lines(event: Event) -> list[str]:
    d: Mapping[str, Any] = event.details
    out: list[str] = []
    if d.get("versions"):
        out.append("versions: " + "; ".join(_versions(d["versions"])))
    for change in d.get("changes", [])[:20]:
        where = f"{change['environment']}/{change['group']}"
        out.append(f"{where}: {change['app']} {change['from'] or 'none'} -> {change['to']}")
    if "step" in d and "steps" in d:
        out.append(f"{d.get('phase', 'deploy')} step {d['step']}/{d['steps']}")
    if d.get("hosts") and isinstance(d["hosts"], list) and isinstance(d["hosts"][0], str):
        out.append("hosts: " + ", ".join(d["hosts"][:20]))
    if d.get("failed") and isinstance(d["failed"], dict):
        out.append("failed: " + "; ".join(f"{h}: {m}" for h, m in list(d["failed"].items())[:10]))
    if event.kind is EventKind.GATE_FAILED:
        out.append(
            f"gate {d.get('gate')} ({d.get('kind')}) on {d.get('host') or 'the group'}"
            f" for {d.get('app')} {d.get('version')}, {d.get('checkpoint')}: {d.get('detail')}"
        )
    if d.get("reason"):
        out.append(f"reason: {d['reason']}")
    if d.get("revert_commit"):
        out.append(f"revert commit: {d['revert_commit']} (reverts {d.get('offending_commit')})")
    for problem in d.get("problems", [])[:10]:
        out.append(f"problem: {problem}")
    if event.commit:
        subject = f" ({d['subject']})" if d.get("subject") else ""
        out.append(f"commit: {event.commit}{subject}")
    ids = [f"event #{event.id}"] + ([f"rollout {event.rollout_id}"] if event.rollout_id else [])
    out.append(", ".join(ids))
    return out


def message(event: Event) -> tuple[str, str, NotifyKind]:
    """Title, body and apprise type of the notification of ``event``."""
    where = "/".join(p for p in (event.environment, event.group) if p) or "reconciler"
    title = f"{where}: {event.kind.replace('_', ' ')}"
    kind = "success" if event.kind in _SUCCESS else _KINDS[event.severity]
    return title, "\n".join([event.summary, *_lines(event)]), kind


class RouteWorker(EventWorker):
    """Sends the events one route takes to each of its channels."""

    metric = "notification"

    def __init__(
        self,
        route: NotificationRoute,
        channels: Sequence[Channel],
        meta: CursorStore,
        settings: NotificationSettings,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        extra = {"clock": clock} if clock is not None else {}
        super().__init__(
            route.name,
            meta,
            f"notifications.{route.name}.delivered",
            catch_up=settings.catch_up,
            **extra,
        )
        self.route = route
        self.channels = list(channels)
        self.attempts = settings.attempts
        self.backoff = Backoff(settings.backoff, settings.max_backoff, jitter=0.2)

    def wants(self, event: Event) -> bool:
        return matches(self.route, event)

    def handle(self, event: Event) -> None:
        title, body, kind = message(event)
        for channel in self.channels:
            self._deliver(channel, event, title, body, kind)
            if self.stopping.is_set():
                return

    def _deliver(
        self, channel: Channel, event: Event, title: str, body: str, kind: NotifyKind
    ) -> None:
        waits = self.backoff.waits()
        for attempt in range(1, self.attempts + 1):
            if channel.send(title, body, kind):
                self.count(self.name, "sent")
                log.debug("notification_sent", route=self.name, channel=channel.name, id=event.id)
                return
            if attempt == self.attempts or self.stopping.wait(next(waits)):
                break
        self.count(self.name, "failed")
        log.warning(
            "notification_failed",
            route=self.name,
            channel=channel.name,
            event_id=event.id,
            kind=str(event.kind),
            attempts=attempt,
        )
