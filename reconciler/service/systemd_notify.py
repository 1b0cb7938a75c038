"""A tiny sd_notify(3) client: readiness, status and watchdog messages for systemd.

systemd passes ``$NOTIFY_SOCKET`` to a ``Type=notify`` service: a filesystem path of a unix
datagram socket, or ``@name`` for one in the abstract namespace. Each message is one datagram
of newline-separated ``KEY=VALUE`` assignments. Outside systemd (no ``$NOTIFY_SOCKET``) every
function here is a quiet no-op returning ``False``/``None``, so callers need no checks.

The unit uses ``NotifyAccess=main``: only the daemon's own process may send (any thread, not a
child process). With ``WatchdogSec=`` the daemon must call :func:`watchdog` more often than
:func:`watchdog_interval`; sd_watchdog_enabled(3) recommends every half interval.
"""

from __future__ import annotations

import os
import socket

__all__ = [
    "notify",
    "ready",
    "status",
    "stopping",
    "watchdog",
    "watchdog_interval",
]


def _socket_address(raw: str) -> str | None:
    """The address to send to, or None when ``raw`` is not a unix socket we understand."""
    if raw.startswith("@") and len(raw) > 1:
        return "\0" + raw[1:]  # abstract namespace
    if raw.startswith("/"):
        return raw
    return None  # e.g. "vsock:..." (systemd >= 253 in VMs): not supported here


def notify(message: str) -> bool:
    """Send ``message`` (``KEY=VALUE`` lines) to ``$NOTIFY_SOCKET``; True when it was sent."""
    address = _socket_address(os.environ.get("NOTIFY_SOCKET", ""))
    if address is None or not message:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message.encode("utf-8"), address)
    except OSError:
        return False
    return True


def ready() -> bool:
    """Startup finished: systemd considers the service started."""
    return notify("READY=1")


def stopping() -> bool:
    """Shutdown began (send on SIGTERM, before waiting for running steps)."""
    return notify("STOPPING=1")


def watchdog() -> bool:
    """Keep-alive ping for ``WatchdogSec=``."""
    return notify("WATCHDOG=1")


def status(text: str) -> bool:
    """Free-form one-line status shown by ``systemctl status`` (newlines become spaces)."""
    return notify("STATUS=" + " ".join(text.splitlines()))


def watchdog_interval() -> float | None:
    """The watchdog timeout in seconds from ``$WATCHDOG_USEC``, or None when none applies.

    None when the variable is unset or invalid, or when ``$WATCHDOG_PID`` is set to another
    process (the watchdog is then meant for that process, e.g. our parent).
    """
    pid = os.environ.get("WATCHDOG_PID")
    if pid is not None:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 1_000_000
