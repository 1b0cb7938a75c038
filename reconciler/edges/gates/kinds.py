"""The registry of gate kinds: kind name -> the module that implements it.

This is the only place that dispatches on the kind of a gate. Every kind module has the shape
of :class:`GateKind` (type-checked below):

* ``KIND``: its key in a health check (``http:``, ``tcp:``, ...), one of
  ``reconciler.desired.schema.GATE_KINDS``;
* ``texts(gate)``: the template texts of the gate (for token discovery);
* ``render(gate, values)``: the gate rendered for one target, as a frozen, hashable ``Fields``
  (identical renderings are evaluated once), raising ``MissingPlaceholder``;
* ``attempt(fields, timeout, context)``: one attempt, bounded by ``timeout`` seconds, returning
  an :class:`~reconciler.edges.gates.attempts.AttemptResult` and never raising for a failing
  target (a network error is a failed attempt).

Adding a kind: its model in ``desired.schema`` (and ``GATE_KINDS``), one module here, one line
in ``_MODULES``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

from reconciler.edges.gates import command, http, prometheus, tcp, templates
from reconciler.edges.gates.attempts import AttemptResult, Context

__all__ = ["KINDS", "GateKind", "get"]

G_contra = TypeVar("G_contra", contravariant=True)
F = TypeVar("F", bound=Hashable)


class GateKind(Protocol[G_contra, F]):
    """The shape of a gate kind module (gate model ``G``, rendered fields ``F``)."""

    KIND: str

    def texts(self, gate: G_contra) -> tuple[str, ...]: ...

    def render(self, gate: G_contra, values: templates.Values) -> F: ...

    def attempt(self, fields: F, timeout: float, context: Context) -> AttemptResult: ...


_MODULES: tuple[GateKind[Any, Any], ...] = (
    http,
    tcp,
    command,
    prometheus,
)

KINDS: Mapping[str, GateKind[Any, Any]] = MappingProxyType({m.KIND: m for m in _MODULES})


def get(kind: str) -> GateKind[Any, Any]:
    """The module of ``kind``; ``KeyError`` (naming the known kinds) for an unknown one."""
    try:
        return KINDS[kind]
    except KeyError:
        raise KeyError(f"unknown gate kind {kind!r} (known: {', '.join(KINDS)})") from None
