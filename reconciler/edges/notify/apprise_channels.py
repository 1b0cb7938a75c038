"""Notification channels on apprise: one ``Channel`` per URL of a route's secret file.

Contract:
* ``load(path)`` reads the file (one apprise URL per line; blank lines and ``#`` comments are
  skipped) and returns one channel per URL. A line apprise cannot use raises ``ValueError``
  naming the file and line number, never the line itself (it is a secret).
* ``AppriseChannel.name`` is the URL in apprise's privacy mode, redacted again
  (``support.redaction``): safe to log and to show.
* ``send`` makes one attempt through the plugin (apprise's own timeouts apply: 4 s to connect,
  4 s to read, and its per-service throttling) and returns whether it was delivered; any
  exception in apprise is a failed attempt.
* Apprise's own log records are passed on only from WARNING up, and with every secret part of
  every loaded URL (user info, path segments, query values) masked as ``***``, then redacted.
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.parse
from pathlib import Path

import apprise

from reconciler.edges.notify import NotifyKind
from reconciler.support.redaction import MASK, redact

__all__ = ["AppriseChannel", "load"]

_TYPES = {
    "info": apprise.NotifyType.INFO,
    "success": apprise.NotifyType.SUCCESS,
    "warning": apprise.NotifyType.WARNING,
    "failure": apprise.NotifyType.FAILURE,
}


class _Masking(logging.Filter):
    """Drops apprise's debug and info records, masks the secrets of loaded URLs in the rest."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        found = {url, parts.netloc, parts.password or "", parts.username or ""}
        found |= {p for p in parts.path.split("/")}
        found |= {v for _, v in urllib.parse.parse_qsl(parts.query)}
        with self._lock:
            self._secrets |= {s for s in found if len(s) >= 6}
            alternatives = sorted(self._secrets, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(s) for s in alternatives))

    def mask(self, text: str) -> str:
        pattern = self._pattern
        return redact(pattern.sub(MASK, text) if pattern is not None else text)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return False
        record.msg, record.args = self.mask(record.getMessage()), None
        return True


_MASKING = _Masking()
logging.getLogger("apprise").addFilter(_MASKING)


class AppriseChannel:
    """One apprise URL."""

    def __init__(self, url: str) -> None:
        plugin = apprise.Apprise.instantiate(url, suppress_exceptions=True)
        if plugin is None:
            raise ValueError("not an apprise URL it can use")
        _MASKING.add(url)
        self._plugin = plugin
        self._name = _MASKING.mask(redact(str(plugin.url(privacy=True))))

    @property
    def name(self) -> str:
        return self._name

    def send(self, title: str, body: str, kind: NotifyKind) -> bool:
        try:
            return bool(self._plugin.notify(body=body, title=title, notify_type=_TYPES[kind]))
        except Exception:  # a plugin's bug is a failed delivery, never a crash
            logging.getLogger("apprise").warning("%s: delivery raised", self._name)
            return False


def load(path: Path) -> list[AppriseChannel]:
    """The channels of a route's URL file (see the module docstring)."""
    channels = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        url = line.strip()
        if not url or url.startswith("#"):
            continue
        try:
            channels.append(AppriseChannel(url))
        except ValueError:
            raise ValueError(f"{path}:{number}: not a usable apprise URL") from None
    if not channels:
        raise ValueError(f"{path}: no apprise URL in it")
    return channels
