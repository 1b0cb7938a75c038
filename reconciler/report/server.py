"""Serve the API with uvicorn in a thread of the daemon.

``serve(app, listen, port)`` starts uvicorn, waits (bounded) until it listens, and returns the
URL it really listens on (port 0 picks a free one) and a stop function.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI


def serve(app: FastAPI, listen: str, port: int) -> tuple[str, Callable[[], None]]:
    config = uvicorn.Config(
        app,
        host=listen,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
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
    shown = f"[{host}]" if ":" in host else host

    def stop() -> None:
        server.should_exit = True
        thread.join(10)

    return f"http://{shown}:{bound}", stop
