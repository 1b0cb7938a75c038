"""How the CLI talks to a running daemon (httpx).

A daemon is used when ``api.url`` is configured or ``state_dir/daemon.json`` names a live one;
``DaemonClient.discover`` returns None otherwise (and when it does not answer), and the CLI
falls back to the state store. Answers are parsed into the same read models the daemon
rendered them from (``report.status``, ``report.history``).
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx

from reconciler.report.history import Rollout
from reconciler.report.status import EnvironmentDetail, StatusView
from reconciler.settings import Settings, read_secret


class DaemonError(RuntimeError):
    """The daemon answered with an error (message from its ``detail``)."""


def _discovered_url(settings: Settings) -> str | None:
    if settings.api.url:
        return settings.api.client_url
    try:
        data = json.loads((settings.state_dir / "daemon.json").read_text(encoding="utf-8"))
        os.kill(int(data["pid"]), 0)  # still alive?
        return str(data["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


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
        client = cls(url, read_secret(settings.api.token_file))
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
