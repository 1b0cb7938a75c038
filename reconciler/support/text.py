"""Terminal-safe, length-capped text: ``safe(text, limit)`` for anything a repository, a remote
or a request wrote that we print, log, store or return.

Contract:

* ``safe(text, limit=DEFAULT_LIMIT)`` returns ``str(text)`` with every character that could
  act on a terminal or fake a line of output escaped the way ``repr()`` escapes it: C0/C1
  controls (ESC, CR, LF, TAB, DEL, ...), Unicode format characters (bidi overrides such as
  U+202E, zero-width characters), line/paragraph separators, private-use, surrogate and
  unassigned code points: ``\\x1b``, ``\\n``, ``\\u202e``. Everything else, backslashes
  included, is kept as it is, so ``safe`` is idempotent: ``safe(safe(t)) == safe(t)`` (for the
  same or a larger ``limit``).
* The result has at most ``limit`` characters (``None``: no cap; a limit below ``MIN_LIMIT``
  counts as ``MIN_LIMIT``): a longer text is cut on a character boundary, never inside an
  escape, and ends with ``…[+N chars]`` saying how much was left out (the marker counts).
  Only the first ``limit`` characters are looked at: a 100 MB value costs what 500 chars cost.
* ``escape_controls(text)`` escapes the same characters but keeps newlines and tabs, with no
  cap: for whole blocks a console prints (the CLI's ``SafeConsole``).
* ``clip(text, limit)`` only shortens (same marker), for pieces of a message that are escaped
  later as a whole (``repr(clip(key, 60))``).
* Never raises, whatever the input (a non-``str`` is converted with ``str()``, a failing
  ``__str__`` is replaced by a placeholder).
"""

from __future__ import annotations

import unicodedata

__all__ = ["DEFAULT_LIMIT", "MIN_LIMIT", "clip", "escape_controls", "safe"]

DEFAULT_LIMIT = 500
MIN_LIMIT = 24
# General categories that must never reach a terminal raw.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn"})
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    try:
        return str(value)
    except Exception:  # a hostile __str__ must not turn a report into a crash
        return f"<unprintable {type(value).__name__}>"


def _escape(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    if char.isprintable() or unicodedata.category(char) not in _UNSAFE_CATEGORIES:
        return char
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _marker(dropped: int) -> str:
    return f"…[+{dropped} chars]"


def clip(text: object, limit: int | None = DEFAULT_LIMIT) -> str:
    """``text`` shortened to at most ``limit`` characters (the marker included)."""
    value = _text(text)
    if limit is None or len(value) <= limit:
        return value
    limit = max(limit, MIN_LIMIT)
    keep = max(0, limit - len(_marker(len(value))))
    return value[:keep] + _marker(len(value) - keep)


def safe(text: object, limit: int | None = DEFAULT_LIMIT) -> str:
    """``text`` with terminal-active characters escaped, at most ``limit`` characters long."""
    value = _text(text)
    if limit is not None:
        limit = max(limit, MIN_LIMIT)
    head = value if limit is None else value[: limit + 1]
    escaped = head if head.isprintable() else "".join(_escape(c) for c in head)
    if limit is None or (len(escaped) <= limit and len(head) == len(value)):
        return escaped
    # Cut on a character boundary of the source, never inside an escape sequence.
    out: list[str] = []
    used = 0
    for index, char in enumerate(head):
        piece = _escape(char)
        dropped = len(value) - index
        if used + len(piece) + len(_marker(dropped)) > limit:
            return "".join(out) + _marker(dropped)
        out.append(piece)
        used += len(piece)
    return "".join(out) + _marker(len(value) - len(head))


def escape_controls(text: str) -> str:
    """``text`` with terminal-active characters escaped, newlines and tabs kept, no cap."""
    if text.isprintable():
        return text
    return "".join(c if c in "\n\t" else _escape(c) for c in text)
