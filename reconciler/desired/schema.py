"""Desired-state format v1: the schema of ``environments/<env>.yaml`` exactly as written.

Pydantic models, pure data: unknown keys are errors, and every value that can reach Ansible is
checked against a strict pattern. ``desired.loading`` turns their errors into
``file:line: message`` and resolves them into ``desired.model``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from reconciler.desired import windows
from reconciler.support.durations import Duration
from reconciler.support.text import clip

VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$")
APP_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
GROUP_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
ENVIRONMENT_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
HOST_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,252}$")
# Characters that would be templated by Ansible (Jinja) or interpreted by a shell.
UNSAFE_CHARS_RE = re.compile(r"[{}%$`;|&<>\\'\"\s*?!]")
SHOWN_LIMIT = 80  # characters of a rejected value quoted in its message


def _pattern(regex: re.Pattern[str], what: str, hint: str) -> Any:
    def check(value: str) -> str:
        shown = repr(clip(value, SHOWN_LIMIT))
        if UNSAFE_CHARS_RE.search(value):
            raise ValueError(f"{what} {shown} contains templating or shell characters; {hint}")
        if not regex.fullmatch(value):
            raise ValueError(f"{what} {shown} is not valid; {hint}")
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


def _relative_path(value: str) -> str:
    shown = repr(clip(value, SHOWN_LIMIT))
    if UNSAFE_CHARS_RE.search(value):
        raise ValueError(f"path {shown} contains templating or shell characters")
    if value.startswith("/") or ".." in value.split("/"):
        raise ValueError(f"path {shown} must be relative and stay inside the repository")
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


class RetrySpec(_Strict):
    """Retries of the hosts a step could not reach (a failing task is never retried)."""

    attempts: int = Field(default=3, ge=1, le=10, description="Tries in all, the first one too.")
    backoff: Duration = Field(default=5.0, description="Wait before the second try; doubles.")
    max_backoff: Duration = Field(default=60.0, description="Longest wait between tries.")


class RolloutSpec(_Strict):
    """Rollout settings as written; every field optional so groups can override defaults."""

    canary: tuple[Annotated[int, Field(ge=1, le=100)], ...] | None = Field(
        default=None, description="Cumulative percentages of the group's hosts per step."
    )
    bake: Duration | None = Field(default=None, description="Hold after each healthy step.")
    max_failed_hosts: Annotated[int | str, BeforeValidator(_max_failed)] | None = None
    retries: RetrySpec | None = Field(default=None, description="Retries of unreachable hosts.")

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


_REGEX_MAX = 200


def _regex(value: str) -> str:
    if len(value) > _REGEX_MAX:
        raise ValueError(f"version_regex is longer than {_REGEX_MAX} characters")
    try:
        compiled = re.compile(value)
    except re.error as exc:
        raise ValueError(f"version_regex {value!r} is not a regular expression: {exc}") from exc
    if compiled.groups > 1:
        raise ValueError("version_regex may have at most one group (the version)")
    return value


VersionRegex = Annotated[str, AfterValidator(_regex)]


class _Probe(_Strict):
    version_regex: VersionRegex = Field(
        default=r"[A-Za-z0-9][A-Za-z0-9._+~-]*",
        description="Finds the version in the answer (its group, or the whole match).",
    )
    timeout: Duration = Field(default=10.0, description="Limit of one observation of a host.")


class FactProbe(_Strict):
    name: str = Field(
        default="reconciler_{app}",
        pattern=r"^[A-Za-z0-9_{}]{1,64}$",
        description="Local fact ({app} with '-' as '_'), as the shipped role writes it.",
    )
    key: str = Field(default="version", pattern=r"^[A-Za-z0-9_]{1,64}$")
    fact_path: str | None = Field(
        default=None,
        pattern=r"^/[A-Za-z0-9._/+@-]{0,255}$",
        description="Directory of the fact files, absolute (default: deploy_app_fact_dir).",
    )


class HttpProbe(_Probe):
    url: str = Field(description="URL template: {host} {name} {port} {app} {version}.")


class CommandProbe(_Probe):
    argv: tuple[str, ...] = Field(min_length=1, description="Run on the host, no shell.")


class Observe(_Strict):
    """How a group's hosts report what they run: exactly one of fact, http, command."""

    fact: FactProbe | None = None
    http: HttpProbe | None = None
    command: CommandProbe | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Observe:
        present = [k for k in ("fact", "http", "command") if getattr(self, k) is not None]
        if len(present) != 1:
            raise ValueError(
                "observe needs exactly one of fact, http, command (or 'none'); got "
                + (", ".join(present) or "none")
            )
        return self


ObserveSpec = Observe | Literal["none"]


class SelfHeal(_Strict):
    """Redeploy hosts that run something else than reconciler deployed (opt-in)."""

    enabled: bool = False
    flap_period: Duration = Field(
        default=3600.0,
        description="A host drifting again this soon after a heal is flapping: not healed.",
    )


def _self_heal(value: Any) -> Any:
    return {"enabled": value} if isinstance(value, bool) else value


SelfHealSpec = Annotated[SelfHeal, BeforeValidator(_self_heal)]


class MaintenanceWindow(_Strict):
    """Changes are applied only while a window is open: it opens at each ``cron`` fire time
    (standard 5-field crontab, in ``timezone``) and stays open for ``duration``
    (see ``desired.windows``)."""

    cron: str = Field(description="When the window opens, e.g. '0 2 * * 1-5'.")
    duration: Duration = Field(description="How long it stays open, e.g. 2h.")
    timezone: str = Field(default="UTC", description="IANA zone of the cron expression.")

    @model_validator(mode="after")
    def _valid(self) -> MaintenanceWindow:
        windows.check(self.cron, self.timezone, self.duration)
        return self


class Defaults(_Strict):
    playbook: RepoPath = "deploy-app.yml"
    rollout: RolloutSpec = RolloutSpec()
    health: tuple[HealthCheck, ...] = ()
    timeout: Duration = Field(default=600.0, description="Playbook wall-clock limit per step.")
    maintenance_windows: tuple[MaintenanceWindow, ...] = Field(
        default=(), description="When changes may be applied; none = any time."
    )
    observe: ObserveSpec = Field(
        default_factory=lambda: Observe(fact=FactProbe()),
        description="How hosts report their versions ('none': they are not observed).",
    )
    self_heal: SelfHealSpec = SelfHeal()


class GroupSpec(_Strict):
    apps: dict[AppName, Version] = Field(min_length=1)
    after: tuple[GroupName, ...] = ()
    playbook: RepoPath | None = None
    rollout: RolloutSpec | None = None
    health: tuple[HealthCheck, ...] | None = None
    timeout: Duration | None = None
    maintenance_windows: tuple[MaintenanceWindow, ...] | None = None
    observe: ObserveSpec | None = Field(default=None, description="Overrides defaults.observe.")
    self_heal: SelfHealSpec | None = None


class EnvironmentFile(_Strict):
    """One ``environments/<env>.yaml`` file as written."""

    environment: Annotated[
        str,
        _pattern(ENVIRONMENT_RE, "environment", "names must match ^[a-z][a-z0-9_-]*$"),
    ]
    inventory: RepoPath
    defaults: Defaults = Defaults()
    groups: dict[GroupName, GroupSpec] = Field(min_length=1)
