"""HTTP gates against real HTTP servers on loopback."""

from __future__ import annotations

import threading
import time

from reconciler.desired.model import Host
from reconciler.edges.gates import GateTarget
from reconciler.edges.gates.checker import HealthChecker
from reconciler.testing.fleet import free_port

from .conftest import check, target


def test_http_pass(http_server):
    server = http_server()
    gate = check("http", url="http://{host}:{port}/healthz", name="health")
    [result] = HealthChecker().evaluate([gate], [target(server.port)])
    assert result.passed and not result.inconclusive
    assert (result.gate, result.kind, result.host, result.app) == ("health", "http", "web1", "shop")
    assert result.attempts == 1
    assert result.detail == f"GET http://127.0.0.1:{server.port}/healthz -> 200"
    assert server.requests == ["/healthz"]
    assert result.as_dict()["passed"] is True


def test_http_500_fails_with_status(http_server):
    server = http_server(default=(500, "boom"))
    [result] = HealthChecker().evaluate(
        [check("http", url="http://{host}:{port}/healthz", timeout=0.5)], [target(server.port)]
    )
    assert not result.passed and not result.inconclusive
    assert f"GET http://127.0.0.1:{server.port}/healthz -> 500" in result.detail
    assert result.attempts >= 2


def test_expect_status_other_than_200(http_server):
    server = http_server(default=(503, "maintenance"))
    gate = check("http", url="http://{host}:{port}/", expect_status=503, expect_body="maint")
    [result] = HealthChecker().evaluate([gate], [target(server.port)])
    assert result.passed, result.detail


def test_expect_body_renders_version(http_server):
    server = http_server(default=(200, '{"version": "2.5.0", "status": "ok"}'))
    gate = check("http", url="http://{host}:{port}/v", expect_body='"version": "{version}"')
    good = HealthChecker().evaluate([gate], [target(server.port, version="2.5.0")])
    bad = HealthChecker().evaluate(
        [
            check(
                "http",
                url="http://{host}:{port}/v",
                expect_body="{version}",
                timeout=0.3,
            )
        ],
        [target(server.port, version="2.4.1")],
    )
    assert good[0].passed, good[0].detail
    assert not bad[0].passed
    assert "body does not contain '2.4.1'" in bad[0].detail
    assert """(got '{"version": "2.5.0", "status": "ok"}')""" in bad[0].detail  # what it saw


def test_consecutive_successes_after_flip(http_server):
    # Unhealthy for the first 2 requests, then healthy.
    server = http_server(script=[(500, "no")] * 2)
    gate = check("http", url="http://{host}:{port}/", successes=3, timeout=10)
    [result] = HealthChecker().evaluate([gate], [target(server.port)])
    assert result.passed
    assert result.attempts == 5
    assert len(server.requests) == 5


def test_failure_resets_consecutive_count(http_server):
    ok, bad = (200, "ok"), (500, "no")
    server = http_server(script=[ok, ok, bad, ok, bad, ok, ok])
    gate = check("http", url="http://{host}:{port}/", successes=3, timeout=10)
    [result] = HealthChecker().evaluate([gate], [target(server.port)])
    assert result.passed
    assert result.attempts == 8  # the first run of 3 starts after the last failure (attempt 5)


def test_too_few_consecutive_successes_before_timeout(http_server):
    server = http_server(script=[(500, "no")] * 1000, default=(200, "ok"))
    # Fake time: attempts at t=0,1,2 then give up (the next one would start at the deadline).
    clock = FakeClock()
    gate = check("http", url="http://{host}:{port}/", interval=1, timeout=3, successes=2)
    server.script[:] = [(500, "no"), (500, "no")]  # then 200: only 1 success before the deadline
    [result] = HealthChecker(clock=clock.now, sleep=clock.sleep).evaluate(
        [gate], [target(server.port)]
    )
    assert not result.passed
    assert result.attempts == 3
    assert "only 1 of 2 consecutive successes before the 3s timeout" in result.detail


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


def test_timeout_with_fake_clock(http_server):
    server = http_server(default=(500, "no"))
    clock = FakeClock()
    gate = check("http", url="http://{host}:{port}/", interval=2, timeout=10)
    [result] = HealthChecker(clock=clock.now, sleep=clock.sleep).evaluate(
        [gate], [target(server.port)]
    )
    assert not result.passed
    assert result.attempts == 5  # t = 0, 2, 4, 6, 8; t = 10 would be at the deadline
    assert clock.sleeps == [2, 2, 2, 2]
    assert result.duration_s == 8


def test_timeout_real_time(http_server):
    server = http_server(default=(500, "no"))
    gate = check("http", url="http://{host}:{port}/", interval=0.1, timeout=1.0)
    started = time.monotonic()
    [result] = HealthChecker().evaluate([gate], [target(server.port)])
    elapsed = time.monotonic() - started
    assert not result.passed
    assert 0.7 <= elapsed < 5
    assert 0.7 <= result.duration_s < 5
    assert result.attempts >= 4


def test_request_timeout_bounds_one_attempt(http_server):
    server = http_server(delay=3)
    gate = check("http", url="http://{host}:{port}/", request_timeout=0.3, timeout=0.5)
    started = time.monotonic()
    [result] = HealthChecker().evaluate([gate], [target(server.port)])
    assert time.monotonic() - started < 2.5
    assert not result.passed
    assert "timed out" in result.detail


def test_connection_refused():
    port = free_port()
    [result] = HealthChecker().evaluate(
        [check("http", url="http://{host}:{port}/", timeout=0.2)], [target(port)]
    )
    assert not result.passed
    assert f"GET http://127.0.0.1:{port}/ -> error: Connection refused" in result.detail


def test_only_http_schemes(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    gate = check("http", url=f"file://{secret}", expect_body="s3cret", timeout=0.1)
    [result] = HealthChecker().evaluate([gate], [target(1)])
    assert not result.passed
    assert "only http and https URLs are allowed" in result.detail


def test_parallel_targets(http_server):
    server = http_server(delay=1.0)
    targets = [
        GateTarget(Host(f"h{i}", "127.0.0.1", {"shop": server.port}), "shop", "1.0.0")
        for i in range(10)
    ]
    gate = check("http", url="http://{host}:{port}/slow?host={name}", request_timeout=5)
    started = time.monotonic()
    results = HealthChecker().evaluate([gate], targets)
    elapsed = time.monotonic() - started
    assert [r.host for r in results] == [f"h{i}" for i in range(10)]
    assert all(r.passed for r in results)
    assert elapsed < 5, f"10 x 1 s checks took {elapsed:.1f} s"
    assert sorted(server.requests) == sorted(f"/slow?host=h{i}" for i in range(10))


def test_identical_renderings_are_evaluated_once(http_server):
    server = http_server()
    host = Host("web1", "127.0.0.1", {"shop": server.port, "cart": server.port})
    targets = [GateTarget(host, "shop", "1.0"), GateTarget(host, "cart", "2.0")]
    same = check("http", url=f"http://{{host}}:{server.port}/healthz", name="same")
    also = check("http", url=f"http://{{host}}:{server.port}/healthz", name="again")
    per_app = check("http", url="http://{host}:{port}/v/{version}", name="per-app")
    results = HealthChecker().evaluate([same, also, per_app], targets)
    assert [(r.gate, r.host, r.app) for r in results] == [
        ("same", "web1", None),
        ("again", "web1", None),
        ("per-app", "web1", "shop"),
        ("per-app", "web1", "cart"),
    ]
    assert all(r.passed for r in results)
    assert sorted(server.requests) == ["/healthz", "/v/1.0", "/v/2.0"]


def test_cancel_stops_promptly(http_server):
    server = http_server(default=(500, "no"))
    cancel = threading.Event()
    gate = check("http", url="http://{host}:{port}/", interval=0.2, timeout=60)
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    [result] = HealthChecker().evaluate([gate], [target(server.port)], cancel=cancel)
    assert time.monotonic() - started < 3
    assert not result.passed
    assert result.detail == "canceled"


def test_already_canceled_runs_nothing(http_server):
    server = http_server()
    cancel = threading.Event()
    cancel.set()
    [result] = HealthChecker().evaluate(
        [check("http", url="http://{host}:{port}/")], [target(server.port)], cancel=cancel
    )
    assert (result.passed, result.attempts, result.detail) == (False, 0, "canceled")
    assert server.requests == []


# ------------------------------------------------------------------------------ httpx client


def test_redirect_to_http_is_followed(http_server):
    other = http_server(default=(200, "moved here"))
    server = http_server(
        script=[(302, "", {"Location": "/elsewhere"}), (301, "", {"Location": other.url("/x")})]
    )
    gate = check("http", url="http://{host}:{port}/healthz", expect_body="moved here")
    [result] = HealthChecker().evaluate([gate], [target(server.port)])
    assert result.passed, result.detail
    assert server.requests == ["/healthz", "/elsewhere"]
    assert other.requests == ["/x"]


def test_redirect_to_another_scheme_is_refused(http_server, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    server = http_server(default=(302, "", {"Location": f"file://{secret}"}))
    gate = check(
        "http", url="http://{host}:{port}/healthz", expect_body="s3cret", timeout=5, interval=10
    )
    [result] = HealthChecker().evaluate([gate], [target(server.port)])
    assert not result.passed
    what = f"GET http://127.0.0.1:{server.port}/healthz"
    assert result.detail.startswith(f"{what} -> 302 redirect to 'file://127.0.0.1/"), result.detail
    assert result.detail.endswith("' refused: only http and https URLs are followed")
    assert server.requests == ["/healthz"]


def test_redirect_loop_ends(http_server):
    server = http_server(default=(302, "", {"Location": "/again"}))
    gate = check("http", url="http://{host}:{port}/", timeout=5, request_timeout=5, interval=10)
    [result] = HealthChecker().evaluate([gate], [target(server.port)])
    assert not result.passed
    assert result.detail.endswith("-> error: more than 10 redirects")
    assert len(server.requests) == 11


def test_inherited_proxy_settings_are_ignored(http_server, monkeypatch):
    proxy = http_server(default=(502, "answered by the proxy"))
    server = http_server()
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.setenv(name, proxy.url(""))
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    gate = check("http", url="http://{host}:{port}/healthz", timeout=5, interval=10)
    [result] = HealthChecker().evaluate([gate], [target(server.port)])
    assert result.passed, result.detail
    assert server.requests == ["/healthz"]
    assert proxy.requests == []


def test_huge_body_is_capped_and_not_read(endless_server):
    gate = check(
        "http",
        url=endless_server.url("/big"),
        expect_body="needle",
        timeout=5,
        request_timeout=5,
        interval=10,
    )
    [result] = HealthChecker().evaluate([gate], [target()])
    assert not result.passed
    assert result.attempts == 1
    assert "-> 200, body does not contain 'needle' (got 'xxxxxxxx" in result.detail
    # The client closed the connection after the cap: the server stopped far short of 1 GiB
    # (what it wrote is the cap plus what the kernel's socket buffers held).
    assert endless_server.finished.wait(10)
    assert endless_server.sent < 64 * 1024 * 1024, endless_server.sent


def test_prometheus_answer_is_capped_too(endless_server):
    gate = check(
        "prometheus",
        url=endless_server.url(),
        query="up",
        min=1,
        timeout=5,
        request_timeout=5,
        interval=10,
    )
    [result] = HealthChecker().evaluate([gate], [target()])
    assert (result.passed, result.attempts) == (False, 1)
    assert result.detail == "query 'up' -> HTTP 200, not a Prometheus API response"
    assert endless_server.finished.wait(10)
    assert endless_server.sent < 64 * 1024 * 1024, endless_server.sent
