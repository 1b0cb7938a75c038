"""What hosts really run, for one environment: observe when due, classify, remember, heal.

Contract:
* ``look(environment, snapshot, force=)``: hosts gone from the inventory lose their records
  (deployed, observed, drift); the hosts of observed groups are looked at
  (``rollout.observation``) when ``force``d (``reconciler observe``: every host) or when due
  (``plan.observed.observation_due``: never observed, or older than the interval; then every
  host ``plan.observed.to_look_at`` keeps: not the pending or new ones); every host
  and app is classified (``plan.observed.host_states``) and the drift history (since,
  flapping) is stored. Returns the classified states.
* ``heal(...)``: in groups with ``self_heal`` on, with no pending change, not held (suspended,
  outside a maintenance window, quarantined), out-of-band hosts that are not flapping are
  redeployed to their recorded versions through the normal gated path, as a rollout of trigger
  ``self_heal`` (history says why). Each healed host's history says when, so one that drifts
  again within the group's ``flap_period`` is flapping and left alone until it is seen in sync
  again (or an operator redeploys it).
* Never raises for what hosts do; an observation that fails marks hosts, it stops nothing.
* Events: ``drift_detected`` per group when hosts newly run another version than recorded
  (out of band; not for a pending commit), ``drift_healed`` when a self-heal put them back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

import structlog

from reconciler.desired.model import EnvironmentDesired
from reconciler.plan import canary
from reconciler.plan import observed as drift
from reconciler.plan.outcomes import GroupOutcome
from reconciler.record import DriftMark
from reconciler.rollout.group import GroupRollout
from reconciler.rollout.playbooks import Deployment
from reconciler.rollout.ports import Adapters, StopRequest
from reconciler.settings import Settings
from reconciler.source.refresh import DesiredSnapshot
from reconciler.states import DriftClass, EventKind, GroupState, RolloutTrigger

log = structlog.get_logger(__name__)


class HostTruth:
    def __init__(self, settings: Settings, adapters: Callable[[], Adapters]) -> None:
        self.settings = settings
        self._adapters = adapters  # read at each use: the daemon swaps in its reporter

    @property
    def a(self) -> Adapters:
        return self._adapters()

    def look(
        self,
        environment: EnvironmentDesired,
        snapshot: DesiredSnapshot,
        *,
        force: bool = False,
        cancel: threading.Event | None = None,
    ) -> tuple[drift.HostAppState, ...]:
        store, name = self.a.store, environment.name
        in_inventory = {h for g in environment.groups.values() for h in g.host_names}
        gone = sorted({h for h, _ in store.recorded_versions(name)} - in_inventory)
        gone += sorted({h for h, _ in store.observed(name)} - in_inventory - set(gone))
        if gone:
            store.forget_hosts(name, gone)
            log.info("hosts_forgotten", hosts=gone, reason="no longer in the inventory")
        unobserved = {g.name for g in environment.groups.values() if g.observe is None}
        states = self._classify(environment, unobserved)
        watched = [s for s in states if s.group not in unobserved]
        if not force:  # pending hosts: their rollout tells what they run (plan.observed)
            watched = list(drift.to_look_at(watched))
        due = force or drift.observation_due(
            watched,
            self.a.clock(),
            interval=self.settings.observation.interval,
            jitter=self.settings.observation.jitter,
            environment=name,
        )
        if due and self.a.observer is not None and snapshot.root is not None:
            looked = {s.host for s in watched}
            for group in environment.groups.values():
                hosts = [h for h in group.hosts if h.name in looked]
                if group.name in unobserved or not hosts:
                    continue
                try:
                    found = self.a.observer.observe(
                        environment, group, hosts, snapshot.root, cancel=cancel
                    )
                    store.record_observed(found)
                except Exception:  # looking must never stop a reconcile
                    log.exception("observation_failed", group=group.name)
            states = self._classify(environment, unobserved)
        self._detected(environment, states, store.drift_marks(name))
        self._remember(environment, states)
        return self._classify(environment, unobserved)  # with the history just written

    def _detected(
        self,
        environment: EnvironmentDesired,
        states: tuple[drift.HostAppState, ...],
        marks: Mapping[tuple[str, str], DriftMark],
    ) -> None:
        """``drift_detected`` for out-of-band hosts that were not drifting at the last look."""
        new: dict[str, list[drift.HostAppState]] = {}
        for s in states:
            mark = marks.get((s.host, s.app))
            if s.drift is DriftClass.OUT_OF_BAND and (mark is None or mark.since is None):
                new.setdefault(s.group, []).append(s)
        for group, found in new.items():
            shown = ", ".join(f"{s.host} runs {s.app} {s.observed or 'nothing'}" for s in found[:5])
            more = f" (+{len(found) - 5} more)" if len(found) > 5 else ""
            self.a.events.emit(
                EventKind.DRIFT_DETECTED,
                summary=f"{environment.name}/{group}: out of band: {shown}{more}, "
                f"recorded {found[0].recorded}",
                environment=environment.name,
                group=group,
                details={
                    "hosts": [
                        {"host": s.host, "app": s.app, "recorded": s.recorded,
                         "observed": s.observed, "desired": s.desired}
                        for s in found
                    ]
                },
            )  # fmt: skip

    def _classify(
        self, environment: EnvironmentDesired, unobserved: set[str]
    ) -> tuple[drift.HostAppState, ...]:
        store, name = self.a.store, environment.name
        return drift.host_states(
            environment,
            store.recorded_versions(name),
            store.observed(name),
            store.drift_marks(name),
            unobserved=unobserved,
        )

    def _remember(
        self,
        environment: EnvironmentDesired,
        states: tuple[drift.HostAppState, ...],
        healed: set[tuple[str, str]] | None = None,
    ) -> None:
        store, name = self.a.store, environment.name
        periods = {g.name: g.self_heal.flap_period for g in environment.groups.values()}
        marks = drift.next_marks(
            states,
            store.drift_marks(name),
            self.a.clock(),
            flap_period=periods,
            healed=healed or set(),
        )
        store.set_drift_marks(
            name, [DriftMark(name, m.host, m.app, m.since, m.healed_at, m.flapping) for m in marks]
        )

    def heal(
        self,
        environment: EnvironmentDesired,
        snapshot: DesiredSnapshot,
        states: tuple[drift.HostAppState, ...],
        held: Mapping[str, GroupOutcome],
        *,
        run_id: str,
        cancel: StopRequest,
        abort: threading.Event | None,
    ) -> dict[str, GroupOutcome]:
        enabled = {g.name for g in environment.groups.values() if g.self_heal.enabled}
        plan = drift.to_heal(states, enabled - set(held))
        if not plan or snapshot.root is None or snapshot.commit is None:
            return {}
        deployment = Deployment(snapshot.root, snapshot.commit.sha, run_id)
        recorded = self.a.store.recorded_versions(environment.name)
        outcomes: dict[str, GroupOutcome] = {}
        healed: set[tuple[str, str]] = set()
        for name, hosts in plan.items():
            if cancel.is_set():
                break
            group = environment.groups[name]
            log.warning("self_heal", group=name, hosts=list(hosts))
            group_plan = canary.plan_group(
                environment.name, group, drift.heal_recorded(recorded, states, set(hosts))
            )
            engine = GroupRollout(
                self.a,
                self.settings.execution,
                environment,
                group,
                deployment,
                cancel=cancel,
                abort=abort,
                trigger=RolloutTrigger.SELF_HEAL,
            )
            outcomes[name] = engine.run(group_plan)
            healed |= {(h, app) for h in hosts for app in group.apps}
            if outcomes[name].state is GroupState.SUCCEEDED:
                self.a.events.emit(
                    EventKind.DRIFT_HEALED,
                    summary=f"{environment.name}/{name}: healed {', '.join(hosts)}: back on "
                    + ", ".join(f"{a} {v}" for a, v in group.apps.items()),
                    environment=environment.name,
                    group=name,
                    rollout_id=outcomes[name].rollout_id,
                    commit=snapshot.commit.sha,
                    details={"hosts": list(hosts), "apps": dict(group.apps)},
                )
        self._remember(environment, self._classify_after_heal(environment), healed)
        return outcomes

    def _classify_after_heal(
        self, environment: EnvironmentDesired
    ) -> tuple[drift.HostAppState, ...]:
        unobserved = {g.name for g in environment.groups.values() if g.observe is None}
        return self._classify(environment, unobserved)
