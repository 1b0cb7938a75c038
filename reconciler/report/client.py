"""How the CLI talks to a running daemon (httpx).

A daemon is used when ``api.url`` is configured or ``state_dir/daemon.json`` names a live one;
``DaemonClient.discover`` returns None otherwise (and when it does not answer), and the CLI
falls back to the state store. Answers are parsed into the same read models the daemon
rendered them from (``report.status``, ``report.history``).

The bearer token (``api.token_file``, else ``api.read_token_file``) is sent to the configured
``api.url`` as is. A URL found in ``daemon.json`` is used only when that file and the state dir
are owned by the running user (or root), are writable by nobody else, ``daemon.json`` is a
regular file (not a link), and the URL is plain ``http(s)://host:port`` with a loopback host
(or exactly the URL the configuration gives, ``api.client_url``). Otherwise ``discover`` raises
``UntrustedDiscovery`` (a ``ValueError``): the CLI refuses, exit 2, rather than hand the token
to whoever could write that file, or silently read the store instead.
"""

from __future__ import annotations

import ipaddress
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from reconciler.report.events import EventPage, EventView
from reconciler.report.history import Rollout
from reconciler.report.status import EnvironmentDetail, StatusView
from reconciler.settings import Settings, read_secret


class DaemonError(RuntimeError):
    """The daemon answered with an error (message from its ``detail``)."""


class UntrustedDiscovery(ValueError):
    """``daemon.json`` (or its directory) could have been written by someone else."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address, bracketed or not, or ``localhost``) is loopback only."""
    bare = host.strip("[]").lower()
    if bare == "localhost":
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def _check_private(path: Path, info: os.stat_result, kind: str) -> None:
    fix = f"chown {os.geteuid()} and chmod go-w {path}, or set api.url"
    if info.st_uid not in (os.geteuid(), 0):
        raise UntrustedDiscovery(
            f"not sending the API token: {kind} {path} is owned by uid {info.st_uid}, "
            f"not by you (uid {os.geteuid()}) or root ({fix})"
        )
    if info.st_mode & 0o022:
        raise UntrustedDiscovery(
            f"not sending the API token: {kind} {path} is writable by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}; {fix})"
        )


def _check_url(url: str, path: Path, configured: str) -> str:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise UntrustedDiscovery(f"{path}: not a URL: {url[:200]!r}") from exc
    plain = (
        parsed.scheme in ("http", "https")
        and not parsed.userinfo
        and parsed.path in ("", "/")
        and not parsed.query
    )
    if url.rstrip("/") == configured or (plain and is_loopback(parsed.host)):
        return url
    raise UntrustedDiscovery(
        f"not sending the API token to {url[:200]!r} named in {path}: a daemon announces "
        "an http(s) URL on loopback there (set api.url to use another address)"
    )


def _discovered_url(settings: Settings) -> str | None:
    """``api.url``, else the checked URL of a live daemon in ``daemon.json``, else None."""
    if settings.api.url:
        return settings.api.client_url
    path = settings.state_dir / "daemon.json"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:  # a link (ELOOP), or not readable by us
        if path.is_symlink():
            raise UntrustedDiscovery(f"not sending the API token: {path} is a link") from exc
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise UntrustedDiscovery(f"not sending the API token: {path} is not a file")
        _check_private(settings.state_dir, settings.state_dir.stat(), "the state dir")
        _check_private(path, info, "the daemon file")
        raw = handle.read(64 * 1024)
    try:
        data = json.loads(raw)
        pid, url = int(data["pid"]), data["url"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(url, str) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)  # still alive?
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's process (e.g. root reading the service's state dir)
    return _check_url(url, path, settings.api.client_url)


class DaemonClient:
    def __init__(self, url: str, token: str | None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    @classmethod
    def discover(cls, settings: Settings) -> DaemonClient | None:
        url = _discovered_url(settings)
        if url is None:
            return None
        token = read_secret(settings.api.token_file) or read_secret(settings.api.read_token_file)
        client = cls(url, token)
        try:
            client._http.get("/healthz", timeout=3.0)
        except httpx.HTTPError:
            return None
        return client

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise DaemonError(f"{self.url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise DaemonError(f"{method} {path}: {response.status_code} {detail}")
        return response.json()

    def status(self) -> StatusView:
        return StatusView.model_validate(self._call("GET", "/api/v1/status"))

    def rollouts(self, environment: str | None, limit: int) -> list[Rollout]:
        params: dict[str, Any] = {"limit": limit}
        if environment:
            params["environment"] = environment
        return [
            Rollout.model_validate(r) for r in self._call("GET", "/api/v1/rollouts", params=params)
        ]

    def rollout(self, rollout_id: str) -> Rollout:
        return Rollout.model_validate(self._call("GET", f"/api/v1/rollouts/{rollout_id}"))

    def sync(self, environment: str | None, timeout: float) -> dict[str, Any]:
        body = {"environment": environment, "wait": True, "timeout": timeout}
        return self._call("POST", "/api/v1/sync", json=body, timeout=timeout + 30)

    def observe(self, environment: str | None, timeout: float) -> list[EnvironmentDetail]:
        body = {"environment": environment, "wait": True, "timeout": timeout}
        answer = self._call("POST", "/api/v1/observe", json=body, timeout=timeout + 30)
        return [EnvironmentDetail.model_validate(e) for e in answer]

    def set_suspended(self, environment: str, suspended: bool) -> dict[str, Any]:
        action = "suspend" if suspended else "resume"
        return self._call("POST", f"/api/v1/environments/{environment}/{action}")

    def events(self, filters: dict[str, Any]) -> EventPage:
        """``GET /api/v1/events`` with these query parameters (lists repeat the key)."""
        return EventPage.model_validate(self._call("GET", "/api/v1/events", params=filters))

    def stream(self, filters: dict[str, Any], after: int | None) -> Iterator[EventView | None]:
        """The event stream: each event, None for a heartbeat; ends when the daemon ends it
        (shutdown) and raises ``DaemonError`` when the connection fails."""
        params = {**filters, **({"after": after} if after is not None else {})}
        timeout = httpx.Timeout(10.0, read=None)
        try:
            with self._http.stream(
                "GET", "/api/v1/events/stream", params=params, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise DaemonError(f"GET /api/v1/events/stream: {response.status_code}")
                data: list[str] = []
                kind = ""
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith(":"):
                        yield None
                    elif not line:
                        if kind == "end":
                            return
                        if data:
                            yield EventView.model_validate_json("".join(data))
                        data, kind = [], ""
        except httpx.HTTPError as exc:
            raise DaemonError(f"{self.url}: {exc}") from exc
