"""What the store knows about the Git source, under fixed meta keys.

Written by ``source.refresh.DesiredSource`` (only when it records: the daemon and a foreground
``sync``; never the read-only CLI commands), read by the status read model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

LAST_VALID = "source.last_valid_commit"
LAST_INVALID = "source.last_invalid_commit"
PROBLEMS = "source.problems"
ERROR = "source.error"
LAST_FETCH = "source.last_fetch_at"
LAST_SUCCESS = "environment.{environment}.last_success_at"


class Meta(Protocol):
    def get_meta(self, key: str) -> str | None: ...


class MetaWriter(Meta, Protocol):
    def set_meta(self, key: str, value: str) -> None: ...


@dataclass(frozen=True)
class SourceFacts:
    valid_commit: str | None  # the commit in force
    rejected_commit: str | None  # the newest commit, when it was rejected
    problems: tuple[str, ...]  # why it was rejected, ``file:line: message``
    error: str  # why the last fetch failed; "" when it succeeded
    last_fetch_at: float | None

    @property
    def up(self) -> bool:
        return self.last_fetch_at is not None and not self.error


def read(meta: Meta) -> SourceFacts:
    problems = tuple(json.loads(meta.get_meta(PROBLEMS) or "[]"))
    fetched = meta.get_meta(LAST_FETCH)
    return SourceFacts(
        valid_commit=meta.get_meta(LAST_VALID),
        rejected_commit=meta.get_meta(LAST_INVALID) if problems else None,
        problems=problems,
        error=meta.get_meta(ERROR) or "",
        last_fetch_at=float(fetched) if fetched else None,
    )


def last_success(meta: Meta, environment: str) -> float | None:
    """When the environment last reconciled successfully (applied or in sync)."""
    value = meta.get_meta(LAST_SUCCESS.format(environment=environment))
    return float(value) if value else None


def record_success(meta: MetaWriter, environment: str, at: float) -> None:
    meta.set_meta(LAST_SUCCESS.format(environment=environment), str(at))
