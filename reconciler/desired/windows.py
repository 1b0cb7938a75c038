"""Maintenance windows: when a group may be changed. Pure (the caller passes ``now``).

A window opens at each fire time of a standard 5-field crontab expression (in its IANA
timezone, daylight-saving changes included; cronsim does the calendar arithmetic) and stays
open for ``duration`` seconds. No windows at all means any time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from reconciler.support.text import clip

__all__ = ["WindowSpec", "check", "is_open", "next_open", "next_window", "windows_open"]


class WindowSpec(Protocol):
    """What a window needs: ``desired.schema.MaintenanceWindow`` is one."""

    @property
    def cron(self) -> str: ...
    @property
    def duration(self) -> float: ...
    @property
    def timezone(self) -> str: ...


def check(cron: str, timezone: str, duration: float) -> None:
    """``ValueError`` with a readable reason when the window cannot be used."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {clip(timezone, 80)!r}") from exc
    try:
        CronSim(cron, datetime.now(zone))
    except (CronSimError, ValueError) as exc:
        raise ValueError(f"invalid cron expression {clip(cron, 80)!r}: {exc}") from exc
    if duration <= 0:
        raise ValueError("a maintenance window needs a positive duration")


def is_open(window: WindowSpec, now: datetime) -> bool:
    """True when the window opened at most ``duration`` before ``now`` (an aware datetime)."""
    local = now.astimezone(ZoneInfo(window.timezone))
    # The newest fire time at or before now (reverse iteration starts after `local`).
    opened = next(CronSim(window.cron, local + timedelta(microseconds=1), reverse=True), None)
    return opened is not None and local - opened < timedelta(seconds=window.duration)


def next_open(window: WindowSpec, now: datetime) -> datetime | None:
    local = now.astimezone(ZoneInfo(window.timezone))
    return next(CronSim(window.cron, local), None)


def windows_open(windows: Sequence[WindowSpec], now: datetime) -> bool:
    """No windows means always open; otherwise any open window allows changes."""
    return not windows or any(is_open(w, now) for w in windows)


def next_window(windows: Sequence[WindowSpec], now: datetime) -> datetime | None:
    starts = [s for w in windows if (s := next_open(w, now)) is not None]
    return min(starts) if starts else None
