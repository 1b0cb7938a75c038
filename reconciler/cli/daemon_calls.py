"""How commands reach a running daemon: discovery and error handling around its API client."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from reconciler.cli.app import fail
from reconciler.settings import Settings

if TYPE_CHECKING:
    from reconciler.report.client import DaemonClient

T = TypeVar("T")


def discover(settings: Settings) -> DaemonClient | None:
    """A client of the running daemon, or None (then commands use the state store)."""
    from reconciler.report.client import DaemonClient  # httpx: only when a command asks

    try:
        return DaemonClient.discover(settings)
    except (OSError, ValueError) as exc:
        fail(f"configuration error: {exc}", 2)


def daemon_call(call: Callable[[], T]) -> T:
    from reconciler.report.client import DaemonError

    try:
        return call()
    except DaemonError as exc:
        fail(f"daemon: {exc}")
