"""Read a version over HTTP: the ``observe: {http: ...}`` probe, on the gates' HTTP session.

Contract of ``HttpVersions.read(url, timeout=)``: GET ``url`` with everything ``web.Session``
promises (http/https only, no proxies, redirects only to http/https, at most 64 KiB read, one
deadline); returns ``(answered, body, detail)``: ``answered`` False when nothing answered
(refused, timed out: the host is unreachable for this probe), else the body as text and the
status in ``detail``. Finding the version in the body is the caller's (a regular expression
from the desired state). Never raises for what the network does.
"""

from __future__ import annotations

from reconciler.edges.gates import web

BODY_LIMIT = 64 * 1024


class HttpVersions:
    """Implements ``rollout.ports.VersionReader``; thread-safe, one client for every read."""

    def __init__(self) -> None:
        self._session = web.Session()

    def read(self, url: str, *, timeout: float) -> tuple[bool, str, str]:
        try:
            fetched = self._session.get(url, timeout=timeout, limit=BODY_LIMIT)
        except web.Refused as exc:
            return True, "", f"GET {url} -> {exc}"
        except web.FetchError as exc:
            return False, "", f"GET {url} -> {exc}"
        body = fetched.body.decode("utf-8", "replace")
        if not 200 <= fetched.status < 300:
            return True, "", f"GET {url} -> {fetched.status}"
        return True, body, f"GET {url} -> {fetched.status}"

    def close(self) -> None:
        self._session.close()
