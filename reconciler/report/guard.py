"""The API's front door: one ASGI middleware deciding who may call what and how big a body may
be, BEFORE any route runs and before a byte of the body is read.

Contract (``Guard``, installed by ``report.api.create_app`` in front of every route):

* Access. ``/healthz`` and ``/readyz`` are open. Webhook receivers (``POST
  /api/v1/webhooks/...``) are open here: they authenticate by their own signatures, which
  cover the body (``edges.webhooks``), so their body is read, capped. Any other method than
  GET/HEAD/OPTIONS needs ``Authorization: Bearer <api.token_file>``: 403 when no token is
  configured, 401 when it is missing or wrong. Reads are open unless a read token is
  configured (``api.read_token_file``); then they need it or the write token (401 otherwise).
  Tokens are compared in constant time.
* Size. A request whose ``Content-Length`` is over the route's limit is answered 413 at once;
  a body without one (chunked) is counted as the route reads it and the read fails with a 413
  (``BodyTooLarge``, an ``HTTPException``, so FastAPI's own body parsing passes it on) as soon
  as the count passes the limit. A malformed ``Content-Length`` is 400.
* Every refusal here carries ``Connection: close``: the unread body is never drained, the
  server closes the connection after the answer. Bodies: ``{"result": ..., "detail": ...}``.
* ``on_too_large(path)`` is called for each 413 (the webhook metrics count them).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["PROBES", "WEBHOOKS_PREFIX", "AccessRule", "BodyTooLarge", "Guard"]

PROBES = frozenset({"/healthz", "/readyz"})
WEBHOOKS_PREFIX = "/api/v1/webhooks/"
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
_CLOSE = {"Connection": "close"}


class BodyTooLarge(HTTPException):
    """The body being read passed the route's limit (413; the connection is closed)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over {limit} bytes", headers=dict(_CLOSE))


@dataclass(frozen=True)
class AccessRule:
    """Who may call what (see the module docstring)."""

    write_token: str | None
    read_token: str | None = None

    def refusal(self, method: str, path: str, authorization: str) -> tuple[int, str] | None:
        """(status, reason) when the request may not go on, else None."""
        if path in PROBES:
            return None
        if method not in _READS:
            if path.startswith(WEBHOOKS_PREFIX):
                return None
            if self.write_token is None:
                return 403, "mutating calls are disabled: configure api.token_file"
            return None if _matches(authorization, self.write_token) else (401, _WRONG)
        if self.read_token is None:
            return None
        if _matches(authorization, self.read_token) or (
            self.write_token is not None and _matches(authorization, self.write_token)
        ):
            return None
        return 401, _WRONG


_WRONG = "missing or wrong bearer token"


def _matches(authorization: str, token: str) -> bool:
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer":
        given = ""
    return hmac.compare_digest(given.strip().encode(), token.encode())


class Guard:
    """ASGI middleware: access and body size, before the route (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        rule: AccessRule,
        max_body: int,
        max_webhook_body: int,
        on_too_large: Callable[[str], None] = lambda _path: None,
    ) -> None:
        self.app = app
        self.rule = rule
        self.max_body = max_body
        self.max_webhook_body = max_webhook_body
        self.on_too_large = on_too_large

    def limit(self, path: str) -> int:
        return self.max_webhook_body if path.startswith(WEBHOOKS_PREFIX) else self.max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = _headers(scope)
        refused = self.rule.refusal(scope["method"], path, headers.get("authorization", ""))
        if refused is not None:
            status, reason = refused
            extra = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
            result = "unauthorized" if status == 401 else "forbidden"
            await _reply(send, status, result, reason, extra)
            return
        limit = self.limit(path)
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _reply(send, 400, "invalid", "malformed Content-Length")
                return
            if int(declared) > limit:
                self.on_too_large(path)
                await _reply(send, 413, "too_large", f"request body over {limit} bytes")
                return
        await self._capped(scope, receive, send, limit)

    async def _capped(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    self.on_too_large(scope["path"])
                    raise BodyTooLarge(limit)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge as exc:  # a route that is not FastAPI's let it through
            if started:
                raise
            await _reply(send, 413, "too_large", str(exc.detail))


def _headers(scope: Scope) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in scope.get("headers", [])
    }


async def _reply(
    send: Send, status: int, result: str, detail: str, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps({"result": result, "detail": detail}).encode()
    raw: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    start: dict[str, Any] = {"type": "http.response.start", "status": status, "headers": raw}
    await send(start)
    await send({"type": "http.response.body", "body": body})
