"""TCP and command gates: real sockets, real processes."""

from __future__ import annotations

import socket
import sys
import time

from reconciler.desired.model import Host
from reconciler.desired.schema import HealthCheck, HttpGate
from reconciler.edges.gates import GateTarget
from reconciler.edges.gates.checker import HealthChecker
from reconciler.testing.fleet import free_port

from .conftest import check, target


def test_tcp_open_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        [result] = HealthChecker().evaluate([check("tcp")], [target(port)])
    assert result.passed, result.detail
    assert result.detail == f"connect 127.0.0.1:{port} -> open"


def test_tcp_closed_port():
    port = free_port()
    [result] = HealthChecker().evaluate([check("tcp", timeout=0.3)], [target(port)])
    assert not result.passed
    assert result.detail == f"connect 127.0.0.1:{port} -> Connection refused"


def test_tcp_templated_host_and_literal_port():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        gate = check("tcp", host="{host}", port=port)
        [result] = HealthChecker().evaluate([gate], [target(None)])
    assert result.passed, result.detail


def test_missing_port_fails_that_target_only():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        targets = [target(port, name="web1"), target(None, name="web2")]
        results = HealthChecker().evaluate([check("tcp")], targets)
    assert [(r.host, r.passed) for r in results] == [("web1", True), ("web2", False)]
    assert results[1].attempts == 0
    assert results[1].detail == "host web2 has no port for app shop (needed by {port})"


def test_command_exit_zero_and_one():
    ok = check("command", argv=[sys.executable, "-c", "print('fine {app}')"], name="ok")
    bad = check(
        "command",
        argv=[sys.executable, "-c", "import sys; print('broken'); sys.exit(1)"],
        name="bad",
        timeout=0.2,
    )
    results = HealthChecker().evaluate([ok, bad], [target()])
    assert [(r.gate, r.passed) for r in results] == [("ok", True), ("bad", False)]
    assert results[0].detail.endswith("-> exit 0: fine shop")
    assert results[1].detail.endswith("-> exit 1: broken")


def test_command_missing_binary():
    gate = check("command", argv=["/nonexistent/bin/healthcheck-xyz", "{host}"], timeout=0.2)
    [result] = HealthChecker().evaluate([gate], [target()])
    assert not result.passed
    assert "executable not found: /nonexistent/bin/healthcheck-xyz" in result.detail


def test_command_argv_is_not_interpreted_by_a_shell(tmp_path):
    marker = tmp_path / "x"
    version = f"1.0;touch {marker}"  # GateTarget bypasses the version validation on purpose
    argv = [
        sys.executable,
        "-c",
        "import sys; print(repr(sys.argv[1:]))",
        "{version}",
        "$(touch {version})",
        "a b|c",
    ]
    [result] = HealthChecker().evaluate([check("command", argv=argv)], [target(version=version)])
    assert result.passed, result.detail
    expected = [version, f"$(touch {version})", "a b|c"]
    assert repr(expected) in result.detail
    assert not marker.exists()


def test_command_timeout_kills_the_process_group(tmp_path):
    # The child forks a grandchild that keeps running; both must die at the timeout.
    pidfile = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    gate = check("command", argv=[sys.executable, "-c", script], request_timeout=1, timeout=1)
    started = time.monotonic()
    [result] = HealthChecker().evaluate([gate], [target()])
    assert time.monotonic() - started < 5
    assert not result.passed
    assert "timed out after 1s (killed)" in result.detail
    grandchild = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_command_output_is_truncated():
    gate = check("command", argv=[sys.executable, "-c", "print('x' * 100000)"])
    [result] = HealthChecker().evaluate([gate], [target()])
    assert result.passed
    assert len(result.detail) < 1000


def test_programming_error_fails_only_that_check():
    # model_construct skips validation: a gate whose url is not a string breaks rendering.
    broken = HealthCheck.model_construct(
        http=HttpGate.model_construct(
            url=None,
            name="broken",
            interval=0.1,
            timeout=1,
            request_timeout=1,
            successes=1,
            expect_status=200,
            expect_body=None,
        )
    )
    ok = check("command", argv=[sys.executable, "-c", "pass"], name="fine")
    targets = [GateTarget(Host("web1", "127.0.0.1", {}), "shop", "1.0")]
    results = HealthChecker().evaluate([broken, ok], targets)
    assert [(r.gate, r.passed) for r in results] == [("broken", False), ("fine", True)]
    assert results[0].detail.startswith("internal error: TypeError")
