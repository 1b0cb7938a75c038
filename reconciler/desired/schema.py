"""Desired-state format v1: the schema of ``environments/<env>.yaml`` and its resolved form.

Two layers live here, both pure data:

* ``EnvironmentFile`` and friends: pydantic models of one environment file exactly as written
  (unknown keys are errors, every value that can reach Ansible is checked against a strict
  pattern). ``reconciler.validation`` turns their errors into ``file:line: message``.
* ``EnvironmentDesired``/``GroupDesired``/``DesiredState``: frozen dataclasses after defaults are
  merged and inventory groups are resolved to hosts. The planning core consumes only these.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$")
APP_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
GROUP_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
ENVIRONMENT_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
HOST_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,252}$")
# Characters that would be templated by Ansible (Jinja) or interpreted by a shell.
UNSAFE_CHARS_RE = re.compile(r"[{}%$`;|&<>\\'\"\s*?!]")
_NUMBER = r"(\d+(?:\.\d+)?)"
_DURATION_RE = re.compile(rf"^(?:{_NUMBER}h)?(?:{_NUMBER}m(?!s))?(?:{_NUMBER}s)?(?:(\d+)ms)?$")


def _pattern(regex: re.Pattern[str], what: str, hint: str) -> Any:
    def check(value: str) -> str:
        if UNSAFE_CHARS_RE.search(value):
            raise ValueError(f"{what} {value!r} contains templating or shell characters; {hint}")
        if not regex.fullmatch(value):
            raise ValueError(f"{what} {value!r} is not valid; {hint}")
        return value

    return AfterValidator(check)


Version = Annotated[
    str,
    _pattern(VERSION_RE, "version", "versions must match ^[A-Za-z0-9][A-Za-z0-9._+~-]*$"),
]
AppName = Annotated[str, _pattern(APP_RE, "app name", "app names must match ^[a-z][a-z0-9_-]*$")]
GroupName = Annotated[
    str,
    _pattern(GROUP_RE, "group name", "inventory group names must match ^[A-Za-z_][A-Za-z0-9_]*$"),
]


def parse_duration(value: Any) -> float:
    """Parse ``30s``, ``0.5s``, ``5m``, ``1h30m``, ``250ms`` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("duration must be like 30s, 5m, 1h30m or a number of seconds")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("duration must not be negative")
        return float(value)
    if isinstance(value, str):
        match = _DURATION_RE.fullmatch(value.strip())
        if match and any(match.groups()):
            hours, minutes, seconds, millis = (float(g or 0) for g in match.groups())
            return hours * 3600 + minutes * 60 + seconds + millis / 1000
    raise ValueError(f"duration {value!r} must be like 30s, 5m, 1h30m or a number of seconds")


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _relative_path(value: str) -> str:
    if UNSAFE_CHARS_RE.search(value):
        raise ValueError(f"path {value!r} contains templating or shell characters")
    if value.startswith("/") or ".." in value.split("/"):
        raise ValueError(f"path {value!r} must be relative and stay inside the repository")
    return value


RepoPath = Annotated[str, AfterValidator(_relative_path)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


def _max_failed(value: Any) -> int | str:
    if isinstance(value, bool):
        raise ValueError("max_failed_hosts must be a count (0) or a percentage ('10%')")
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str) and re.fullmatch(r"(100|[1-9]?[0-9])%", value):
        return value
    raise ValueError("max_failed_hosts must be a count (0) or a percentage ('10%')")


class RolloutSpec(_Strict):
    """Rollout settings as written; every field optional so groups can override defaults."""

    canary: tuple[Annotated[int, Field(ge=1, le=100)], ...] | None = Field(
        default=None, description="Cumulative percentages of the group's hosts per step."
    )
    bake: Duration | None = Field(default=None, description="Hold after each healthy step.")
    max_failed_hosts: Annotated[int | str, BeforeValidator(_max_failed)] | None = None

    @model_validator(mode="after")
    def _canary_increasing(self) -> RolloutSpec:
        if self.canary is not None:
            if not self.canary:
                raise ValueError("canary must list at least one percentage")
            if any(b <= a for a, b in zip(self.canary, self.canary[1:], strict=False)):
                raise ValueError("canary percentages must be strictly increasing")
            if self.canary[-1] != 100:
                raise ValueError("the last canary step must be 100")
        return self


class _Gate(_Strict):
    name: str | None = Field(default=None, description="Label used in history and metrics.")
    interval: Duration = Field(default=2.0, description="Pause between attempts.")
    timeout: Duration = Field(default=60.0, description="Give up (fail) after this long.")
    request_timeout: Duration = Field(default=5.0, description="Limit of one attempt.")
    successes: int = Field(default=1, ge=1, description="Consecutive successes required.")


class HttpGate(_Gate):
    url: str = Field(description="URL template: {host} {port} {app} {version} are replaced.")
    expect_status: int = Field(default=200, ge=100, le=599)
    expect_body: str | None = Field(default=None, description="Substring the body must contain.")


class TcpGate(_Gate):
    host: str = "{host}"
    port: int | str = "{port}"


class CommandGate(_Gate):
    argv: tuple[str, ...] = Field(min_length=1, description="Run on the controller, no shell.")


class PrometheusGate(_Gate):
    url: str
    query: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounded(self) -> PrometheusGate:
        if self.min is None and self.max is None:
            raise ValueError("a prometheus gate needs min, max or both")
        return self


GATE_KINDS = ("http", "tcp", "command", "prometheus")


class HealthCheck(_Strict):
    """One health gate: exactly one of http, tcp, command, prometheus."""

    http: HttpGate | None = None
    tcp: TcpGate | None = None
    command: CommandGate | None = None
    prometheus: PrometheusGate | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> HealthCheck:
        present = [kind for kind in GATE_KINDS if getattr(self, kind) is not None]
        if len(present) != 1:
            raise ValueError(
                f"a health check needs exactly one of {', '.join(GATE_KINDS)}; got "
                f"{', '.join(present) or 'none'}"
            )
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in GATE_KINDS if getattr(self, kind) is not None)

    @property
    def gate(self) -> _Gate:
        return getattr(self, self.kind)

    @property
    def label(self) -> str:
        return self.gate.name or self.kind


class MaintenanceWindow(_Strict):
    """Changes are applied only while a window is open: it opens at each ``cron`` fire time
    (standard 5-field crontab, in ``timezone``) and stays open for ``duration``."""

    cron: str = Field(description="When the window opens, e.g. '0 2 * * 1-5'.")
    duration: Duration = Field(description="How long it stays open, e.g. 2h.")
    timezone: str = Field(default="UTC", description="IANA zone of the cron expression.")

    @model_validator(mode="after")
    def _valid(self) -> MaintenanceWindow:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {self.timezone!r}") from exc
        try:
            CronTrigger.from_crontab(self.cron, timezone=ZoneInfo(self.timezone))
        except ValueError as exc:
            raise ValueError(f"invalid cron expression {self.cron!r}: {exc}") from exc
        if self.duration <= 0:
            raise ValueError("a maintenance window needs a positive duration")
        return self

    def _trigger(self) -> CronTrigger:
        return CronTrigger.from_crontab(self.cron, timezone=ZoneInfo(self.timezone))

    def is_open(self, now: datetime) -> bool:
        """True when a window opened at most ``duration`` before ``now`` (aware datetime)."""
        since = now - timedelta(seconds=self.duration)
        opened = self._trigger().get_next_fire_time(None, since)
        return opened is not None and opened <= now

    def next_open(self, now: datetime) -> datetime | None:
        return self._trigger().get_next_fire_time(None, now)


def windows_open(windows: Sequence[MaintenanceWindow], now: datetime) -> bool:
    """No windows means always open; otherwise any open window allows changes."""
    return not windows or any(w.is_open(now) for w in windows)


def next_window(windows: Sequence[MaintenanceWindow], now: datetime) -> datetime | None:
    starts = [s for w in windows if (s := w.next_open(now)) is not None]
    return min(starts) if starts else None


class Defaults(_Strict):
    playbook: RepoPath = "deploy-app.yml"
    rollout: RolloutSpec = RolloutSpec()
    health: tuple[HealthCheck, ...] = ()
    timeout: Duration = Field(default=600.0, description="Playbook wall-clock limit per step.")
    maintenance_windows: tuple[MaintenanceWindow, ...] = Field(
        default=(), description="When changes may be applied; none = any time."
    )


class GroupSpec(_Strict):
    apps: dict[AppName, Version] = Field(min_length=1)
    after: tuple[GroupName, ...] = ()
    playbook: RepoPath | None = None
    rollout: RolloutSpec | None = None
    health: tuple[HealthCheck, ...] | None = None
    timeout: Duration | None = None
    maintenance_windows: tuple[MaintenanceWindow, ...] | None = None


class EnvironmentFile(_Strict):
    """One ``environments/<env>.yaml`` file as written."""

    environment: Annotated[
        str,
        _pattern(ENVIRONMENT_RE, "environment", "names must match ^[a-z][a-z0-9_-]*$"),
    ]
    inventory: RepoPath
    defaults: Defaults = Defaults()
    groups: dict[GroupName, GroupSpec] = Field(min_length=1)


# ---------------------------------------------------------------- resolved form


@dataclass(frozen=True)
class Rollout:
    canary: tuple[int, ...] = (100,)
    bake_s: float = 0.0
    max_failed_hosts: int | str = 0

    def tolerated_failures(self, step_hosts: int) -> int:
        """How many failed hosts a step of ``step_hosts`` hosts tolerates."""
        if isinstance(self.max_failed_hosts, int):
            return self.max_failed_hosts
        return int(step_hosts * int(self.max_failed_hosts.rstrip("%")) / 100)


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    ports: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class GroupDesired:
    name: str
    apps: Mapping[str, str]
    hosts: tuple[Host, ...]
    after: tuple[str, ...]
    playbook: str
    rollout: Rollout
    health: tuple[HealthCheck, ...]
    timeout_s: float
    maintenance_windows: tuple[MaintenanceWindow, ...] = ()

    @property
    def host_names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hosts)


@dataclass(frozen=True)
class EnvironmentDesired:
    name: str
    source_file: str
    inventory: str
    groups: Mapping[str, GroupDesired]  # in dependency (``after``) order


@dataclass(frozen=True)
class DesiredState:
    environments: Mapping[str, EnvironmentDesired]
    commit: str | None = None


PlaybookSource = Literal["shipped", "repo"]
