"""The resolved desired state: frozen dataclasses after defaults are merged and inventory groups
are resolved to hosts. Pure data; the planning core consumes only these."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.desired.schema import HealthCheck, MaintenanceWindow, Observe, SelfHeal


@dataclass(frozen=True)
class Retries:
    """Tries of a step's unreachable hosts: ``attempts`` in all, waits from ``backoff_s``
    doubling up to ``max_backoff_s`` (with jitter)."""

    attempts: int = 3
    backoff_s: float = 5.0
    max_backoff_s: float = 60.0


@dataclass(frozen=True)
class Rollout:
    canary: tuple[int, ...] = (100,)
    bake_s: float = 0.0
    max_failed_hosts: int | str = 0
    retries: Retries = Retries()


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
    observe: Observe | None = None  # None: the group's hosts are not observed
    self_heal: SelfHeal = field(default_factory=SelfHeal)

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
