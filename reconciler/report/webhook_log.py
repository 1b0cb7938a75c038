"""The latest webhook deliveries, for the web page's source view and ``/api/v1/status``.

Contract:
* ``WebhookLog(size)`` keeps the newest ``size`` deliveries in memory (a restart forgets them:
  counts over time are ``reconciler_webhooks_total``). ``record(...)`` is cheap and safe from
  any thread; ``views()`` gives them newest first as ``report.status.WebhookView``.
* Every text is hostile (headers and the payload's commit come from whoever can reach the
  port): the delivery id is kept only when it looks like one (letters, digits, ``-``, up to 64
  characters), the commit only when it is hex, the detail is made one terminal-safe line.
  Nothing of a secret is ever seen here (signatures are not recorded).
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Mapping

from reconciler.report.status import WebhookView
from reconciler.support.text import safe

__all__ = ["DELIVERY_HEADERS", "WebhookLog"]

#: The header naming a delivery, per provider (GitHub and Gitea: a GUID; GitLab: a UUID).
DELIVERY_HEADERS = {
    "github": "x-github-delivery",
    "gitlab": "x-gitlab-event-uuid",
    "gitea": "x-gitea-delivery",
}
_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
_SHA = re.compile(r"[0-9a-f]{7,64}")
_DETAIL_LIMIT = 200


class WebhookLog:
    """The newest deliveries, in memory; see the module's contract."""

    def __init__(self, size: int = 20) -> None:
        self._lock = threading.Lock()
        self._items: deque[WebhookView] = deque(maxlen=size)

    def record(
        self,
        provider: str,
        headers: Mapping[str, str],
        result: str,
        detail: str,
        commit: str | None,
        at: float | None = None,
    ) -> None:
        """One delivery as the API answered it (``headers``: lower-case names)."""
        delivery = headers.get(DELIVERY_HEADERS.get(provider, ""), "")
        view = WebhookView(
            at=time.time() if at is None else at,
            provider=provider,
            result=result,
            detail=safe(detail, _DETAIL_LIMIT),
            commit=commit if commit and _SHA.fullmatch(commit) else None,
            delivery=delivery if _ID.fullmatch(delivery) else None,
        )
        with self._lock:
            self._items.append(view)

    def views(self) -> list[WebhookView]:
        with self._lock:
            return list(reversed(self._items))
