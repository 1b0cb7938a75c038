"""The pure planning core: desired state + recorded state -> plan. No I/O, no clock.

Contract:
* ``drift(environment, recorded)`` lists every (group, host, app) whose recorded version differs
  from the desired one (``recorded`` maps ``(host, app)`` to a version, or lacks the key).
* ``plan_environment(environment, recorded)`` returns an ``EnvironmentPlan``: groups in
  ``after`` order, each with the hosts needing a change split into cumulative canary steps.
  Hosts are ordered by a stable hash of (environment, group, host), so a group's canary cohort
  is identical on every attempt and every machine; a step of ``pct`` covers
  ``max(1, ceil(pct * N / 100))`` of the group's N hosts, and only its out-of-sync hosts run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reconciler.desired.model import EnvironmentDesired, GroupDesired

Recorded = Mapping[tuple[str, str], str]


@dataclass(frozen=True)
class DriftRow:
    environment: str
    group: str
    host: str
    app: str
    desired: str
    recorded: str | None


@dataclass(frozen=True)
class HostChange:
    host: str
    apps: Mapping[str, tuple[str | None, str]]  # app -> (recorded, desired), drifted apps only


@dataclass(frozen=True)
class Step:
    index: int  # 1-based, counts every canary step, including ones with nothing to do
    percent: int
    cohort_size: int  # hosts covered by this step and all before it
    hosts: tuple[str, ...]  # out-of-sync hosts this step changes


@dataclass(frozen=True)
class GroupPlan:
    group: str
    apps: Mapping[str, str]
    total_hosts: int
    changes: tuple[HostChange, ...]
    steps: tuple[Step, ...]
    after: tuple[str, ...] = ()

    @property
    def in_sync(self) -> bool:
        return not self.changes

    @property
    def hosts_to_change(self) -> tuple[str, ...]:
        return tuple(change.host for change in self.changes)


@dataclass(frozen=True)
class EnvironmentPlan:
    environment: str
    groups: tuple[GroupPlan, ...]

    @property
    def in_sync(self) -> bool:
        return all(group.in_sync for group in self.groups)

    def group(self, name: str) -> GroupPlan:
        return next(g for g in self.groups if g.group == name)


def cohort_key(environment: str, group: str, host: str) -> str:
    """Stable ordering key of a host within its group's canary cohort."""
    return hashlib.sha256(f"{environment}\x00{group}\x00{host}".encode()).hexdigest()


def cohort(environment: str, group: str, hosts: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted(set(hosts), key=lambda h: (cohort_key(environment, group, h), h)))


def step_counts(canary: Sequence[int], total: int) -> tuple[int, ...]:
    """Cumulative host counts per canary step: ``max(1, ceil(pct * total / 100))``."""
    if total <= 0:
        return tuple(0 for _ in canary)
    return tuple(min(total, max(1, -(-pct * total // 100))) for pct in canary)


def drift(environment: EnvironmentDesired, recorded: Recorded) -> tuple[DriftRow, ...]:
    rows = []
    for group in environment.groups.values():
        for host in group.host_names:
            for app, version in group.apps.items():
                current = recorded.get((host, app))
                if current != version:
                    rows.append(DriftRow(environment.name, group.name, host, app, version, current))
    return tuple(rows)


def plan_group(environment: str, group: GroupDesired, recorded: Recorded) -> GroupPlan:
    changes: dict[str, HostChange] = {}
    for host in group.host_names:
        drifted = {
            app: (recorded.get((host, app)), version)
            for app, version in group.apps.items()
            if recorded.get((host, app)) != version
        }
        if drifted:
            changes[host] = HostChange(host, drifted)
    ordered = cohort(environment, group.name, group.host_names)
    steps: list[Step] = []
    start = 0
    for index, (percent, count) in enumerate(
        zip(group.rollout.canary, step_counts(group.rollout.canary, len(ordered)), strict=True),
        start=1,
    ):
        hosts = tuple(h for h in ordered[start:count] if h in changes)
        steps.append(Step(index=index, percent=percent, cohort_size=count, hosts=hosts))
        start = count
    ordered_changes = tuple(changes[h] for h in ordered if h in changes)
    return GroupPlan(
        group=group.name,
        apps=dict(group.apps),
        total_hosts=len(ordered),
        changes=ordered_changes,
        steps=tuple(s for s in steps if s.hosts),
        after=group.after,
    )


def plan_environment(environment: EnvironmentDesired, recorded: Recorded) -> EnvironmentPlan:
    return EnvironmentPlan(
        environment=environment.name,
        groups=tuple(
            plan_group(environment.name, group, recorded) for group in environment.groups.values()
        ),
    )
