"""Serve the API with uvicorn in a thread of the daemon, within bounded resources.

``serve(app, listen, port, limits)`` starts uvicorn, waits (bounded) until it listens, and
returns the URL it really listens on (port 0 picks a free one; an unspecified address such as
``0.0.0.0`` is returned as the loopback address of its family, where a local client reaches it)
and a stop function.

Resource contract (``Limits``), so that no client can starve the daemon of file descriptors,
memory or threads:

* At most ``max_connections`` open connections. A new connection beyond that closes the oldest
  connection that is waiting for a request (idle keep-alive, or headers or a body still
  trickling in); when every connection has a request being answered, the new one gets a 503
  and is closed. Idle connections thus never lock out ``/healthz``, and the listening socket's
  backlog (kernel memory, not our descriptors) holds what waits to be accepted. The event loop
  accepts at most ``ACCEPT_BACKLOG`` connections per turn (asyncio accepts up to the listen
  backlog at once, uvicorn's default 2048, before any can be counted): the caller keeps a few
  turns' worth of descriptors spare (``service.resources``).
* A request's headers and body must arrive within ``read_timeout`` of the connection (or of the
  previous response): otherwise the connection is closed (slowloris). Waiting for the answer
  is not bounded here (``sync`` with ``wait`` may take long).
* Idle keep-alive connections are closed after ``keep_alive`` (uvicorn's
  ``timeout_keep_alive``); headers larger than ``MAX_HEADER_BYTES`` are a 400 (h11's
  ``max_incomplete_event_size``); uvicorn's ``limit_concurrency`` answers 503 beyond
  ``max_connections`` requests in flight.
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["ACCEPT_BACKLOG", "MAX_HEADER_BYTES", "Limits", "client_host", "serve"]

MAX_HEADER_BYTES = 16 * 1024
ACCEPT_BACKLOG = 64
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclass(frozen=True)
class Limits:
    max_connections: int = 512
    read_timeout: float = 10.0
    keep_alive: float = 5.0


class _GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with the connection cap and the request read deadline."""

    limits: ClassVar[Limits] = Limits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiting_since = 0.0
        self._deadline: asyncio.TimerHandle | None = None

    # -- the cap ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()
        if len(self.connections) <= self.limits.max_connections:
            return
        victim = self._evictable()
        if victim is None:
            self._drop(_BUSY)
        else:
            victim._drop(b"")

    def _waiting(self) -> int | None:
        """0: idle or receiving headers, 1: receiving a body, None: a request is answered."""
        if self.cycle is not None and not self.cycle.response_complete:
            return 1 if self.conn.their_state is h11.SEND_BODY else None
        return 0 if self.conn.their_state is h11.IDLE else None

    def _evictable(self) -> _GuardedH11 | None:
        candidates = [
            (rank, c._waiting_since, id(c), c)
            for c in self.connections
            if isinstance(c, _GuardedH11) and c is not self
            if (rank := c._waiting()) is not None and not c.transport.is_closing()
        ]
        return min(candidates)[3] if candidates else None

    def _drop(self, farewell: bytes) -> None:
        self.connections.discard(self)
        self._disarm()
        if not self.transport.is_closing():
            if farewell:
                self.transport.write(farewell)
            self.transport.close()

    # -- the read deadline -----------------------------------------------------------------
    def _arm(self) -> None:
        self._disarm()
        self._waiting_since = time.monotonic()
        self._deadline = self.loop.call_later(self.limits.read_timeout, self._read_expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _read_expired(self) -> None:
        self._deadline = None
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
            self._drop(b"")

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def client_host(host: str) -> str:
    """Where a local client reaches a server bound to ``host`` (unspecified -> loopback)."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host
    if address.is_unspecified:
        return "::1" if address.version == 6 else "127.0.0.1"
    return str(address)


def serve(
    app: FastAPI, listen: str, port: int, limits: Limits | None = None
) -> tuple[str, Callable[[], None]]:
    limits = limits or Limits()

    class Protocol(_GuardedH11):
        pass

    Protocol.limits = limits
    config = uvicorn.Config(
        app,
        host=listen,
        port=port,
        http=Protocol,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
        timeout_keep_alive=max(1, round(limits.keep_alive)),
        limit_concurrency=limits.max_connections + 1,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        backlog=ACCEPT_BACKLOG,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"cannot serve the API on {listen}:{port}")
        time.sleep(0.02)
    host, bound = server.servers[0].sockets[0].getsockname()[:2]
    host = client_host(host)
    shown = f"[{host}]" if ":" in host else host

    def stop() -> None:
        server.should_exit = True
        thread.join(10)

    return f"http://{shown}:{bound}", stop
