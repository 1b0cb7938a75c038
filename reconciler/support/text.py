"""Text fit for a terminal, whatever a repository, a remote or a daemon put in it.

``safe(text, limit)``: control characters (C0 but newline and tab, DEL, C1) and the Unicode
bidirectional overrides are shown as escapes (``\\x1b``, ``\\u202e``), so nothing printed can
move the cursor, retitle the terminal or reorder what is shown; text longer than ``limit``
characters is cut there and says how much was left out. ``escape_controls(text)`` is the first
half alone (idempotent: its output has nothing left to escape).
"""

from __future__ import annotations

import re

__all__ = ["escape_controls", "safe"]

_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def escape_controls(text: str) -> str:
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def safe(text: str, limit: int) -> str:
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text) - limit} more characters)"
    return escape_controls(text)
