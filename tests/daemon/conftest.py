"""The real daemon as a subprocess (`reconciler run`), on a free port, against a real bare remote
and the local fleet of tests/end_to_end."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from ruamel.yaml import YAML

from reconciler.testing.fleet import free_port, served_version
from tests.end_to_end.conftest import RECONCILER, Setup, big_setup, fleet, setup  # noqa: F401

TOKEN = "test-api-token-5f1c"
SECRETS = {"github": "gh-secret-1", "gitlab": "gl-token-2", "gitea": "gt-secret-3"}


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class RunningDaemon:
    setup: Setup
    config: Path
    url: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    # -- process
    def start(self, preexec: Callable[[], None] | None = None) -> RunningDaemon:
        """Start it (``preexec`` runs in the child first: a umask, resource limits)."""
        self.starts += 1
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [RECONCILER, "run", "--config", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env={**os.environ, "COLUMNS": "250"},
            preexec_fn=preexec,
        )
        log.close()
        wait_for(self.ready, 90, "the daemon to become ready")
        return self

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log_tail()}")
        try:
            return self.http.get(self.url + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 150) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"daemon did not stop in {timeout}s:\n{self.log_tail()}") from None

    # -- logs
    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict):
                out.append(item)
        return out

    # -- HTTP
    def get(self, path: str) -> httpx.Response:
        return self.http.get(self.url + path)

    def post(self, path: str, body: Any = None, token: str | None = TOKEN) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.http.post(self.url + path, json=body, headers=headers, timeout=300)

    def status(self) -> dict[str, Any]:
        return self.get("/api/v1/status").json()

    def rollouts(self) -> list[dict[str, Any]]:
        return self.get("/api/v1/rollouts?limit=100").json()

    def github_push(
        self, ref: str = "refs/heads/main", secret: str | None = None
    ) -> httpx.Response:
        body = json.dumps({"ref": ref, "after": "0" * 40, "repository": {"name": "x"}}).encode()
        signature = hmac.new(
            (secret or SECRETS["github"]).encode(), body, hashlib.sha256
        ).hexdigest()
        return self.webhook(
            "github", body, {"X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={signature}"}
        )

    def webhook(self, provider: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return self.http.post(
            f"{self.url}/api/v1/webhooks/{provider}",
            content=body,
            headers={"Content-Type": "application/json", **headers},
        )

    # -- fleet
    def served(self) -> dict[str, str | None]:
        return {
            host: served_version(self.setup.port(host))
            for hosts in self.setup.groups.values()
            for host in hosts
        }

    def wait_converged(self, web: str, what: str, timeout: float = 240) -> None:
        """Wait until ``converged(web)`` (a liveness bound: 6 hosts converge in ~40 s when the
        machine is quiet); a timeout tells what the daemon logged last."""
        try:
            wait_for(lambda: self.converged(web), timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the daemon's log ends:\n{self.log_tail()}") from None

    def converged(self, web: str, jobs: str = "3.0.0") -> bool:
        served = self.served()
        return (
            all(served[h] == (web if h.startswith("web") else jobs) for h in served)
            and not self.status()["daemon"]["running"]
        )


def write_config(target: Setup, **sections: dict[str, Any]) -> Path:
    secrets_dir = target.config.parent / "secrets"
    secrets_dir.mkdir(exist_ok=True)
    (secrets_dir / "api-token").write_text(TOKEN + "\n")
    for name, value in SECRETS.items():
        (secrets_dir / name).write_text(value + "\n")
    yaml = YAML()
    config = yaml.load(target.config.read_text())
    config["source"].update({"poll_interval": "1h", "watch": False})
    config["api"] = {
        "listen": "127.0.0.1",
        "port": free_port(),
        "token_file": str(secrets_dir / "api-token"),
    }
    config["webhooks"] = {
        "github_secret_file": str(secrets_dir / "github"),
        "gitlab_token_file": str(secrets_dir / "gitlab"),
        "gitea_secret_file": str(secrets_dir / "gitea"),
        "max_payload_bytes": 65536,
    }
    config["daemon"] = {
        "log_format": "json",
        "log_level": "info",
        "resync_interval": 0,
        "shutdown_grace": "60s",
    }
    for key, value in sections.items():
        config.setdefault(key, {}).update(value)
    with target.config.open("w") as handle:
        yaml.dump(config, handle)
    return target.config


@pytest.fixture
def make_daemon(setup: Setup) -> Iterator[Callable[..., RunningDaemon]]:  # noqa: F811
    """Build (not start) a daemon for ``setup``; every one is stopped at teardown."""
    made: list[RunningDaemon] = []

    def make(**sections: dict[str, Any]) -> RunningDaemon:
        config = write_config(setup, **sections)
        port = YAML().load(config.read_text())["api"]["port"]
        daemon = RunningDaemon(
            setup, config, f"http://127.0.0.1:{port}", config.parent / "daemon.log"
        )
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop(timeout=90)


@pytest.fixture
def converged(setup: Setup, make_daemon) -> RunningDaemon:  # noqa: F811
    """A running daemon that converged the fleet to shop 1.0.0 / jobs 3.0.0."""
    setup.commit_versions({"web": {"shop": "1.0.0"}, "worker": {"jobs": "3.0.0"}}, "initial")
    daemon = make_daemon().start()
    daemon.wait_converged("1.0.0", "the initial convergence")
    return daemon
