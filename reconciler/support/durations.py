"""Durations as people write them in YAML: ``30s``, ``0.5s``, ``5m``, ``1h30m``, ``250ms``, or
a bare number of seconds. ``Duration`` is the pydantic type (a float of seconds)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

__all__ = ["Duration", "parse_duration"]

_NUMBER = r"(\d+(?:\.\d+)?)"
_DURATION_RE = re.compile(rf"^(?:{_NUMBER}h)?(?:{_NUMBER}m(?!s))?(?:{_NUMBER}s)?(?:(\d+)ms)?$")
_HINT = "must be like 30s, 5m, 1h30m or a number of seconds"


def parse_duration(value: Any) -> float:
    """Seconds of a duration; ``ValueError`` (with a hint) for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"duration {_HINT}")
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"duration {_HINT}")
        if value < 0:
            raise ValueError("duration must not be negative")
        return float(value)
    if isinstance(value, str) and len(value) <= 64:
        match = _DURATION_RE.fullmatch(value.strip())
        if match and any(match.groups()):
            hours, minutes, seconds, millis = (float(g or 0) for g in match.groups())
            return hours * 3600 + minutes * 60 + seconds + millis / 1000
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    raise ValueError(f"duration {shown} {_HINT}")


Duration = Annotated[float, BeforeValidator(parse_duration)]
