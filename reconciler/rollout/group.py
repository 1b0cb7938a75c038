"""Progressive delivery of one group: canary steps, health gates, bake, rollback, revert.

Contract (``GroupRollout.run``); every decision comes from ``plan.policy``, this module executes:
* Each planned step runs through ``rollout.steps`` (journalled before and after, unreachable
  hosts retried with backoff, every success recorded as deployed at once); gate results are
  journalled with their checkpoint (after the step, after the bake, after a rollback), and what
  the step's reached hosts run is observed after it, in the background (overlapping the next
  step); every look has been recorded before the rollout's end is.
* A step fails when more hosts fail than ``max_failed_hosts`` tolerates, or when a health gate
  fails on the step's successful hosts (after the step, and again after ``bake``).
* On failure every host this rollout touched (a host it never reached is not touched) goes
  back to its last good versions through the
  same playbook (phase ``rollback``), the gates are checked on them, the rollout is recorded as
  ``rolled_back`` (``failed`` if the rollback itself failed) with the reason, the group's desired
  versions are quarantined, and a revert commit is pushed; once pushed, ``on_reverted`` is
  called (the caller makes the revert the commit in force). Hosts of later steps are never
  touched. With replicas the revert is pushed only when the lease is confirmed right before
  the push (``Adapters.lease``): a replica that lost it pushes nothing (the revert stays
  pending; the new holder resumes the rollout).
* A rollout through every step ends ``succeeded``, or ``degraded`` when hosts failed within
  ``max_failed_hosts`` (the group outcome says ``degraded`` too).
* A self-heal rollout (``trigger=SELF_HEAL``: hosts that run something else than reconciler
  deployed, redeployed to what Git and the record say) that fails ends ``failed``: there is
  nothing to roll back to and nothing to revert in Git; the reconcile keeps it from looping.
* ``cancel`` (a ``StopRequest``: newer commit or shutdown) stops between steps and during
  gates/bake: the step in progress finishes, nothing is rolled back, the rollout ends
  ``superseded`` or ``interrupted``.
* ``abort`` (shutdown grace exceeded) kills the running playbook: the step is journalled
  ``interrupted`` and the rollout stays ``running`` in the journal, so the next start resumes
  it exactly like after a crash (``Reconciler.resume_interrupted``).
* Whatever happens, including an exception in this engine, the rollout row ends in a terminal
  state (except the deliberate ``abort`` case above); an exception ends it ``failed`` with the
  error and is not raised further.
* Events (``rollout.announcements``): ``rollout_started``, ``step_finished`` and
  ``gate_failed`` per step, one ending; after a failed step ``rollout_rolled_back`` (or
  ``_failed``) once the hosts are back, then the revert's event and ``quarantine_set``.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence

import structlog

from reconciler import content
from reconciler.desired.model import EnvironmentDesired, GroupDesired, Host
from reconciler.edges.ansible import RunResult
from reconciler.edges.gates import GateResult, GateTarget
from reconciler.plan import policy
from reconciler.plan.canary import GroupPlan, Step
from reconciler.plan.outcomes import GroupOutcome, RevertOutcome
from reconciler.record import QuarantineRecord, RolloutRecord, StepRecord
from reconciler.rollout import announcements, reverts
from reconciler.rollout.playbooks import Deployment
from reconciler.rollout.ports import Adapters, StopRequest
from reconciler.rollout.steps import StepRunner
from reconciler.settings import ExecutionSettings
from reconciler.states import (
    GateCheckpoint,
    GroupState,
    Phase,
    PushStatus,
    RolloutState,
    RolloutTrigger,
    RunOutcome,
    StopReason,
)

log = structlog.get_logger(__name__)


class _Stop(Exception):
    """The rollout must end here with ``outcome`` (already journalled)."""

    def __init__(self, outcome: GroupOutcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


class GroupRollout:
    """Rolls one group of one environment forward, or back when a step fails."""

    def __init__(
        self,
        adapters: Adapters,
        execution: ExecutionSettings,
        environment: EnvironmentDesired,
        group: GroupDesired,
        deployment: Deployment,
        *,
        cancel: StopRequest | None = None,
        abort: threading.Event | None = None,
        on_reverted: Callable[[], None] | None = None,
        trigger: RolloutTrigger = RolloutTrigger.CHANGE,
    ) -> None:
        self.a = adapters
        self.execution = execution
        self.environment = environment
        self.group = group
        self.deployment = deployment
        self.cancel = cancel or StopRequest()
        self.abort = abort
        self.on_reverted = on_reverted
        self.trigger = trigger
        self.rollout_id = uuid.uuid4().hex[:16]
        self.touched: list[str] = []
        self.changed: list[str] = []
        self.failures: dict[str, str] = {}
        self._left_running = False
        self._announced = False
        self._deploy_steps = self._rollback_steps = 0
        self._versions: dict[str, dict[str, object]] = {}
        self._started = 0.0
        self.tell = announcements.Teller(
            adapters.events, environment.name, group.name, self.rollout_id, deployment.commit,
            trigger,
        )  # fmt: skip
        self.steps = StepRunner(
            adapters, execution, environment, group, deployment, self.rollout_id,
            cancel=self.cancel, abort=abort, tell=self.tell,
        )  # fmt: skip

    # ------------------------------------------------------------------ entry
    def run(self, plan: GroupPlan) -> GroupOutcome:
        store, started = self.a.store, self.a.clock()
        store.start_rollout(
            RolloutRecord(
                self.rollout_id,
                self.deployment.run_id,
                self.environment.name,
                self.group.name,
                self.deployment.commit,
                dict(self.group.apps),
                RolloutState.RUNNING,
                "",
                started,
                None,
                self.trigger,
            )
        )
        self._started = started
        self._versions = announcements.versions_of(plan)
        self.tell.started(plan, self._versions)
        outcome: GroupOutcome | None = None
        with structlog.contextvars.bound_contextvars(
            group=self.group.name, rollout_id=self.rollout_id
        ):
            shadowed = content.shadowed_roles(self.deployment.root)
            if shadowed:
                log.warning(
                    "repository_role_shadows_shipped",
                    roles=list(shadowed),
                    playbook=self.group.playbook,
                    used="shipped" if content.is_shipped(self.group.playbook) else "repository",
                )
            try:
                outcome = self._forward(plan)
            except _Stop as stop:
                outcome = stop.outcome
            except Exception as exc:  # a bug must not leave the journal saying "running"
                log.exception("rollout_crashed")
                reason = f"internal error: {type(exc).__name__}: {exc}"[:500]
                outcome = self._finish(RolloutState.FAILED, GroupState.FAILED, reason)
            finally:
                self.steps.settle()
                if outcome is None and not self._left_running:  # pragma: no cover - BaseException
                    store.finish_rollout(
                        self.rollout_id, RolloutState.FAILED, "stopped", self.a.clock()
                    )
        self.a.reporter.rollout_finished(self.environment.name, outcome, self.a.clock() - started)
        return outcome

    def _forward(self, plan: GroupPlan) -> GroupOutcome:
        apps = dict(self.group.apps)
        # "step k/n": k counts every canary step (those with nothing to do are not run), so n
        # is the canary's length, not the number of steps run ("3/2" otherwise).
        self._deploy_steps = max([len(self.group.rollout.canary), *(s.index for s in plan.steps)])
        for step in plan.steps:
            self._check_stop()
            result = self.steps.play(Phase.DEPLOY, step, self._deploy_steps, apps)
            if result.outcome is RunOutcome.CANCELED:
                return self._aborted(step)
            statuses = {h: r.status for h, r in result.hosts.items()}
            self.touched.extend(policy.reached(step.hosts, statuses))
            self.changed.extend(result.succeeded())
            step_failures = _failures(result)
            self.failures.update(step_failures)
            reason = policy.playbook_failure(step, step_failures, self.group.rollout)
            if reason is None:
                reason = self._gate_step(step, result)
            reached = set(policy.reached(step.hosts, statuses))
            self.steps.observe([h for h in self.group.hosts if h.name in reached])
            if reason is not None:
                if self.trigger is RolloutTrigger.SELF_HEAL:
                    return self._finish(
                        RolloutState.FAILED, GroupState.FAILED, f"self-heal failed: {reason}"
                    )
                return self._roll_back(plan, reason)
        state, group_state, reason = policy.finished(self.failures)
        return self._finish(state, group_state, reason)

    def _gate_step(self, step: Step, result: RunResult) -> str | None:
        """Gates after the step and, when they pass and the group bakes, after the bake."""
        succeeded = set(result.succeeded())
        hosts = [h for h in self.group.hosts if h.name in succeeded]
        apps = dict(self.group.apps)
        failure = policy.gate_failure(
            self._gates(Phase.DEPLOY, step, hosts, apps, GateCheckpoint.AFTER_STEP)
        )
        bake = self.group.rollout.bake_s
        if failure is None and bake > 0 and hosts and self.group.health:
            log.info("bake", step=step.index, seconds=bake)
            self._journal_bake(step, self.a.clock() + bake)
            self.a.reporter.bake_started(self.environment.name, self.group.name, step, bake)
            if self.cancel.wait(bake):
                self._check_stop()
            failure = policy.gate_failure(
                self._gates(Phase.DEPLOY, step, hosts, apps, GateCheckpoint.AFTER_BAKE)
            )
            if failure is not None:
                failure = f"after the bake: {failure}"
        return None if failure is None else f"step {step.index}: {failure}"

    def _journalled(self, phase: Phase, step: Step) -> StepRecord | None:
        return next(
            (
                s
                for s in self.a.store.steps(self.rollout_id)
                if s.phase == phase and s.index == step.index
            ),
            None,
        )

    def _journal_bake(self, step: Step, until: float) -> None:
        """The bake's end on the deploy step's record (the web page counts down to it)."""
        journalled = self._journalled(Phase.DEPLOY, step)
        if journalled is not None:
            self.a.store.journal_step(dataclasses.replace(journalled, bake_until=until))

    # ------------------------------------------------------------------ endings
    def _finish(
        self,
        state: RolloutState,
        group_state: GroupState,
        reason: str,
        revert: RevertOutcome | None = None,
    ) -> GroupOutcome:
        self.steps.settle()
        self.a.store.finish_rollout(self.rollout_id, state, reason, self.a.clock())
        log.info("rollout_finished", state=str(state), hosts=len(self.changed), reason=reason)
        self._announce(state, reason)
        return GroupOutcome(
            self.group.name,
            group_state,
            self.rollout_id,
            tuple(self.changed),
            dict(self.failures),
            reason,
            revert,
        )

    def _announce(self, state: RolloutState, reason: str) -> None:
        """The rollout's ending, once."""
        if self._announced:
            return
        self._announced = True
        seconds = self.a.clock() - self._started
        self.tell.finished(state, reason, self._versions, self.changed, self.failures, seconds)

    def _check_stop(self) -> None:
        """Raise ``_Stop`` (after journalling) when a newer commit or a shutdown came."""
        if not self.cancel.is_set():
            return
        if self.cancel.reason is StopReason.INTERRUPTED:
            outcome = self._finish(
                RolloutState.INTERRUPTED,
                GroupState.INTERRUPTED,
                "stopped by a daemon shutdown; the next start continues",
            )
        else:
            outcome = self._finish(
                RolloutState.SUPERSEDED,
                GroupState.SUPERSEDED,
                "superseded by a newer commit; the next reconcile continues",
            )
        raise _Stop(outcome)

    def _aborted(self, step: Step) -> GroupOutcome:
        """The playbook was killed mid-step: left ``running`` for the next start to resume."""
        self._left_running = True
        reason = f"step {step.index} killed at shutdown; hosts {', '.join(step.hosts)} unknown"
        log.warning("rollout_aborted", step=step.index, hosts=list(step.hosts))
        return GroupOutcome(
            self.group.name,
            GroupState.INTERRUPTED,
            self.rollout_id,
            tuple(self.changed),
            dict(self.failures),
            reason,
        )

    # ------------------------------------------------------------------ steps
    def _gates(
        self,
        phase: Phase,
        step: Step,
        hosts: Sequence[Host],
        versions: Mapping[str, str],
        checkpoint: GateCheckpoint,
    ) -> list[GateResult]:
        """Evaluate the group's gates on ``hosts``; journal and report them."""
        if not self.group.health or not hosts:
            return []
        targets = [GateTarget(host, app, v) for host in hosts for app, v in versions.items()]
        results = self.a.checker.evaluate(
            self.group.health,
            targets,
            environment=self.environment.name,
            group=self.group.name,
            cancel=self.cancel,
        )
        journalled = self._journalled(phase, step)
        if journalled is not None:
            rows = [{**r.as_dict(), "checkpoint": str(checkpoint)} for r in results]
            self.a.store.journal_step(
                dataclasses.replace(
                    journalled,
                    gate_results=[*journalled.gate_results, *rows],
                    finished_at=self.a.clock(),
                )
            )
        self.a.reporter.gates_finished(
            self.environment.name, self.group.name, phase, step, checkpoint, results
        )
        self.tell.gate_failed(phase, step, self._total(phase), checkpoint, results, versions)
        for r in results:
            log.info(
                "gate",
                gate=r.gate,
                checkpoint=str(checkpoint),
                host=r.host,
                passed=r.passed,
                detail=r.detail,
            )
        if self.cancel.is_set() and phase is Phase.DEPLOY:
            self._check_stop()
        return results

    # ------------------------------------------------------------------ rollback
    def _roll_back(self, plan: GroupPlan, reason: str) -> GroupOutcome:
        log.error("step_failed", reason=reason)
        batches, no_previous = policy.rollback_batches(self.group, plan, self.touched)
        self._rollback_steps = len(batches)
        rollback_failed: list[str] = []
        for index, batch in enumerate(batches, start=1):
            step = Step(index=index, percent=0, cohort_size=len(batch.hosts), hosts=batch.hosts)
            result = self.steps.play(Phase.ROLLBACK, step, len(batches), batch.versions)
            rollback_failed.extend(result.failed())
            succeeded = set(result.succeeded())
            back = [h for h in self.group.hosts if h.name in succeeded]
            failure = policy.gate_failure(
                self._gates(
                    Phase.ROLLBACK, step, back, batch.versions, GateCheckpoint.AFTER_ROLLBACK
                )
            )
            if failure is not None and not self.cancel.is_set():
                rollback_failed.extend(h.name for h in back)
                reason += f"; after rollback: {failure}"
            self.steps.observe([h for h in self.group.hosts if h.name in set(batch.hosts)])
        if no_previous:
            reason += (
                f"; no last good version to restore on {', '.join(no_previous)}"
                " (first deployment): left as is"
            )
        if rollback_failed:
            reason += f"; rollback failed on {', '.join(sorted(set(rollback_failed)))}"
        state, group_state = (
            (RolloutState.FAILED, GroupState.FAILED)
            if rollback_failed
            else (RolloutState.ROLLED_BACK, GroupState.ROLLED_BACK)
        )
        self._announce(state, reason)  # the hosts are back: say so before pushing to Git
        restore = policy.restore_versions(plan, self.touched)
        revert, failed = reverts.revert(
            self.a.reverter, self.environment, self.group, self.deployment.commit, restore,
            reason, self.rollout_id, self.a.lease,
        )  # fmt: skip
        self.tell.reverted(revert, restore, failed, state is RolloutState.ROLLED_BACK)
        outcome = self._finish(state, group_state, reason, revert)
        fingerprint = policy.fingerprint(self.group.apps)
        self.a.store.set_quarantine(
            QuarantineRecord(
                self.environment.name,
                self.group.name,
                fingerprint,
                self.deployment.commit,
                self.rollout_id,
                reason,
                str(revert),
                self.a.clock(),
            )
        )
        self.tell.quarantined(self.group.apps, fingerprint, reason)
        log.error("rollout_rolled_back", state=str(state), reason=reason, revert=str(revert))
        if revert.status is PushStatus.PUSHED and self.on_reverted is not None:
            self.on_reverted()
        return dataclasses.replace(outcome, changed_hosts=())

    def _total(self, phase: Phase) -> int:  # for "step k/n"
        return self._rollback_steps if phase is Phase.ROLLBACK else self._deploy_steps


def _failures(result: RunResult) -> dict[str, str]:
    return {h: result.hosts[h].message or str(result.hosts[h].status) for h in result.failed()}
