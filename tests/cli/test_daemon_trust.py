"""The CLI sends its bearer token only to a daemon it can trust (``report.client``).

``state_dir/daemon.json`` names the daemon's URL. Whoever could write it (or its directory)
could point the CLI, token and all, anywhere: the CLI refuses (exit 2, saying why and how to
fix it) unless the file and the state dir are the user's (or root's), writable by nobody else,
the file is not a link, and the URL is plain http(s) on loopback (or the configured one).
The real CLI runs against a recording HTTP server standing in for a daemon.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reconciler.report.client import DaemonClient, UntrustedDiscovery
from reconciler.settings import Settings
from tests.end_to_end.conftest import RECONCILER

TOKEN = "trust-test-token-9d2"


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server that records every Authorization header it is sent."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def state(tmp_path: Path) -> tuple[Settings, Path]:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    config = tmp_path / "reconciler.yaml"
    config.write_text(
        f"state_dir: {state_dir}\nsource: {{url: {tmp_path / 'nowhere'}}}\n"
        f"api: {{token_file: {token}}}\n"
    )
    return Settings.load(config), config


def announce(settings: Settings, url: str, mode: int = 0o600, pid: int | None = None) -> Path:
    path = settings.state_dir / "daemon.json"
    path.write_text(json.dumps({"pid": pid or os.getpid(), "url": url, "started_at": 0}))
    path.chmod(mode)
    return path


def test_a_private_announcement_of_a_loopback_daemon_is_used(state, recorder):
    settings, _ = state
    url, seen = recorder
    announce(settings, url)
    client = DaemonClient.discover(settings)
    assert client is not None and client.url == url
    assert seen == [f"Bearer {TOKEN}"]  # the /healthz probe


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda s, p: p.chmod(0o620), "writable by group or others"),
        (lambda s, p: p.chmod(0o602), "writable by group or others"),
        (lambda s, p: s.state_dir.chmod(0o777), "the state dir"),
        (lambda s, p: s.state_dir.chmod(0o770), "the state dir"),
    ],
)
def test_a_writable_announcement_is_refused(state, recorder, tamper, message):
    settings, _ = state
    url, seen = recorder
    tamper(settings, announce(settings, url))
    with pytest.raises(UntrustedDiscovery, match=message):
        DaemonClient.discover(settings)
    assert seen == []


def test_a_link_is_refused(state, recorder, tmp_path):
    settings, _ = state
    url, seen = recorder
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"pid": os.getpid(), "url": url}))
    (settings.state_dir / "daemon.json").symlink_to(elsewhere)
    with pytest.raises(UntrustedDiscovery, match="is a link"):
        DaemonClient.discover(settings)
    assert seen == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the file to another user")
def test_another_users_announcement_is_refused(state, recorder):
    settings, _ = state
    url, seen = recorder
    os.chown(announce(settings, url), 65534, 65534)
    with pytest.raises(UntrustedDiscovery, match="owned by uid 65534"):
        DaemonClient.discover(settings)
    assert seen == []


@pytest.mark.parametrize(
    "url",
    [
        "http://203.0.113.7:9480",
        "http://attacker.example:9480",
        "file:///etc/passwd",
        "http://user:pw@127.0.0.1:9480",
        "http://127.0.0.1:9480/redirect/elsewhere",
        "not a url at all",
    ],
)
def test_a_url_that_is_not_a_local_daemon_is_refused(state, url):
    settings, _ = state
    announce(settings, url)
    with pytest.raises(UntrustedDiscovery):
        DaemonClient.discover(settings)


def test_a_stale_announcement_is_ignored(state, recorder):
    settings, _ = state
    url, seen = recorder
    finished = subprocess.Popen(["true"])
    finished.wait()
    announce(settings, url, pid=finished.pid)
    assert DaemonClient.discover(settings) is None
    assert seen == []


def test_the_cli_refuses_with_exit_2_and_sends_nothing(state, recorder):
    settings, config = state
    url, seen = recorder
    announce(settings, url, mode=0o666)
    result = subprocess.run(
        [RECONCILER, "--config", str(config), "status"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "not sending the API token" in result.stderr
    assert "writable by group or others" in result.stderr and "api.url" in result.stderr
    assert seen == []
