"""What one attempt of a gate works with and returns; shared by every gate kind module.

* ``AttemptResult``: the outcome of one attempt (a :class:`reconciler.states.Attempt`) and the
  detail users see (the last attempt's detail becomes the ``GateResult.detail``).
* ``Context``: what an attempt may use besides its rendered fields: the cancel event and the
  HTTP session shared by the checker's attempts.
* Text helpers so that every kind words its details the same way.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reconciler.states import Attempt

if TYPE_CHECKING:
    from reconciler.edges.gates.web import Session

__all__ = ["AttemptResult", "Context", "describe_error", "number", "seconds", "short"]


@dataclass(frozen=True)
class AttemptResult:
    outcome: Attempt
    detail: str

    @classmethod
    def success(cls, detail: str) -> AttemptResult:
        return cls(Attempt.SUCCESS, detail)

    @classmethod
    def failure(cls, detail: str) -> AttemptResult:
        return cls(Attempt.FAILURE, detail)

    @classmethod
    def inconclusive(cls, detail: str) -> AttemptResult:
        return cls(Attempt.INCONCLUSIVE, detail)


#: Detail of an evaluation stopped by the cancel event.
CANCELED_DETAIL = "canceled"
CANCELED = AttemptResult(Attempt.CANCELED, CANCELED_DETAIL)


@dataclass(frozen=True)
class Context:
    """What an attempt may use besides its fields."""

    cancel: threading.Event | None
    session: Session


def short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def number(value: float) -> str:
    return f"{value:g}"


def seconds(value: float) -> str:
    return f"{round(value, 2):g}s"


def describe_error(error: BaseException) -> str:
    """A short reason for a network error: ``Connection refused``, ``timed out``, ..."""
    for cause in _chain(error):
        if isinstance(cause, TimeoutError):
            return "timed out"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
    return str(error) or type(error).__name__


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and what caused it (``__cause__``, ``__context__``, a wrapped first arg)."""
    found: list[BaseException] = []
    todo: list[BaseException | None] = [error]
    while todo:
        item = todo.pop(0)
        if item is None or any(item is seen for seen in found):
            continue
        found.append(item)
        wrapped = item.args[0] if item.args and isinstance(item.args[0], BaseException) else None
        todo += [item.__cause__, item.__context__, wrapped]
    return found
