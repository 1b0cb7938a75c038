"""Three-way drift: desired (Git) vs recorded (what reconciler deployed) vs observed (what the
host reports). Pure: no I/O, no clock (``now`` is passed).

Contract:
* ``classify`` puts one host and app in a ``DriftClass``, first match wins: ``new_host``
  (nothing recorded: never deployed by reconciler), ``pending`` (recorded != desired: the next
  rollout changes it), then, when the group is observed at all: ``out_of_band`` when the app
  is stopped, ``unknown`` (no observation, or the host was unreachable or gave no version:
  never "in sync" on faith), ``out_of_band`` (the host runs another version than reconciler
  deployed), else ``in_sync``. A group whose
  observation is switched off (``observe: none``) is classified on desired vs recorded only.
* ``host_states`` classifies every host and app of an environment, with the observed version,
  when it was seen and the history of its drift (``since``, ``flapping``).
* ``next_marks`` updates that history after an observation or a reconcile: unresolved drift
  keeps its first ``since``; a host healed less than ``flap_period`` ago that drifts out of
  band again is ``flapping``; a host back in sync loses ``since`` and ``flapping``.
* ``to_look_at`` says which hosts a look by time (or on a reconcile) reads: every host that is
  neither ``pending`` nor ``new_host``. Their class does not depend on what they run, and the
  rollout about to deploy them records what they run after their step; ``reconciler observe``
  still looks at every host.
* ``observation_due`` says when an environment's hosts are looked at again by time (over the
  states ``to_look_at`` keeps).
* ``to_heal`` says which out-of-band hosts a self-heal rollout redeploys: only in groups with
  ``self_heal`` on, never flapping hosts, and only when the group has no pending change (the
  change's own rollout deploys those hosts anyway).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from reconciler.desired.model import EnvironmentDesired
from reconciler.plan.canary import Recorded
from reconciler.states import DriftClass, ObservationStatus


class Observation(Protocol):
    """What the planning reads of an observation (``record.ObservedVersion`` is one)."""

    @property
    def version(self) -> str | None: ...
    @property
    def status(self) -> ObservationStatus: ...
    @property
    def observed_at(self) -> float: ...


class Mark(Protocol):
    """What the planning reads of a drift mark (``record.DriftMark`` is one)."""

    @property
    def since(self) -> float | None: ...
    @property
    def healed_at(self) -> float | None: ...
    @property
    def flapping(self) -> bool: ...


@dataclass(frozen=True)
class DriftHistory:
    """The next drift mark of one host and app (the caller stores it)."""

    host: str
    app: str
    since: float | None
    healed_at: float | None
    flapping: bool


@dataclass(frozen=True)
class HostAppState:
    environment: str
    group: str
    host: str
    app: str
    desired: str
    recorded: str | None
    observed: str | None
    observed_at: float | None
    observation: ObservationStatus | None
    drift: DriftClass
    since: float | None = None
    flapping: bool = False


def classify(
    desired: str, recorded: str | None, observation: Observation | None, *, observing: bool
) -> DriftClass:
    if recorded is None:
        return DriftClass.NEW_HOST
    if recorded != desired:
        return DriftClass.PENDING
    if not observing:
        return DriftClass.IN_SYNC
    if observation is not None and observation.status is ObservationStatus.STOPPED:
        return DriftClass.OUT_OF_BAND  # installed, not running: not what was deployed
    if observation is None or observation.status is not ObservationStatus.OK:
        return DriftClass.UNKNOWN
    if observation.version != recorded:
        return DriftClass.OUT_OF_BAND
    return DriftClass.IN_SYNC


def host_states(
    environment: EnvironmentDesired,
    recorded: Recorded,
    observed: Mapping[tuple[str, str], Observation],
    marks: Mapping[tuple[str, str], Mark] | None = None,
    *,
    unobserved: Collection[str] = (),
) -> tuple[HostAppState, ...]:
    """Every host and app of the environment, classified. ``unobserved``: groups whose
    observation is switched off."""
    marks = marks or {}
    states = []
    for group in environment.groups.values():
        observing = group.name not in unobserved
        for host in group.host_names:
            for app, desired in group.apps.items():
                seen = observed.get((host, app))
                mark = marks.get((host, app))
                drift = classify(desired, recorded.get((host, app)), seen, observing=observing)
                states.append(
                    HostAppState(
                        environment.name,
                        group.name,
                        host,
                        app,
                        desired,
                        recorded.get((host, app)),
                        seen.version if seen is not None else None,
                        seen.observed_at if seen is not None else None,
                        seen.status if seen is not None else None,
                        drift,
                        mark.since if mark is not None and drift.drifted else None,
                        bool(mark is not None and mark.flapping and drift.drifted),
                    )
                )
    return tuple(states)


def next_marks(
    states: Iterable[HostAppState],
    marks: Mapping[tuple[str, str], Mark],
    now: float,
    *,
    flap_period: float | Mapping[str, float],
    healed: Collection[tuple[str, str]] = (),
) -> list[DriftHistory]:
    """The drift history after this look at the hosts (see the module docstring);
    ``flap_period`` per group, or one for every group."""
    out = []
    for state in states:
        period = (
            flap_period.get(state.group, 3600.0)
            if isinstance(flap_period, Mapping)
            else flap_period
        )
        key = (state.host, state.app)
        mark = marks.get(key)
        healed_at = now if key in healed else (mark.healed_at if mark is not None else None)
        if not state.drift.drifted:
            unknown = state.drift is DriftClass.UNKNOWN
            since = None
            flapping = bool(unknown and mark is not None and mark.flapping)
        else:
            since = mark.since if mark is not None and mark.since is not None else now
            flapping = bool(mark is not None and mark.flapping)
            if (
                state.drift is DriftClass.OUT_OF_BAND
                and key not in healed
                and healed_at is not None
                and now - healed_at < period
            ):
                flapping = True
        if since is None and healed_at is None and not flapping:
            continue  # nothing to remember
        out.append(DriftHistory(state.host, state.app, since, healed_at, flapping))
    return out


def to_look_at(states: Iterable[HostAppState]) -> tuple[HostAppState, ...]:
    """The states a look by time reads (see the module docstring)."""
    return tuple(s for s in states if s.drift not in (DriftClass.PENDING, DriftClass.NEW_HOST))


def observation_due(
    states: Iterable[HostAppState],
    now: float,
    *,
    interval: float,
    jitter: float,
    environment: str,
) -> bool:
    """Whether ``states`` (of observed groups only) should be looked at again: one has never been
    observed, or the oldest observation is older than ``interval`` plus this environment's
    share of ``jitter`` (a fixed fraction from its name: environments do not all observe at
    once, and one environment observes at a steady pace). ``interval`` 0: never by time."""
    if interval <= 0:
        return False
    observed_at = [s.observed_at for s in states]
    if not observed_at:
        return False
    if any(at is None for at in observed_at):
        return True
    share = int(hashlib.sha256(environment.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return now - min(a for a in observed_at if a is not None) >= interval * (1 + jitter * share)


def to_heal(
    states: Iterable[HostAppState], self_heal: Collection[str]
) -> dict[str, tuple[str, ...]]:
    """Group -> its out-of-band hosts to redeploy (groups in ``self_heal`` only)."""
    by_group: dict[str, list[HostAppState]] = {}
    for state in states:
        by_group.setdefault(state.group, []).append(state)
    heal: dict[str, tuple[str, ...]] = {}
    for group, mine in by_group.items():
        if group not in self_heal:
            continue
        if any(s.drift in (DriftClass.PENDING, DriftClass.NEW_HOST) for s in mine):
            continue
        hosts = dict.fromkeys(
            s.host for s in mine if s.drift is DriftClass.OUT_OF_BAND and not s.flapping
        )
        if hosts:
            heal[group] = tuple(hosts)
    return heal


def heal_recorded(
    recorded: Recorded, states: Iterable[HostAppState], hosts: Collection[str]
) -> dict[tuple[str, str], str]:
    """What the planner should take as running on the hosts to heal: their observed
    versions, so the canary plan lists exactly those hosts as changes."""
    out = dict(recorded)
    for state in states:
        if state.host in hosts and state.drift is DriftClass.OUT_OF_BAND and state.observed:
            out[(state.host, state.app)] = state.observed
    return out
