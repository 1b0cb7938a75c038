"""Notifications: the public surface (the ``Channel`` Protocol), nothing concrete.

A channel is one destination (one apprise URL: Slack, Teams, Matrix, e-mail, ntfy, a JSON
webhook...). ``reconciler.edges.notify.apprise_channels`` holds the adapter (only
``service.wiring`` imports it); the routing, retries and bookkeeping are the report stage's
(``report.notifications``), which knows channels only through this Protocol.

* ``Channel.name``: the destination with its secrets masked (apprise's privacy mode, then
  ``support.redaction``): the only form of it that may be logged.
* ``Channel.send(title, body, kind)``: one delivery attempt, bounded by the channel's own
  timeouts; True when the destination took it. Never raises for a failing destination.
* ``kind`` is apprise's notification type: ``info``, ``success``, ``warning`` or ``failure``.
"""

from __future__ import annotations

from typing import Literal, Protocol

__all__ = ["Channel", "NotifyKind"]

NotifyKind = Literal["info", "success", "warning", "failure"]


class Channel(Protocol):
    @property
    def name(self) -> str: ...

    def send(self, title: str, body: str, kind: NotifyKind) -> bool: ...
