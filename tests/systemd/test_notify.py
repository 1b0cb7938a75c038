"""reconciler.systemd_notify against real unix datagram sockets (path and abstract)."""

from __future__ import annotations

import array
import os
import socket
import struct
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.service import systemd_notify

# Guard against a hang if nothing arrives; never part of an assertion.
_RECV_GUARD_S = 10.0


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    sock.settimeout(_RECV_GUARD_S)
    return sock


def _receive(sock: socket.socket) -> tuple[bytes, int]:
    """One datagram and the sender's pid (SCM_CREDENTIALS, as systemd checks NotifyAccess)."""
    creds_size = struct.calcsize("3i")
    data, ancdata, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(creds_size))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid = array.array("i", payload[:creds_size])[0]
            return data, pid
    raise AssertionError("no SCM_CREDENTIALS received")


@pytest.fixture
def path_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket bound to a filesystem path, announced in $NOTIFY_SOCKET."""
    # a short directory: unix socket paths are limited to 107 bytes
    with tempfile.TemporaryDirectory(prefix="sdnotify-") as directory:
        address = str(Path(directory) / "notify")
        with _receiver(address) as sock:
            monkeypatch.setenv("NOTIFY_SOCKET", address)
            yield sock


@pytest.fixture
def abstract_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket in the abstract namespace, announced as ``@name``."""
    name = f"reconciler-test-{uuid.uuid4().hex}"
    with _receiver("\0" + name) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        yield sock


@pytest.mark.parametrize(
    ("send", "expected"),
    [
        (systemd_notify.ready, b"READY=1"),
        (systemd_notify.stopping, b"STOPPING=1"),
        (systemd_notify.watchdog, b"WATCHDOG=1"),
        (lambda: systemd_notify.status("syncing production"), b"STATUS=syncing production"),
        (lambda: systemd_notify.notify("READY=1\nSTATUS=up"), b"READY=1\nSTATUS=up"),
    ],
    ids=["ready", "stopping", "watchdog", "status", "notify"],
)
def test_messages_reach_a_path_socket(
    path_socket: socket.socket, send: Callable[[], bool], expected: bytes
) -> None:
    assert send() is True
    data, pid = _receive(path_socket)
    assert data == expected
    assert pid == os.getpid()  # NotifyAccess=main accepts only the main process


def test_messages_reach_an_abstract_socket(abstract_socket: socket.socket) -> None:
    assert systemd_notify.ready() is True
    assert systemd_notify.watchdog() is True
    assert _receive(abstract_socket)[0] == b"READY=1"
    assert _receive(abstract_socket)[0] == b"WATCHDOG=1"


def test_status_stays_one_assignment(path_socket: socket.socket) -> None:
    assert systemd_notify.status("line one\nline two\r\nREADY=1") is True
    assert _receive(path_socket)[0] == b"STATUS=line one line two READY=1"


def test_status_is_utf8(path_socket: socket.socket) -> None:
    assert systemd_notify.status("état: prêt") is True
    assert _receive(path_socket)[0] == "STATUS=état: prêt".encode()


@pytest.mark.parametrize("value", [None, "", "relative/path", "@", "vsock:2:1234"])
def test_not_under_systemd_is_a_quiet_no_op(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    else:
        monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert systemd_notify.ready() is False
    assert systemd_notify.watchdog() is False
    assert systemd_notify.status("x") is False


def test_a_vanished_socket_returns_false(monkeypatch: pytest.MonkeyPatch) -> None:
    with tempfile.TemporaryDirectory(prefix="sdnotify-") as directory:
        monkeypatch.setenv("NOTIFY_SOCKET", str(Path(directory) / "gone"))
        assert systemd_notify.notify("READY=1") is False


def test_empty_message_is_not_sent(path_socket: socket.socket) -> None:
    assert systemd_notify.notify("") is False
    path_socket.setblocking(False)
    with pytest.raises(BlockingIOError):
        path_socket.recv(4096)


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("60000000", None, 60.0),
        ("1500000", "self", 1.5),
        ("60000000", "other", None),
        ("60000000", "not-a-pid", None),
        ("0", None, None),
        ("-5", None, None),
        ("sixty", None, None),
        ("", None, None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        elif value == "self":
            monkeypatch.setenv(name, str(os.getpid()))
        elif value == "other":
            monkeypatch.setenv(name, str(os.getpid() + 1))
        else:
            monkeypatch.setenv(name, value)
    assert systemd_notify.watchdog_interval() == expected
