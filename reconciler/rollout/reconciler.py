"""One reconcile: fetch -> validate -> plan -> roll out -> record.

Contract: ``Reconciler.reconcile_once()`` never raises for a bad commit, an unreachable remote or
a failed host; it returns a ``ReconcileResult`` and leaves the store telling what happened.
* The desired state in force comes from the source stage (``source.refresh``): an invalid tip
  is rejected and the last valid commit stays in force; an unreachable remote too.
* Per environment: hosts gone from the inventory are forgotten, what hosts run is looked at
  when due and classified (``rollout.truth``: desired / recorded / observed); stale
  quarantines are lifted (the desired versions that failed are no
  longer desired: a new commit, or our own revert is in force); suspended -> planned and
  reported, nothing changed; nothing to apply (in sync, or every drifted group held) -> no run
  recorded; otherwise groups roll out in ``after`` order (``rollout.environment``).
* Only hosts whose playbook run succeeded are recorded as deployed.
* Then, opt-in, out-of-band hosts of groups the reconcile left alone are healed (a rollout of
  trigger ``self_heal``); never while suspended, outside a window or quarantined.
* Every run row ends in a terminal state, even when the reconcile raises (then ``error``).
* A revert pushed by a rollout becomes the commit in force at once (a refresh), and
  ``on_revert`` (the daemon) learns the new desired state of the environment.
* Events (besides the rollouts' own): ``quarantine_lifted``; ``environment_synced`` when the
  environment is in sync at a commit it was not applied at before (applied, degraded, or
  nothing to do); ``rollout_resumed`` for each rollout a restart found unfinished.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from reconciler.desired.model import EnvironmentDesired
from reconciler.plan import canary, policy
from reconciler.plan.observed import HostAppState
from reconciler.plan.outcomes import EnvironmentOutcome, GroupOutcome
from reconciler.record import EnvironmentFields, RolloutRecord, RunRecord, StateStore
from reconciler.rollout import environment as groups
from reconciler.rollout.group import Deployment, GroupRollout
from reconciler.rollout.ports import Adapters, LeaseCheck, SourceStage, StopRequest
from reconciler.rollout.truth import HostTruth
from reconciler.settings import Settings
from reconciler.source import facts
from reconciler.source.refresh import DesiredSnapshot
from reconciler.states import EnvironmentResult, EventKind, GroupState, RolloutState, StepState

log = structlog.get_logger(__name__)

INTERRUPTED_STEPS = frozenset({StepState.RUNNING, StepState.INTERRUPTED})


@dataclass(frozen=True)
class ReconcileResult:
    snapshot: DesiredSnapshot
    environments: tuple[EnvironmentOutcome, ...]

    @property
    def failed(self) -> bool:
        return any(not e.result.ok for e in self.environments)


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        *,
        source: SourceStage,
        adapters: Adapters,
        cancel: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.source = source
        self.adapters = adapters
        self.store = adapters.store
        self.clock = adapters.clock
        self.cancel = cancel or threading.Event()
        self.truth = HostTruth(settings, lambda: self.adapters)

    def refresh(self, *, fetch: bool = True) -> DesiredSnapshot:
        return self.source.refresh(fetch=fetch)

    def with_store(self, store: StateStore, lease: LeaseCheck | None = None) -> Reconciler:
        """This reconciler recording through ``store`` (a replica's view of the same database
        whose writes carry its lease's fencing token), its Git revert pushes gated by
        ``lease``; the source and the other adapters are shared."""
        view = copy.copy(self)
        view.adapters = dataclasses.replace(self.adapters, store=store, lease=lease)
        view.store = store
        view.truth = HostTruth(self.settings, lambda: view.adapters)
        return view

    # ------------------------------------------------------------------ reconcile
    def reconcile_once(self, environments: set[str] | None = None) -> ReconcileResult:
        snapshot = self.refresh()
        outcomes: list[EnvironmentOutcome] = []
        if snapshot.state is None or snapshot.commit is None or snapshot.root is None:
            return ReconcileResult(snapshot, ())
        for name, environment in snapshot.state.environments.items():
            if environments and name not in environments:
                continue
            outcomes.append(self.reconcile_environment(environment, snapshot))
        return ReconcileResult(snapshot, tuple(outcomes))

    def reconcile_environment(
        self,
        environment: EnvironmentDesired,
        snapshot: DesiredSnapshot,
        *,
        cancel: StopRequest | None = None,
        abort: threading.Event | None = None,
        on_revert: Callable[[DesiredSnapshot], None] | None = None,
        observe: bool = False,
    ) -> EnvironmentOutcome:
        """``observe``: look at every observed host first, whether due or not."""
        assert snapshot.commit is not None and snapshot.root is not None
        commit = snapshot.commit.sha
        started = self.clock()
        bound = structlog.contextvars.bound_contextvars(
            environment=environment.name, commit=commit[:12]
        )
        with bound, self.source.pinned(commit):
            outcome = self._reconcile(environment, snapshot, cancel, abort, on_revert, observe)
        self.adapters.reporter.environment_finished(outcome, self.clock() - started)
        return outcome

    def _reconcile(
        self,
        environment: EnvironmentDesired,
        snapshot: DesiredSnapshot,
        cancel: StopRequest | None,
        abort: threading.Event | None,
        on_revert: Callable[[DesiredSnapshot], None] | None,
        observe: bool,
    ) -> EnvironmentOutcome:
        name, store = environment.name, self.store
        states = self.truth.look(environment, snapshot, force=observe, cancel=cancel)
        recorded = store.recorded_versions(name)
        plan = canary.plan_environment(environment, recorded)
        quarantines = {q.group: q for q in store.quarantines(name)}
        for group in policy.stale_quarantines(environment, quarantines.values()):
            store.clear_quarantine(name, group)
            lifted = quarantines.pop(group)
            log.info("quarantine_lifted", group=group, reason="desired versions changed")
            self.adapters.events.emit(
                EventKind.QUARANTINE_LIFTED,
                summary=f"{name}/{group}: quarantine lifted: the desired versions changed",
                environment=name,
                group=group,
                rollout_id=lifted.rollout_id,
                commit=snapshot.commit.sha if snapshot.commit else None,
                details={"quarantined_commit": lifted.commit, "fingerprint": lifted.fingerprint},
            )
        if store.environment_status(name).suspended:
            log.info(
                "environment_suspended", drifted_groups=sum(not g.in_sync for g in plan.groups)
            )
            store.update_environment(name, self.clock(), last_result=EnvironmentResult.SUSPENDED)
            return EnvironmentOutcome(
                name,
                EnvironmentResult.SUSPENDED,
                tuple(
                    GroupOutcome(g.group, GroupState.IN_SYNC if g.in_sync else GroupState.SUSPENDED)
                    for g in plan.groups
                ),
            )
        held = policy.held_groups(
            environment, plan, quarantines, datetime.fromtimestamp(self.clock(), UTC)
        )
        stop = cancel or StopRequest()
        if all(g.in_sync or g.group in held for g in plan.groups):
            outcome = self._unchanged(
                name, plan, held, snapshot.commit.sha if snapshot.commit else ""
            )
        else:
            outcome = self._apply(environment, plan, held, snapshot, stop, abort, on_revert)
        return self._heal(environment, snapshot, states, held, outcome, stop, abort)

    def _heal(
        self,
        environment: EnvironmentDesired,
        snapshot: DesiredSnapshot,
        states: tuple[HostAppState, ...],
        held: Mapping[str, GroupOutcome],
        outcome: EnvironmentOutcome,
        cancel: StopRequest,
        abort: threading.Event | None,
    ) -> EnvironmentOutcome:
        """Self-heal out-of-band hosts (opt-in) in groups this reconcile left alone."""
        busy = {g.group for g in outcome.groups if g.rollout_id is not None}
        candidates = {**held, **{g: GroupOutcome(g, GroupState.WAITING) for g in busy}}
        if cancel.is_set() or not any(
            g.self_heal.enabled and g.name not in candidates for g in environment.groups.values()
        ):
            return outcome
        name, store, run_id = environment.name, self.store, uuid.uuid4().hex
        commit = snapshot.commit.sha if snapshot.commit else None
        store.start_run(
            RunRecord(run_id, name, commit, self.clock(), None, EnvironmentResult.RUNNING, {})
        )
        healed = self.truth.heal(
            environment, snapshot, states, candidates, run_id=run_id, cancel=cancel, abort=abort
        )
        if not healed:
            store.finish_run(run_id, EnvironmentResult.IN_SYNC, self.clock(), {})
            return outcome
        groups = tuple(healed.get(g.group, g) for g in outcome.groups)
        result = policy.environment_result(groups, applied=True)
        summary = {g: {"state": str(o.state), "reason": o.reason} for g, o in healed.items()}
        store.finish_run(run_id, result, self.clock(), summary)
        store.update_environment(name, self.clock(), last_result=result)
        return EnvironmentOutcome(name, result, groups)

    def observe(
        self, environment: EnvironmentDesired, snapshot: DesiredSnapshot
    ) -> tuple[HostAppState, ...]:
        """Look at what every observed host of the environment runs now (``reconciler
        observe``), and classify it."""
        assert snapshot.commit is not None
        with self.source.pinned(snapshot.commit.sha):
            return self.truth.look(environment, snapshot, force=True)

    def _unchanged(
        self,
        environment: str,
        plan: canary.EnvironmentPlan,
        held: Mapping[str, GroupOutcome],
        commit: str,
    ) -> EnvironmentOutcome:
        """Nothing to apply now: in sync, or every drifted group is held. No run recorded."""
        outcomes = tuple(
            held.get(g.group) or GroupOutcome(g.group, GroupState.IN_SYNC) for g in plan.groups
        )
        result = policy.environment_result(outcomes, applied=False)
        now = self.clock()
        if result is EnvironmentResult.IN_SYNC:
            if self.store.environment_status(environment).last_applied_commit != commit:
                self._synced(environment, commit, result, outcomes)
            self.store.update_environment(
                environment,
                now,
                last_attempted_commit=commit,
                last_applied_commit=commit,
                last_result=result,
                last_error="",
            )
            facts.record_success(self.store, environment, now)
        else:
            reasons = "; ".join(f"{g.group}: {g.reason}" for g in held.values())
            self.store.update_environment(environment, now, last_result=result, last_error=reasons)
        return EnvironmentOutcome(environment, result, outcomes)

    def _apply(
        self,
        environment: EnvironmentDesired,
        plan: canary.EnvironmentPlan,
        held: Mapping[str, GroupOutcome],
        snapshot: DesiredSnapshot,
        cancel: StopRequest,
        abort: threading.Event | None,
        on_revert: Callable[[DesiredSnapshot], None] | None,
    ) -> EnvironmentOutcome:
        assert snapshot.commit is not None and snapshot.root is not None
        name, commit, store = environment.name, snapshot.commit.sha, self.store
        run_id, started = uuid.uuid4().hex, self.clock()
        store.start_run(
            RunRecord(run_id, name, commit, started, None, EnvironmentResult.RUNNING, {})
        )
        store.update_environment(name, started, last_attempted_commit=commit)
        deployment = Deployment(snapshot.root, commit, run_id)

        def reverted() -> None:
            adopted = self.source.refresh(fetch=True)
            log.info("revert_in_force", commit=adopted.commit.sha[:12] if adopted.commit else None)
            if on_revert is not None:
                on_revert(adopted)

        def roll(group_plan: canary.GroupPlan) -> GroupOutcome:
            engine = GroupRollout(
                self.adapters,
                self.settings.execution,
                environment,
                environment.groups[group_plan.group],
                deployment,
                cancel=cancel,
                abort=abort,
                on_reverted=reverted,
            )
            with structlog.contextvars.bound_contextvars(environment=name, commit=commit[:12]):
                return engine.run(group_plan)

        result = EnvironmentResult.ERROR
        summary: dict[str, object] = {}
        try:
            outcomes = groups.roll_out(
                plan,
                held,
                roll,
                parallel=self.settings.execution.parallel_groups,
                stopping=cancel,
            )
            result = policy.environment_result(outcomes.values(), applied=True)
            summary = {
                group: {
                    "state": str(o.state),
                    "changed": list(o.changed_hosts),
                    "failed": dict(o.failed_hosts),
                    "reason": o.reason,
                    "revert": o.revert_text,
                }
                for group, o in outcomes.items()
            }
        except Exception as exc:
            log.exception("reconcile_crashed")
            summary = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            store.finish_run(run_id, result, self.clock(), summary)
            store.update_environment(
                name, self.clock(), last_result=result, last_error=str(summary["error"])
            )
            return EnvironmentOutcome(name, result, (), error=str(summary["error"]))
        finished = self.clock()
        store.finish_run(run_id, result, finished, summary)
        blocking = [o for o in outcomes.values() if o.state in policy.BLOCKING]
        fields: EnvironmentFields = {
            "last_result": result,
            "last_error": "; ".join(f"{o.group}: {o.reason}" for o in blocking),
        }
        if result in (EnvironmentResult.APPLIED, EnvironmentResult.DEGRADED):
            fields["last_applied_commit"] = commit
            facts.record_success(store, name, finished)
            self._synced(name, commit, result, tuple(outcomes.values()))
        store.update_environment(name, finished, **fields)
        log.info("reconcile_finished", result=str(result), seconds=round(finished - started, 3))
        return EnvironmentOutcome(name, result, tuple(outcomes.values()))

    def _synced(
        self,
        environment: str,
        commit: str,
        result: EnvironmentResult,
        outcomes: tuple[GroupOutcome, ...],
    ) -> None:
        groups = {g.group: str(g.state) for g in outcomes}
        rolled = [g.group for g in outcomes if g.rollout_id is not None]
        what = f"rolled out {', '.join(rolled)}" if rolled else "nothing to change"
        note = " (degraded)" if result is EnvironmentResult.DEGRADED else ""
        self.adapters.events.emit(
            EventKind.ENVIRONMENT_SYNCED,
            summary=f"{environment}: in sync at {commit[:12]}{note}: {what}",
            environment=environment,
            commit=commit,
            details={"result": str(result), "groups": groups},
        )

    # ------------------------------------------------------------------ resume
    def resume_interrupted(
        self, snapshot: DesiredSnapshot, only: str | None = None
    ) -> list[RolloutRecord]:
        """Close rollouts a crash or kill left ``running``; make their hosts get redeployed.

        Call only while no rollout of this store runs (daemon start, holding the lock), or,
        with ``only``, while no rollout of that environment runs (a replica that just took
        its lease over).
        """
        resumed = []
        store = self.store
        for record in store.unfinished_rollouts():
            if only is not None and record.environment != only:
                continue
            steps = [s for s in store.steps(record.id) if s.state in INTERRUPTED_STEPS]
            hosts = sorted({h for s in steps for h in s.hosts})
            environment = (
                snapshot.state.environments.get(record.environment) if snapshot.state else None
            )
            group = environment.groups.get(record.group) if environment else None
            forget = policy.forgotten_on_resume(
                hosts, record.apps, group, store.recorded_versions(record.environment)
            )
            store.forget_deployed(record.environment, forget)
            for step in steps:
                store.journal_step(dataclasses.replace(step, state=StepState.INTERRUPTED))
            where = ", ".join(f"{s.phase} step {s.index}" for s in steps) or "between steps"
            reason = (
                f"interrupted ({where}); hosts {', '.join(hosts) or 'none'} are redeployed by "
                "the next reconcile"
            )
            store.finish_rollout(record.id, RolloutState.INTERRUPTED, reason, self.clock())
            for run in store.runs(record.environment, limit=50):
                if run.id == record.run_id and run.finished_at is None:
                    store.finish_run(run.id, EnvironmentResult.INTERRUPTED, self.clock(), {})
            log.warning(
                "rollout_resumed",
                rollout_id=record.id,
                environment=record.environment,
                group=record.group,
                hosts=hosts,
                forgotten=len(forget),
            )
            self.adapters.events.emit(
                EventKind.ROLLOUT_RESUMED,
                summary=f"{record.environment}/{record.group}: unfinished rollout found at "
                f"start: {reason}",
                environment=record.environment,
                group=record.group,
                rollout_id=record.id,
                commit=record.commit,
                details={"hosts": hosts, "apps": dict(record.apps), "steps": where},
            )
            resumed.append(record)
        return resumed
