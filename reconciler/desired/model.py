"""The resolved desired state: frozen dataclasses after defaults are merged and inventory groups
are resolved to hosts. Pure data; the planning core consumes only these."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.desired.schema import HealthCheck, MaintenanceWindow


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
