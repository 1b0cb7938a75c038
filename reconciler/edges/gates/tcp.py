"""The ``tcp`` gate kind: a TCP connection to a host and port succeeds.

Contract: templates are ``host`` (default ``{host}``) and ``port`` (default ``{port}``). An
attempt connects to the rendered host and port within the attempt's timeout and closes the
connection at once. Details users see::

    connect <host>:<port> -> open
    connect <host>:<port> -> Connection refused
    connect <host>:<port> -> invalid port 'x'
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from reconciler.desired.schema import TcpGate
from reconciler.edges.gates import templates
from reconciler.edges.gates.attempts import AttemptResult, Context, describe_error

__all__ = ["KIND", "Fields", "attempt", "render", "texts"]

KIND = "tcp"


@dataclass(frozen=True)
class Fields:
    host: str
    port: str  # rendered text, checked by the attempt


def texts(gate: TcpGate) -> tuple[str, ...]:
    return (gate.host, str(gate.port))


def render(gate: TcpGate, values: templates.Values) -> Fields:
    return Fields(
        templates.render_template(gate.host, values),
        templates.render_template(str(gate.port), values),
    )


def attempt(fields: Fields, timeout: float, context: Context) -> AttemptResult:
    what = f"connect {fields.host}:{fields.port}"
    try:
        port = int(fields.port)
    except ValueError:
        return AttemptResult.failure(f"{what} -> invalid port {fields.port!r}")
    if not 0 < port < 65536:
        return AttemptResult.failure(f"{what} -> invalid port {port}")
    try:
        with socket.create_connection((fields.host, port), timeout=timeout):
            pass
    except OSError as error:
        return AttemptResult.failure(f"{what} -> {describe_error(error)}")
    return AttemptResult.success(f"{what} -> open")
