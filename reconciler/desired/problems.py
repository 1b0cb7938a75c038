"""``Problem``: one ``file:line: message`` about a desired-state repository.

Contract: a ``Problem`` holds what was found as it was found (``file`` relative to the
repository root, ``line`` 1-based, ``message``), and renders (``str()``) terminal-safe and
length-capped through ``support.text.safe``: a key with an escape sequence or a
100,000-character value in a hostile commit is shown escaped and cut, never raw or whole, in
``validate``, ``status``, the API, the metrics' logs and the store. Problems sort by file, line,
message. ``capped(problems, limit)`` keeps at most ``limit`` of them, the last saying how many
more there were.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.support.text import safe

__all__ = ["FILE_LIMIT", "MESSAGE_LIMIT", "Problem", "capped"]

FILE_LIMIT = 200  # characters of a file name shown
MESSAGE_LIMIT = 500  # characters of a message shown


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{safe(self.file, FILE_LIMIT)}:{self.line}: {safe(self.message, MESSAGE_LIMIT)}"


def capped(problems: Sequence[Problem], limit: int) -> tuple[Problem, ...]:
    """At most ``limit`` problems: a file with 100,000 unknown keys is not echoed whole."""
    if len(problems) <= limit:
        return tuple(problems)
    shown = problems[: limit - 1]
    last = problems[limit - 1]
    more = len(problems) - len(shown)
    return (*shown, Problem(last.file, last.line, f"... and {more} more problems not shown"))
