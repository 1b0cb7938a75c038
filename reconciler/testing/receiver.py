"""A local HTTP receiver that records what it is sent: notifications (apprise ``json://``) and
commit-status API calls, for the tests and the benchmarks.

``Receiver()`` listens on 127.0.0.1 on a free port (``url``), in a thread, until ``close()``.
Every request is kept as a ``Received`` (method, path, headers with lower-case names, body and
its JSON), in arrival order, in ``requests``. What it answers is programmable: ``status``
(a fixed code, or a list used in turn, the last one repeating), ``answer`` (the body) and
``delay`` (seconds to wait before answering: a slow receiver). ``wait_for(predicate, timeout)``
waits, without polling sleeps, until the recorded requests satisfy ``predicate``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Received", "Receiver"]


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body or b"null")


class Receiver:
    def __init__(
        self,
        *,
        status: int | Sequence[int] = 200,
        answer: bytes = b"{}",
        delay: float = 0.0,
    ) -> None:
        self.statuses = [status] if isinstance(status, int) else list(status)
        self.answer = answer
        self.delay = delay
        self.requests: list[Received] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                received = Received(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                with receiver._changed:
                    receiver.requests.append(received)
                    index = len(receiver.requests) - 1
                    receiver._changed.notify_all()
                if receiver.delay:
                    time.sleep(receiver.delay)
                code = receiver.statuses[min(index, len(receiver.statuses) - 1)]
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(receiver.answer)))
                self.end_headers()
                self.wfile.write(receiver.answer)

            do_PUT = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float, what: str = ""
    ) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(list(self.requests)):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out after {timeout}s waiting for {what or 'requests'}; got "
                        f"{[(r.method, r.path) for r in self.requests]}"
                    )
                self._changed.wait(left)
            return list(self.requests)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
