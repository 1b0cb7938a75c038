"""Every policy decision of a reconcile, as pure functions. No I/O, no clock (``now`` is passed).

The rollout engine executes; this module decides:

* quarantine: whether a stored quarantine still holds (the desired versions in force are the
  ones that failed) or is stale and must be lifted;
* held groups: out-of-sync groups that must not change now (quarantined, outside their
  maintenance windows, or following a held group);
* readiness: which group may start (``GroupOrder``, on ``graphlib``) and what becomes of a
  group that must not roll out (in sync, held, waiting for a failed group, stopping);
* tolerance: whether a step's failed hosts exceed ``max_failed_hosts``; which hosts a step
  retries (unreachable only) and which it touched (never-reached hosts are not rolled back);
* gate verdicts: whether gate results fail a step, and the reason users read;
* the end of a rollout (succeeded or degraded), rollback batches and the versions to restore;
* the result of the environment, and which records a resumed rollout forgets.

Inputs from other layers (stored quarantines, gate results) are described by small Protocols,
so this package imports nothing but the desired model, the plan and the shared states.
"""

from __future__ import annotations

import graphlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from reconciler.desired import windows
from reconciler.desired.model import EnvironmentDesired, GroupDesired, Rollout
from reconciler.plan.canary import EnvironmentPlan, GroupPlan, Recorded, Step
from reconciler.plan.outcomes import GroupOutcome
from reconciler.states import EnvironmentResult, GroupState, HostStatus, RolloutState

# ------------------------------------------------------------------------------ quarantine


class StoredQuarantine(Protocol):
    """What the policy reads of a stored quarantine (``record.QuarantineRecord`` is one)."""

    @property
    def group(self) -> str: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def rollout_id(self) -> str | None: ...
    @property
    def reason(self) -> str: ...
    @property
    def revert(self) -> str: ...


def fingerprint(apps: Mapping[str, str]) -> str:
    """Identity of a group's desired versions (what a quarantine pins)."""
    return json.dumps(dict(sorted(apps.items())), separators=(",", ":"))


def quarantine_holds(stored: StoredQuarantine, group: GroupDesired) -> bool:
    """A quarantine holds while the group's desired versions are still the ones that failed."""
    return stored.fingerprint == fingerprint(group.apps)


def stale_quarantines(
    environment: EnvironmentDesired, stored: Iterable[StoredQuarantine]
) -> tuple[str, ...]:
    """Groups whose quarantine must be lifted: their desired versions changed (a new commit,
    or the daemon's own revert is in force), or the group is gone from the environment."""
    return tuple(
        q.group
        for q in stored
        if q.group not in environment.groups or not quarantine_holds(q, environment.groups[q.group])
    )


# ------------------------------------------------------------------------------ held groups


def held_groups(
    environment: EnvironmentDesired,
    plan: EnvironmentPlan,
    quarantines: Mapping[str, StoredQuarantine],
    now: datetime,
) -> dict[str, GroupOutcome]:
    """Out-of-sync groups that must not change now, with the outcome to report for each.

    ``quarantines`` maps group -> stored quarantine (stale ones included: they do not hold).
    Groups come in ``after`` order, so a group following a held one is held with it:
    ``outside_window`` when everything it waits for is outside its window, else ``waiting``.
    """
    held: dict[str, GroupOutcome] = {}
    for group_plan in plan.groups:
        if group_plan.in_sync:
            continue
        group = environment.groups[group_plan.group]
        stored = quarantines.get(group.name)
        if stored is not None and quarantine_holds(stored, group):
            held[group.name] = GroupOutcome(
                group.name, GroupState.QUARANTINED, stored.rollout_id, reason=stored.reason
            )
        elif not windows.windows_open(group.maintenance_windows, now):
            opens = windows.next_window(group.maintenance_windows, now)
            when = opens.isoformat() if opens else "never"
            held[group.name] = GroupOutcome(
                group.name,
                GroupState.OUTSIDE_WINDOW,
                reason=f"outside its maintenance windows; the next opens {when}",
            )
        elif deferred := [d for d in group.after if d in held]:
            state = (
                GroupState.OUTSIDE_WINDOW
                if all(held[d].state is GroupState.OUTSIDE_WINDOW for d in deferred)
                else GroupState.WAITING
            )
            held[group.name] = GroupOutcome(
                group.name, state, reason=f"waiting for {', '.join(deferred)}"
            )
    return held


# ------------------------------------------------------------------------------ readiness

#: Outcomes of a group that stop the groups declared ``after`` it.
BLOCKING = frozenset(
    {
        GroupState.FAILED,
        GroupState.ROLLED_BACK,
        GroupState.WAITING,
        GroupState.QUARANTINED,
        GroupState.SUPERSEDED,
        GroupState.INTERRUPTED,
        GroupState.OUTSIDE_WINDOW,
    }
)


class GroupOrder:
    """Which groups may start, on ``graphlib``: a group is ready once every group it follows
    (``after``) has an outcome. Feed outcomes back with ``done``."""

    def __init__(self, plan: EnvironmentPlan) -> None:
        self._plans = {g.group: g for g in plan.groups}
        self._sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter(
            {g.group: [d for d in g.after if d in self._plans] for g in plan.groups}
        )
        self._sorter.prepare()  # raises graphlib.CycleError (validation rejects cycles)

    def ready(self) -> list[GroupPlan]:
        return [self._plans[name] for name in self._sorter.get_ready()]

    def done(self, group: str) -> None:
        self._sorter.done(group)

    @property
    def active(self) -> bool:
        return self._sorter.is_active()


def decide(
    group_plan: GroupPlan,
    outcomes: Mapping[str, GroupOutcome],
    held: Mapping[str, GroupOutcome],
    *,
    stopping: bool,
) -> GroupOutcome | None:
    """The outcome of a ready group that does not roll out, or None when it must roll out."""
    name = group_plan.group
    if name in held:
        return held[name]
    if group_plan.in_sync:
        return GroupOutcome(name, GroupState.IN_SYNC)
    blocked = [d for d in group_plan.after if d in outcomes and outcomes[d].state in BLOCKING]
    if blocked:
        return GroupOutcome(name, GroupState.WAITING, reason=f"waiting for {', '.join(blocked)}")
    if stopping:
        return GroupOutcome(name, GroupState.WAITING, reason="stopped before it started")
    return None


# ------------------------------------------------------------------------------ a step's verdict


def tolerated_failures(rollout: Rollout, step_hosts: int) -> int:
    """How many failed hosts a step of ``step_hosts`` hosts tolerates (a count or ``"10%"``)."""
    if isinstance(rollout.max_failed_hosts, int):
        return rollout.max_failed_hosts
    return int(step_hosts * int(rollout.max_failed_hosts.rstrip("%")) / 100)


def playbook_failure(step: Step, failures: Mapping[str, str], rollout: Rollout) -> str | None:
    """Why the step fails on its playbook run, or None when its failures are tolerated."""
    tolerated = tolerated_failures(rollout, len(step.hosts))
    if len(failures) <= tolerated:
        return None
    return (
        f"step {step.index}: {len(failures)} of {len(step.hosts)} hosts failed the playbook "
        f"(tolerated {tolerated}): "
        + "; ".join(f"{host}: {message}" for host, message in sorted(failures.items()))
    )


class GateOutcome(Protocol):
    """What the policy reads of a gate result (``edges.gates.GateResult`` is one)."""

    @property
    def gate(self) -> str: ...
    @property
    def host(self) -> str | None: ...
    @property
    def passed(self) -> bool: ...
    @property
    def detail(self) -> str: ...


def gate_failure(results: Sequence[GateOutcome]) -> str | None:
    """Why these gate results fail a step (the first failure, and how many more), or None."""
    failed = [r for r in results if not r.passed]
    if not failed:
        return None
    first = failed[0]
    where = f" on {first.host}" if first.host else ""
    more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    return f"gate {first.gate} failed{where}: {first.detail}{more}"


def finished(failures: Mapping[str, str]) -> tuple[RolloutState, GroupState, str]:
    """How a rollout that went through every step ends: succeeded, or degraded when some
    hosts failed within ``max_failed_hosts``."""
    if not failures:
        return RolloutState.SUCCEEDED, GroupState.SUCCEEDED, ""
    return (
        RolloutState.DEGRADED,
        GroupState.DEGRADED,
        "tolerated failures: " + ", ".join(sorted(failures)),
    )


def unreachable(statuses: Mapping[str, HostStatus]) -> tuple[str, ...]:
    """Hosts a step retries: the ones it could not reach (a failed task is never retried)."""
    return tuple(h for h, s in statuses.items() if s is HostStatus.UNREACHABLE)


def reached(hosts: Sequence[str], statuses: Mapping[str, HostStatus]) -> list[str]:
    """The hosts a step touched: a host it never reached runs what it ran before and is
    left out of a rollback."""
    return [h for h in hosts if statuses.get(h) is not HostStatus.UNREACHABLE]


# ------------------------------------------------------------------------------ rollback


@dataclass(frozen=True)
class RollbackBatch:
    """Hosts that go back to the same versions, in one playbook run."""

    versions: Mapping[str, str]
    hosts: tuple[str, ...]


def rollback_batches(
    group: GroupDesired, plan: GroupPlan, touched: Sequence[str]
) -> tuple[tuple[RollbackBatch, ...], tuple[str, ...]]:
    """Batches of hosts sharing their last good versions, and the hosts without any (a first
    deployment: nothing to go back to; they are left as they are)."""
    changes = {c.host: c for c in plan.changes}
    batches: dict[str, tuple[dict[str, str], list[str]]] = {}
    no_previous: list[str] = []
    for host in touched:
        drifted = changes[host].apps if host in changes else {}
        previous = {
            app: (drifted[app][0] if app in drifted else desired)
            for app, desired in group.apps.items()
        }
        known = {app: v for app, v in previous.items() if v is not None}
        if len(known) != len(previous):
            no_previous.append(host)
            continue
        batches.setdefault(fingerprint(known), (known, []))[1].append(host)
    return (
        tuple(RollbackBatch(versions, tuple(hosts)) for versions, hosts in batches.values()),
        tuple(sorted(no_previous)),
    )


def restore_versions(plan: GroupPlan, touched: Sequence[str]) -> dict[str, str]:
    """The last good version of each changed app, as the revert commit writes them."""
    changes = {c.host: c for c in plan.changes}
    return {
        app: before
        for host in touched
        if host in changes
        for app, (before, _desired) in changes[host].apps.items()
        if before is not None
    }


# ------------------------------------------------------------------------------ the environment

_RESULT_ORDER: tuple[tuple[GroupState, EnvironmentResult], ...] = (
    (GroupState.FAILED, EnvironmentResult.FAILED),
    (GroupState.ROLLED_BACK, EnvironmentResult.ROLLED_BACK),
    (GroupState.INTERRUPTED, EnvironmentResult.INTERRUPTED),
    (GroupState.SUPERSEDED, EnvironmentResult.SUPERSEDED),
    (GroupState.QUARANTINED, EnvironmentResult.QUARANTINED),
    (GroupState.WAITING, EnvironmentResult.FAILED),
    (GroupState.OUTSIDE_WINDOW, EnvironmentResult.DEFERRED),
    (GroupState.DEGRADED, EnvironmentResult.DEGRADED),
)


def environment_result(outcomes: Iterable[GroupOutcome], *, applied: bool) -> EnvironmentResult:
    """The environment's result from its groups' outcomes (the worst wins).

    ``applied`` says whether anything ran: when nothing did and nothing is held, the
    environment is ``in_sync`` rather than ``applied``.
    """
    states = {o.state for o in outcomes}
    for state, result in _RESULT_ORDER:
        if state in states:
            return result
    return EnvironmentResult.APPLIED if applied else EnvironmentResult.IN_SYNC


def forgotten_on_resume(
    hosts: Sequence[str],
    apps: Iterable[str],
    group: GroupDesired | None,
    recorded: Recorded,
) -> list[tuple[str, str]]:
    """Records of an interrupted step's hosts to forget so that they are redeployed.

    A host of an interrupted step runs its old or its new version. Where the record equals
    what is desired now (or the group is gone), the planner would skip the host: its record
    is forgotten and the next reconcile deploys it on the gated path. Where they differ the
    host is planned anyway and keeps its last good version for a rollback.
    """
    return [
        (host, app)
        for host in hosts
        for app in apps
        if group is None or group.apps.get(app) == recorded.get((host, app))
    ]
