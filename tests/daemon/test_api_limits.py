"""The API's limits on the real HTTP server (uvicorn through ``report.server``), in process,
in front of a fake daemon: access before the body, body caps on every route, 4xx (never 500)
for hostile sync bodies, the read token, the connection cap and the read deadline.

Raw sockets where the point is what happens on the wire (a huge declared body, idle or slow
connections); waits are on socket events with timeouts, never sleeps.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from reconciler.plan.outcomes import EnvironmentOutcome
from reconciler.record.sqlite import SqliteStateStore
from reconciler.report import api, server
from reconciler.report import status as read_model
from reconciler.report.metrics import Metrics
from reconciler.settings import Settings

WRITE, READ = "write-token-1", "read-token-2"
GITHUB_SECRET = "gh-secret"


class FakeDaemon:
    """The API's ``Control``: records sync requests; ``hold`` keeps ``sync --wait`` waiting."""

    def __init__(self, store: SqliteStateStore) -> None:
        self.ready = threading.Event()
        self.ready.set()
        self.stopping = threading.Event()
        self.hold = threading.Event()
        self.hold.set()
        self.waiting = threading.Semaphore(0)
        self.store = store
        self.metrics = Metrics(self.status)
        self.syncs: list[tuple[str | None, str]] = []

    @property
    def journal(self) -> SqliteStateStore:
        return self.store

    @property
    def alive(self) -> bool:
        return True

    def status(self) -> read_model.StatusView:
        return read_model.build(self.store, None, url="https://git.example/x.git", branch="main")

    def environments(
        self, only: str | None = None, with_hosts: bool = False
    ) -> list[read_model.EnvironmentDetail]:
        return []

    def known(self, environment: str) -> bool:
        return environment == "prod"

    def in_force(self) -> list[str]:
        return ["prod"]

    def request_sync(
        self, environment: str | None = None, *, reason: str, fetch: bool = True
    ) -> float:
        self.syncs.append((environment, reason))
        return time.monotonic()

    def wait_finished(
        self, environments: list[str], since: float, timeout: float
    ) -> dict[str, EnvironmentOutcome | None]:
        self.waiting.release()
        self.hold.wait(timeout)
        return {e: None for e in environments}

    def set_suspended(self, environment: str, suspended: bool) -> None:
        pass


@dataclass
class Api:
    url: str
    host: str
    port: int
    daemon: FakeDaemon

    def connect(self) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=10)


def _serve(tmp_path: Path, limits: server.Limits, **api_settings: object) -> Iterator[Api]:
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "write").write_text(WRITE + "\n")
    (secrets / "read").write_text(READ + "\n")
    (secrets / "github").write_text(GITHUB_SECRET + "\n")
    settings = Settings(
        state_dir=tmp_path / "state",
        api={"token_file": str(secrets / "write"), **api_settings},
        webhooks={"github_secret_file": str(secrets / "github"), "max_payload_bytes": 4096},
    )
    daemon = FakeDaemon(SqliteStateStore.open(tmp_path / "state.db"))
    url, stop = server.serve(api.create_app(daemon, settings), "127.0.0.1", 0, limits)
    host, port = url.removeprefix("http://").rsplit(":", 1)
    try:
        yield Api(url, host, int(port), daemon)
    finally:
        daemon.hold.set()
        stop()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Api]:
    yield from _serve(tmp_path, server.Limits(max_connections=64, read_timeout=5))


def _answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or 10 s pass)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_an_unauthenticated_huge_body_is_refused_before_it_is_sent(served):
    with served.connect() as sock:
        sock.sendall(
            b"POST /api/v1/sync HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 400000000\r\n\r\n"
        )
        answer = sock.recv(65536)  # before a byte of the body was sent
        assert answer.startswith(b"HTTP/1.1 401 "), answer
        assert b"connection: close" in answer.lower()
        sent = 0
        with pytest.raises(OSError):  # the server closed: EPIPE or ECONNRESET
            while sent < 400_000_000:
                sock.sendall(b"x" * 1_048_576)
                sent += 1_048_576
        assert sent < 64 * 1_048_576, f"{sent} bytes went in before the server closed"
    assert served.daemon.syncs == []


def test_every_route_caps_its_body_before_reading_it(served):
    auth = {"Authorization": f"Bearer {WRITE}"}
    with httpx.Client(base_url=served.url, timeout=10) as http:
        declared = http.post("/api/v1/sync", content=b"x" * 70_000, headers=auth)
        assert declared.status_code == 413 and declared.json()["result"] == "too_large"

        def chunks(total: int) -> Iterator[bytes]:
            for _ in range(total // 1024):
                yield b" " * 1024

        streamed = http.post("/api/v1/sync", content=chunks(200_000), headers=auth)
        assert streamed.status_code == 413, streamed.text
        on_a_read = http.request("GET", "/api/v1/status", content=b" " * 70_000)
        assert on_a_read.status_code == 413
        hook = http.post(
            "/api/v1/webhooks/github", content=chunks(8192), headers={"X-GitHub-Event": "push"}
        )
        assert hook.status_code == 413 and hook.json()["result"] == "too_large"
        small = http.post("/api/v1/sync", content=b" " * 100, headers=auth)
        assert small.status_code == 202, small.text
    assert served.daemon.syncs == [(None, "api")]
    scraped = httpx.get(served.url + "/metrics").text
    assert 'reconciler_webhooks_total{provider="github",result="too_large"} 1.0' in scraped


HOSTILE_SYNC = {
    "timeout 1e999": b'{"timeout": 1e999}',
    "timeout -1e999": b'{"timeout": -1e999}',
    "timeout NaN": b'{"timeout": NaN}',
    "timeout Infinity": b'{"timeout": Infinity}',
    "timeout negative": b'{"timeout": -5}',
    "timeout zero": b'{"timeout": 0}',
    "timeout huge": b'{"timeout": 1e300}',
    "timeout 5000 digits": b'{"timeout": ' + b"9" * 5000 + b"}",
    "timeout text": b'{"timeout": "soon"}',
    "environment number": b'{"environment": ' + b"1" * 5000 + b"}",
    "environment list": b'{"environment": ["prod"]}',
    "environment too long": json.dumps({"environment": "e" * 300}).encode(),
    "unknown environment": b'{"environment": "nope"}',
    "wait object": b'{"wait": {"a": 1}}',
    "unknown key": b'{"timout": 5}',
    "deep nesting": b'{"environment": ' + b"[" * 20000 + b"]" * 20000 + b"}",
    "a list": b"[]",
    "a string": b'"sync"',
    "not json": b'{"environment": ',
    "not utf-8": b'{"environment": "\xff"}',
}


@pytest.mark.parametrize("case", sorted(HOSTILE_SYNC))
def test_hostile_sync_bodies_are_4xx_with_a_reason(served, case):
    response = httpx.post(
        served.url + "/api/v1/sync",
        content=HOSTILE_SYNC[case],
        headers={"Authorization": f"Bearer {WRITE}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    assert response.json()["detail"]
    assert served.daemon.syncs == []


def test_a_read_token_closes_reads_but_not_the_probes(tmp_path):
    secrets = tmp_path / "secrets"
    for served in _serve(tmp_path, server.Limits(), read_token_file=str(secrets / "read")):
        with httpx.Client(base_url=served.url, timeout=10) as http:
            for path in ("/api/v1/status", "/metrics", "/openapi.json", "/api/v1/rollouts"):
                assert http.get(path).status_code == 401, path
                for token in (READ, WRITE):
                    ok = http.get(path, headers={"Authorization": f"Bearer {token}"})
                    assert ok.status_code == 200, (path, ok.text)
            assert http.get("/healthz").status_code == 200
            assert http.get("/readyz").status_code == 200
            read_only = {"Authorization": f"Bearer {READ}"}
            assert http.post("/api/v1/sync", headers=read_only).status_code == 401
            assert served.daemon.syncs == []


def _closed_by_server(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def test_idle_connections_beyond_the_cap_make_room_and_healthz_answers(tmp_path):
    for served in _serve(tmp_path, server.Limits(max_connections=32, read_timeout=60)):
        with ExitStack() as stack:
            idle = [stack.enter_context(served.connect()) for _ in range(100)]
            idle[-1].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers, trickling
            health = httpx.get(served.url + "/healthz", timeout=10)
            assert health.status_code == 200
            closed = sum(_closed_by_server(s) for s in idle)
            # the server keeps at most 32 (the newest); every older idle one was closed
            assert closed >= 100 - 32, closed
            assert not _closed_by_server(idle[-1])


def test_a_connection_that_does_not_finish_its_request_is_closed_at_the_read_timeout(tmp_path):
    for served in _serve(tmp_path, server.Limits(read_timeout=1)):
        with served.connect() as headers_only, served.connect() as slow_body:
            headers_only.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            slow_body.sendall(
                b"POST /api/v1/webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                b"\r\n0123456789"
            )
            started = time.monotonic()
            assert _answer(headers_only) == b""
            assert _answer(slow_body) == b""
            assert time.monotonic() - started < 8


def test_when_every_connection_is_busy_a_new_one_gets_503(tmp_path):
    for served in _serve(tmp_path, server.Limits(max_connections=4, read_timeout=60)):
        served.daemon.hold.clear()
        body = b'{"wait": true, "timeout": 60}'
        request = (
            b"POST /api/v1/sync HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + WRITE.encode()
            + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body
        )
        with ExitStack() as stack:
            busy = [stack.enter_context(served.connect()) for _ in range(4)]
            for sock in busy:
                sock.sendall(request)
            for _ in busy:
                assert served.daemon.waiting.acquire(timeout=10)  # all four are being answered
            with served.connect() as extra:
                assert _answer(extra).startswith(b"HTTP/1.1 503 ")
            served.daemon.hold.set()
            for sock in busy:
                assert b" 202 " in sock.recv(65536).split(b"\r\n")[0]


def test_listening_beyond_loopback_is_warned_and_announced_as_loopback(tmp_path):
    from structlog.testing import capture_logs

    from reconciler.service import wiring

    settings = Settings(state_dir=tmp_path / "state", api={"listen": "0.0.0.0", "port": 0})
    daemon = FakeDaemon(SqliteStateStore.open(tmp_path / "state.db"))
    with capture_logs() as logs:
        url, stop = wiring.serve(settings)(daemon)  # type: ignore[arg-type]
    try:
        assert url.startswith("http://127.0.0.1:")  # what daemon.json tells local clients
        assert httpx.get(url + "/healthz", timeout=10).status_code == 200
    finally:
        stop()
    warned = [e for e in logs if e["event"] == "api_listens_beyond_loopback"]
    assert warned and warned[0]["listen"] == "0.0.0.0"
    assert "api.read_token_file" in warned[0]["reads"]
    quiet = Settings(state_dir=tmp_path / "state", api={"port": 0})
    with capture_logs() as logs:
        _, stop = wiring.serve(quiet)(daemon)  # type: ignore[arg-type]
    stop()
    assert not [e for e in logs if e["event"] == "api_listens_beyond_loopback"]


def test_the_connection_cap_leaves_descriptors_for_everything_else():
    from reconciler.service import resources

    assert resources.api_connection_budget(512, 1024) == 512
    assert resources.api_connection_budget(512, 768) == 256
    assert resources.api_connection_budget(512, 256) == 8
    assert resources.api_connection_budget(512, 65536) == 512
