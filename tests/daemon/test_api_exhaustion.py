"""The real daemon under the resource attacks of issue 11, measured from outside.

* A 400 MB unauthenticated ``POST /api/v1/sync`` is answered 401 before its body is sent and
  the connection is closed: the daemon's peak RSS (``VmHWM``) barely moves. Started with umask
  000 and a soft open-files limit of 1024: the limit is raised to the hard one, and everything
  the daemon created under its state dir is private (0700/0600).
* ~1,100 idle connections, kept open by an attacker thread that reconnects each one the daemon
  closes, with the open-files limit pinned at 1024 (soft and hard): ``/healthz`` answers, a new
  commit is fetched and rolled out, and the daemon never runs out of descriptors.

Synchronised on events (socket readiness, the daemon's answers and logs), not sleeps.
"""

from __future__ import annotations

import os
import resource
import selectors
import socket
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from reconciler.settings import Settings
from tests.daemon.conftest import TOKEN

MIB = 1024 * 1024
BODY = 400_000_000


def _proc_status(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` size field, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} for {pid}")


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _send_huge(host: str, port: int, headers: bytes) -> tuple[bytes, int]:
    """Send ``headers`` announcing a 400 MB body; read the answer before sending any of it,
    then push the body until the daemon closes. Returns (answer, body bytes accepted)."""
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(headers)
        answer = sock.recv(65536)
        sent = 0
        try:
            while sent < BODY:
                sock.sendall(b"x" * MIB)
                sent += MIB
        except OSError:  # EPIPE / ECONNRESET: the daemon closed it
            pass
        return answer, sent


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _private_umask_000_and_1024_files() -> None:
    os.umask(0)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))


def test_a_huge_unauthenticated_body_costs_nothing_and_files_are_private(
    setup, make_daemon, capsys
):
    setup.commit_versions({"web": {"shop": "1.0.0"}, "worker": {"jobs": "3.0.0"}}, "initial")
    daemon = make_daemon().start(preexec=_private_umask_000_and_1024_files)
    daemon.wait_converged("1.0.0", "the initial convergence")
    assert daemon.proc is not None
    pid = daemon.proc.pid
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    started = next(e for e in daemon.events() if e.get("event") == "daemon_started")
    assert started["open_files_limit"] == hard
    assert Path(f"/proc/{pid}/limits").read_text().count(str(hard)) >= 2

    # Everything under the state dir is private, although the daemon's umask was 000.
    state_dir = Settings.load(daemon.config).state_dir
    checked = 0
    for path in [state_dir, *state_dir.rglob("*")]:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue
        if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
            continue  # git's clone of a local path hard-links the remote's own object files

        assert stat.S_IMODE(info.st_mode) & 0o077 == 0, f"{path}: {info.st_mode:o}"
        checked += 1
    for name in ("daemon.json", "daemon.lock", "state.db", "source", "runs"):
        assert (state_dir / name).exists(), name
    assert checked > 20

    host, port = _host_port(daemon.url)
    rss_before, peak_before = _proc_status(pid, "VmRSS"), _proc_status(pid, "VmHWM")
    unauthenticated = (
        b"POST /api/v1/sync HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % BODY
    )
    answer, sent = _send_huge(host, port, unauthenticated)
    assert answer.startswith(b"HTTP/1.1 401 "), answer
    chunked = (
        b"POST /api/v1/sync HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(chunked)
        streamed = 0
        try:
            while streamed < BODY:
                sock.sendall(b"100000\r\n" + b"x" * MIB + b"\r\n")
                streamed += MIB
        except OSError:
            pass
        capped = sock.recv(65536)
    assert capped.startswith(b"HTTP/1.1 413 "), capped
    rss_after, peak_after = _proc_status(pid, "VmRSS"), _proc_status(pid, "VmHWM")
    with capsys.disabled():
        print(
            f"\n400 MB unauthenticated POST: 401 before the body; {sent / MIB:.0f} MiB taken "
            f"before the close. Authenticated chunked: 413 after {streamed / MIB:.0f} MiB sent. "
            f"daemon RSS {rss_before / MIB:.1f} -> {rss_after / MIB:.1f} MiB, "
            f"peak {peak_before / MIB:.1f} -> {peak_after / MIB:.1f} MiB"
        )
    assert sent < 64 * MIB and streamed < 64 * MIB
    assert peak_after - peak_before < 32 * MIB
    assert daemon.get("/readyz").status_code == 200


class Attacker:
    """Keeps ``count`` idle TCP connections open to the daemon, reconnecting each it closes."""

    def __init__(self, host: str, port: int, count: int) -> None:
        self.address = (host, port)
        self.count = count
        self.opened = 0
        self.closed_by_daemon = 0
        self.stop = threading.Event()
        self.full = threading.Event()
        self.errors: list[str] = []
        self._selector = selectors.DefaultSelector()

    def _open(self) -> None:
        sock = socket.create_connection(self.address, timeout=10)
        sock.setblocking(False)
        self._selector.register(sock, selectors.EVENT_READ)
        self.opened += 1

    def run(self) -> None:
        try:
            for _ in range(self.count):
                self._open()
            self.full.set()
            while not self.stop.is_set():
                for key, _ in self._selector.select(timeout=0.5):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    try:
                        data = sock.recv(4096)
                    except OSError:
                        data = b""
                    if not data:  # the daemon closed it: come back at once
                        self._selector.unregister(sock)
                        sock.close()
                        self.closed_by_daemon += 1
                        self._open()
        except Exception as exc:  # reported by the test
            self.errors.append(repr(exc))
            self.full.set()
        finally:
            for key in list(self._selector.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            self._selector.close()


@contextmanager
def _attack(host: str, port: int, count: int) -> Iterator[Attacker]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this process needs >1024 too
    attacker = Attacker(host, port, count)
    thread = threading.Thread(target=attacker.run, name="attacker", daemon=True)
    thread.start()
    try:
        assert attacker.full.wait(60), "could not open the idle connections"
        assert not attacker.errors, attacker.errors
        yield attacker
    finally:
        attacker.stop.set()
        thread.join(30)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _pinned_to_1024_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


@pytest.mark.parametrize("idle", [1100])
def test_idle_connections_do_not_stop_healthz_or_fetches(setup, make_daemon, capsys, idle):
    setup.commit_versions({"web": {"shop": "1.0.0"}, "worker": {"jobs": "3.0.0"}}, "initial")
    daemon = make_daemon().start(preexec=_pinned_to_1024_files)
    daemon.wait_converged("1.0.0", "the initial convergence")
    assert daemon.proc is not None
    pid = daemon.proc.pid
    baseline = _open_fds(pid)
    host, port = _host_port(daemon.url)
    peak = 0
    with _attack(host, port, idle) as attacker:
        health = httpx.get(daemon.url + "/healthz", timeout=10)
        assert health.status_code == 200, health.text
        peak = max(peak, _open_fds(pid))
        sha = setup.commit_versions({"web": {"shop": "1.1.0"}, "worker": {"jobs": "3.0.0"}}, "1.1")
        synced = daemon.post("/api/v1/sync", {"environment": "prod", "wait": True, "timeout": 240})
        assert synced.status_code == 202, synced.text
        assert synced.json()["finished"]["prod"]["result"] == "applied", synced.text
        peak = max(peak, _open_fds(pid))
        source = daemon.status()["source"]
        assert source["up"] and source["valid_commit"] == sha, source
        assert daemon.converged("1.1.0")
        assert httpx.get(daemon.url + "/healthz", timeout=10).status_code == 200
        assert not attacker.errors, attacker.errors
        opened, closed = attacker.opened, attacker.closed_by_daemon
    logged = daemon.log_path.read_text(errors="replace")
    assert "Too many open files" not in logged and "EMFILE" not in logged
    with capsys.disabled():
        print(
            f"\n{idle} idle connections held open (open-files limit 1024/1024): "
            f"{opened} opened by the attacker, {closed} closed by the daemon; "
            f"daemon descriptors {baseline} at rest, at most {peak} under attack; "
            "/healthz 200, commit fetched and rolled out"
        )
    assert peak <= 1024 - 64
    assert closed >= idle - 512
