"""Progressive delivery of one group: canary steps, health gates, bake, rollback, revert.

Contract (``GroupRollout.run``):
* Each planned step is journalled (``running``) before its playbook runs and again when it ends,
  with per-host results and gate results. Hosts whose playbook run succeeded are recorded as
  deployed at once (the store always tells what hosts run).
* A step fails when more hosts fail than ``max_failed_hosts`` tolerates, or when a health gate
  fails on the step's successful hosts (after the step, and again after ``bake``).
* On failure every host this rollout touched goes back to its last good versions through the
  same playbook (phase ``rollback``), the gates are checked on them, the rollout is recorded as
  ``rolled_back`` (or ``failed`` if the rollback itself failed) with the reason, the group's
  desired versions are quarantined, and a revert commit is pushed through the Git source.
  Hosts of later steps are never touched.
* ``cancel`` (a newer commit, or shutdown) stops between steps and during gates/bake: the step
  in progress finishes, nothing is rolled back, the rollout is recorded as ``superseded`` (or
  ``interrupted`` when the cancel is a ``StopRequest`` for a shutdown).
* ``abort`` (shutdown grace exceeded) kills the running playbook: the step is journalled
  ``interrupted`` and the rollout stays ``running`` in the journal, so the next start resumes
  it exactly like after a crash (``Reconciler.resume_interrupted``).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import structlog

from reconciler import content
from reconciler.desired.messages import RevertRequest
from reconciler.desired.model import EnvironmentDesired, GroupDesired, Host
from reconciler.edges.ansible.runner import PlaybookRun, PlaybookRunner, RunResult
from reconciler.edges.gates.checker import GateResult, GateTarget, HealthChecker
from reconciler.edges.git import GitWriter
from reconciler.plan import canary as planning
from reconciler.record.sqlite import (
    DeployedVersion,
    QuarantineRecord,
    RolloutRecord,
    StateStore,
    StepRecord,
)
from reconciler.settings import ExecutionSettings

log = structlog.get_logger(__name__)


def fingerprint(apps: Mapping[str, str]) -> str:
    """Identity of a group's desired versions (what a quarantine pins)."""
    return json.dumps(dict(sorted(apps.items())), separators=(",", ":"))


class Reporter(Protocol):
    """Progress callbacks (the CLI draws them; the daemon logs them)."""

    def step_started(
        self, environment: str, group: str, phase: str, step: planning.Step, total_steps: int
    ) -> None: ...

    def step_finished(
        self, environment: str, group: str, phase: str, step: planning.Step, result: RunResult
    ) -> None: ...

    def gates_finished(
        self,
        environment: str,
        group: str,
        phase: str,
        step: planning.Step,
        results: Sequence[GateResult],
    ) -> None: ...


class StopRequest(threading.Event):
    """A cancel event that says why the rollout stops: a newer commit or a shutdown."""

    def __init__(self) -> None:
        super().__init__()
        self.state = "superseded"

    def request(self, state: str = "superseded") -> None:
        self.state = state
        self.set()


class SilentReporter:
    def step_started(self, *args: object) -> None:
        return None

    def step_finished(self, *args: object) -> None:
        return None

    def gates_finished(self, *args: object) -> None:
        return None


#: Pushes the revert commit after a rollback: the Git edge's writer.
Reverter = GitWriter


@dataclass(frozen=True)
class Deployment:
    """What the rollout deploys: snapshot root, commit, and the run id it belongs to."""

    root: Path
    commit: str
    run_id: str


@dataclass(frozen=True)
class GroupOutcome:
    group: str
    state: str  # in_sync|succeeded|rolled_back|failed|waiting|suspended|quarantined|superseded
    rollout_id: str | None = None
    changed_hosts: tuple[str, ...] = ()
    failed_hosts: Mapping[str, str] = field(default_factory=dict)
    reason: str = ""
    revert: str = ""


class _StepFailed(Exception):
    pass


class GroupRollout:
    """Rolls one group of one environment forward, or back when a step fails."""

    def __init__(
        self,
        *,
        store: StateStore,
        runner: PlaybookRunner,
        checker: HealthChecker,
        execution: ExecutionSettings,
        reporter: Reporter,
        reverter: Reverter | None = None,
        clock: Callable[[], float] = time.time,
        cancel: threading.Event | None = None,
        abort: threading.Event | None = None,
    ) -> None:
        self.store = store
        self.runner = runner
        self.checker = checker
        self.execution = execution
        self.reporter = reporter
        self.reverter = reverter
        self.clock = clock
        self.cancel = cancel or threading.Event()
        self.abort = abort

    # ------------------------------------------------------------------ entry
    def run(
        self,
        environment: EnvironmentDesired,
        group: GroupDesired,
        plan: planning.GroupPlan,
        deployment: Deployment,
    ) -> GroupOutcome:
        rollout_id = uuid.uuid4().hex[:16]
        self.store.start_rollout(
            RolloutRecord(
                rollout_id,
                deployment.run_id,
                environment.name,
                group.name,
                deployment.commit,
                dict(group.apps),
                "running",
                "",
                self.clock(),
                None,
            )
        )
        touched: list[str] = []
        changed: list[str] = []
        failures: dict[str, str] = {}
        with structlog.contextvars.bound_contextvars(group=group.name, rollout_id=rollout_id):
            try:
                for step in plan.steps:
                    if self.cancel.is_set():
                        return self._superseded(group, rollout_id, changed, failures)
                    result = self._deploy_step(
                        environment, group, step, len(plan.steps), deployment, rollout_id
                    )
                    if result.outcome == "canceled":
                        return self._aborted(group, rollout_id, step, changed, failures)
                    touched.extend(step.hosts)
                    changed.extend(result.succeeded())
                    step_failures = _failures(result)
                    failures.update(step_failures)
                    self._check_step(environment, group, step, result, step_failures, rollout_id)
            except _StepFailed as failed:
                if self.cancel.is_set() and str(failed).endswith("canceled"):
                    return self._superseded(group, rollout_id, changed, failures)
                return self._roll_back(
                    environment, group, plan, deployment, rollout_id, touched, failures, str(failed)
                )
            state = "succeeded" if not failures else "degraded"
            reason = "" if not failures else "tolerated failures: " + ", ".join(sorted(failures))
            self.store.finish_rollout(rollout_id, state, reason, self.clock())
            log.info("rollout_finished", state=state, hosts=len(changed))
        return GroupOutcome(group.name, "succeeded", rollout_id, tuple(changed), failures, reason)

    def _superseded(
        self, group: GroupDesired, rollout_id: str, changed: list[str], failures: dict[str, str]
    ) -> GroupOutcome:
        state = getattr(self.cancel, "state", "superseded")
        reason = (
            "stopped by a daemon shutdown; the next start continues"
            if state == "interrupted"
            else "superseded by a newer commit; the next reconcile continues"
        )
        self.store.finish_rollout(rollout_id, state, reason, self.clock())
        log.info("rollout_stopped", state=state)
        return GroupOutcome(group.name, state, rollout_id, tuple(changed), failures, reason)

    def _aborted(
        self,
        group: GroupDesired,
        rollout_id: str,
        step: planning.Step,
        changed: list[str],
        failures: dict[str, str],
    ) -> GroupOutcome:
        """The playbook was killed mid-step: left ``running`` for the next start to resume."""
        reason = f"step {step.index} killed at shutdown; hosts {', '.join(step.hosts)} unknown"
        log.warning("rollout_aborted", step=step.index, hosts=list(step.hosts))
        return GroupOutcome(group.name, "interrupted", rollout_id, tuple(changed), failures, reason)

    # ------------------------------------------------------------------ steps
    def _deploy_step(
        self,
        environment: EnvironmentDesired,
        group: GroupDesired,
        step: planning.Step,
        total: int,
        deployment: Deployment,
        rollout_id: str,
    ) -> RunResult:
        return self._run_playbook(
            environment, group, "deploy", step, total, dict(group.apps), deployment, rollout_id
        )

    def _check_step(
        self,
        environment: EnvironmentDesired,
        group: GroupDesired,
        step: planning.Step,
        result: RunResult,
        step_failures: Mapping[str, str],
        rollout_id: str,
    ) -> None:
        tolerated = group.rollout.tolerated_failures(len(step.hosts))
        if len(step_failures) > tolerated:
            raise _StepFailed(
                f"step {step.index}: {len(step_failures)} of {len(step.hosts)} hosts failed "
                f"the playbook (tolerated {tolerated}): "
                + "; ".join(f"{h}: {m}" for h, m in sorted(step_failures.items()))
            )
        hosts = [h for h in group.hosts if h.name in set(result.succeeded())]
        gate_runs = [
            self._gates(environment, group, "deploy", step, hosts, dict(group.apps), rollout_id)
        ]
        if gate_runs[-1] is None and group.rollout.bake_s > 0:
            log.info("bake", seconds=group.rollout.bake_s)
            if self.cancel.wait(group.rollout.bake_s):
                raise _StepFailed(f"step {step.index}: canceled")
            gate_runs.append(
                self._gates(environment, group, "deploy", step, hosts, dict(group.apps), rollout_id)
            )
        failed = next((g for g in gate_runs if g is not None), None)
        if failed is not None:
            raise _StepFailed(f"step {step.index}: {failed}")

    def _gates(
        self,
        environment: EnvironmentDesired,
        group: GroupDesired,
        phase: str,
        step: planning.Step,
        hosts: Sequence[Host],
        versions: Mapping[str, str],
        rollout_id: str,
    ) -> str | None:
        """Evaluate the group's gates on ``hosts``; journal them; return a failure or None."""
        if not group.health or not hosts:
            return None
        targets = [
            GateTarget(host, app, version) for host in hosts for app, version in versions.items()
        ]
        results = self.checker.evaluate(
            group.health,
            targets,
            environment=environment.name,
            group=group.name,
            cancel=self.cancel,
        )
        self._journal_gates(rollout_id, phase, step, results)
        self.reporter.gates_finished(environment.name, group.name, phase, step, results)
        failed = [r for r in results if not r.passed]
        for result in results:
            log.info(
                "gate",
                gate=result.gate,
                host=result.host,
                passed=result.passed,
                detail=result.detail,
            )
        if self.cancel.is_set():
            return "canceled"
        if not failed:
            return None
        first = failed[0]
        where = f" on {first.host}" if first.host else ""
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        return f"gate {first.gate} failed{where}: {first.detail}{more}"

    def _journal_gates(
        self, rollout_id: str, phase: str, step: planning.Step, results: Sequence[GateResult]
    ) -> None:
        journalled = next(
            (s for s in self.store.steps(rollout_id) if s.phase == phase and s.index == step.index),
            None,
        )
        if journalled is not None:
            gate_results = [*journalled.gate_results, *(r.as_dict() for r in results)]
            self.store.journal_step(
                dataclasses.replace(journalled, gate_results=gate_results, finished_at=self.clock())
            )

    def _run_playbook(
        self,
        environment: EnvironmentDesired,
        group: GroupDesired,
        phase: str,
        step: planning.Step,
        total: int,
        apps: Mapping[str, str],
        deployment: Deployment,
        rollout_id: str,
    ) -> RunResult:
        intent = StepRecord(
            rollout_id, phase, step.index, step.percent, step.hosts, "running", {}, [], "",
            self.clock(), None,
        )  # fmt: skip
        self.store.journal_step(intent)
        self.reporter.step_started(environment.name, group.name, phase, step, total)
        log.info(
            "step_started", phase=phase, step=step.index, hosts=list(step.hosts), apps=dict(apps)
        )
        result = self.runner.run(
            self._playbook_run(environment, group, phase, step, apps, deployment, rollout_id),
            cancel=self.abort,
        )
        now = self.clock()
        self.store.record_deployed(
            [
                DeployedVersion(
                    environment.name,
                    host,
                    app,
                    version,
                    group.name,
                    deployment.commit,
                    rollout_id,
                    now,
                )
                for host in result.succeeded()
                for app, version in apps.items()
            ]
        )
        host_results = {
            h: {"status": str(r.status), "changed": r.changed, "message": r.message}
            for h, r in result.hosts.items()
        }
        self.store.journal_step(
            dataclasses.replace(
                intent,
                state=(
                    "interrupted"
                    if result.outcome == "canceled"
                    else "succeeded"
                    if not result.failed()
                    else "failed"
                ),
                host_results=host_results,
                run_dir=str(result.run_dir),
                finished_at=now,
            )
        )
        self.reporter.step_finished(environment.name, group.name, phase, step, result)
        log.info(
            "step_finished",
            phase=phase,
            step=step.index,
            outcome=result.outcome,
            succeeded=len(result.succeeded()),
            failed=len(result.failed()),
            seconds=round(result.duration_s, 2),
        )
        return result

    def _playbook_run(
        self,
        environment: EnvironmentDesired,
        group: GroupDesired,
        phase: str,
        step: planning.Step,
        apps: Mapping[str, str],
        deployment: Deployment,
        rollout_id: str,
    ) -> PlaybookRun:
        envvars = {
            "ANSIBLE_FORKS": str(min(self.execution.forks, max(1, len(step.hosts)))),
            "ANSIBLE_PIPELINING": str(self.execution.pipelining),
        }
        if self.execution.private_key_file:
            envvars["ANSIBLE_PRIVATE_KEY_FILE"] = str(self.execution.private_key_file)
        envvars.update(self.execution.extra_envvars)
        roles = tuple(p for p in (deployment.root / "roles", content.roles_dir()) if p.is_dir())
        return PlaybookRun(
            playbook=content.playbook_path(deployment.root, group.playbook),
            inventory=(deployment.root / environment.inventory).resolve(),
            hosts=step.hosts,
            extra_vars={
                "reconciler_apps": dict(apps),
                "reconciler_environment": environment.name,
                "reconciler_group": group.name,
                "reconciler_commit": deployment.commit,
                "reconciler_rollout_id": rollout_id,
            },
            timeout_s=group.timeout_s,
            roles_path=roles,
            envvars=envvars,
            label=f"{environment.name}-{group.name}-{phase}{step.index}",
        )

    # --------------------------------------------------------------- rollback
    def _roll_back(
        self,
        environment: EnvironmentDesired,
        group: GroupDesired,
        plan: planning.GroupPlan,
        deployment: Deployment,
        rollout_id: str,
        touched: Sequence[str],
        failures: Mapping[str, str],
        reason: str,
    ) -> GroupOutcome:
        log.error("step_failed", reason=reason)
        changes = {c.host: c for c in plan.changes}
        batches: dict[str, tuple[dict[str, str], list[str]]] = {}
        no_previous: list[str] = []
        for host in touched:
            previous = {
                app: (changes[host].apps[app][0] if app in changes[host].apps else v)
                for app, v in group.apps.items()
            }
            if any(v is None for v in previous.values()):
                no_previous.append(host)
                continue
            key = fingerprint(previous)  # type: ignore[arg-type]
            batches.setdefault(key, (previous, []))[1].append(host)  # type: ignore[arg-type]

        rollback_failed: list[str] = []
        for index, (previous, hosts) in enumerate(batches.values(), start=1):
            step = planning.Step(index=index, percent=0, cohort_size=len(hosts), hosts=tuple(hosts))
            result = self._run_playbook(
                environment, group, "rollback", step, len(batches), previous, deployment, rollout_id
            )
            rollback_failed.extend(result.failed())
            back = [h for h in group.hosts if h.name in set(result.succeeded())]
            gate_failure = self._gates(
                environment, group, "rollback", step, back, previous, rollout_id
            )
            if gate_failure and gate_failure != "canceled":
                rollback_failed.extend(h.name for h in back)
                reason += f"; after rollback: {gate_failure}"

        restore = {
            app: changes[h].apps[app][0]
            for h in touched
            if h in changes
            for app in changes[h].apps
            if changes[h].apps[app][0] is not None
        }
        if no_previous:
            reason += (
                f"; no last good version to restore on {', '.join(sorted(no_previous))}"
                " (first deployment): left as is"
            )
        state = "rolled_back" if not rollback_failed else "failed"
        if rollback_failed:
            reason += f"; rollback failed on {', '.join(sorted(set(rollback_failed)))}"
        revert = self._revert(environment, group, deployment, restore, reason, rollout_id)
        self.store.finish_rollout(rollout_id, state, reason, self.clock())
        self.store.set_quarantine(
            QuarantineRecord(
                environment.name,
                group.name,
                fingerprint(group.apps),
                deployment.commit,
                rollout_id,
                reason,
                revert,
                self.clock(),
            )
        )
        log.error("rollout_rolled_back", state=state, reason=reason, revert=revert)
        return GroupOutcome(group.name, state, rollout_id, (), dict(failures), reason, revert)

    def _revert(
        self,
        environment: EnvironmentDesired,
        group: GroupDesired,
        deployment: Deployment,
        restore: Mapping[str, str],
        reason: str,
        rollout_id: str,
    ) -> str:
        if self.reverter is None:
            return "pending: no Git source to push to; revert the commit by hand"
        failed = {app: v for app, v in group.apps.items() if app in restore}
        if not restore:
            return "pending: no last good version to restore; revert the commit by hand"
        result = self.reverter.revert_rollout(
            RevertRequest(
                environment=environment.name,
                group=group.name,
                env_file=environment.source_file,
                offending_sha=deployment.commit,
                failed_versions=failed,
                restore_versions=dict(restore),
                reason=reason,
                rollout_id=rollout_id,
            )
        )
        detail = f"{result.kind}{f' {result.sha[:12]}' if result.sha else ''}: {result.detail}"
        if result.status in ("pushed", "noop"):
            return f"{result.status}: {detail}"
        return f"pending ({result.status}): {detail}"


def _failures(result: RunResult) -> dict[str, str]:
    return {h: result.hosts[h].message or str(result.hosts[h].status) for h in result.failed()}
