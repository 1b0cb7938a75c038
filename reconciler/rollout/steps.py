"""One journalled step of a rollout: run the playbook on the step's hosts, retry the hosts it
could not reach, record what succeeded, and look at what the hosts run afterwards.

Contract (``StepRunner.play(phase, step, total, apps)``):
* The step is journalled ``running`` before anything runs, again (still ``running``, with the
  attempts so far) before each retry waits, and when it ends with the merged per-host
  results, the run dir of its last attempt and every attempt (hosts, which were unreachable,
  outcome, times): ``history`` shows them, a retry that is still waiting too.
* Hosts the playbook could not reach (``unreachable``; a failing task is a real failure and is
  never retried) are run again, alone, up to ``rollout.retries.attempts`` tries in all, after
  waits from ``backoff`` doubling to ``max_backoff`` with jitter (``support.backoff``). A stop
  request (newer commit, shutdown) ends the waiting; an abort (shutdown grace over) ends the
  step as the runner left it.
* Every host whose playbook succeeded (in any attempt) is recorded as deployed at once.
* ``step_finished`` is told (``tell``, ``rollout.announcements``) once the step is journalled.
* ``observe(hosts)`` records what those hosts run (``rollout.observation``), when an observer
  is configured: the hosts whose deploy in this step succeeded and whose shipped role's
  helper reported the group's facts in the run's events (``DeployReports``) are recorded from
  that report; the others are looked at. In the background: one look at a time, in the order
  asked, so it overlaps the next step instead of adding its wall time; each look is recorded
  when it ends (reports in the same order, so an older look never overwrites a newer report).
  ``settle()`` waits for every look asked so far (the group rollout settles before it records
  its end, so a finished rollout's hosts are observed). A failing observation never
  fails a rollout; an abort kills a running look (nothing recorded for it).
"""

from __future__ import annotations

import contextvars
import dataclasses
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import structlog

from reconciler.desired.model import EnvironmentDesired, GroupDesired, Host
from reconciler.edges.ansible import RunResult
from reconciler.edges.ansible import observe as ansible_observe
from reconciler.plan import policy
from reconciler.plan.canary import Step
from reconciler.record import DeployedVersion, ObservedVersion, StepRecord
from reconciler.rollout import announcements, observation, playbooks
from reconciler.rollout.playbooks import Deployment
from reconciler.rollout.ports import Adapters, StopRequest
from reconciler.settings import ExecutionSettings
from reconciler.states import HostStatus, Phase, RunOutcome, StepState
from reconciler.support.backoff import Backoff

log = structlog.get_logger(__name__)


def merge(first: RunResult, retry: RunResult) -> RunResult:
    """``first`` with the hosts ``retry`` ran replaced by their new results."""
    hosts = {**first.hosts, **retry.hosts}
    ok = all(r.status is HostStatus.OK for r in hosts.values())
    if retry.outcome is RunOutcome.CANCELED:
        outcome = RunOutcome.CANCELED
    else:
        outcome = RunOutcome.SUCCESSFUL if ok else RunOutcome.FAILED
    return dataclasses.replace(
        retry,
        outcome=outcome,
        hosts=hosts,
        duration_s=first.duration_s + retry.duration_s,
        message="" if ok else retry.message or first.message,
    )


class StepRunner:
    def __init__(
        self,
        adapters: Adapters,
        execution: ExecutionSettings,
        environment: EnvironmentDesired,
        group: GroupDesired,
        deployment: Deployment,
        rollout_id: str,
        *,
        cancel: StopRequest,
        abort: threading.Event | None,
        tell: announcements.Teller | None = None,
    ) -> None:
        self.a = adapters
        self.tell = tell
        self.execution = execution
        self.environment = environment
        self.group = group
        self.deployment = deployment
        self.rollout_id = rollout_id
        self.cancel = cancel
        self.abort = abort
        self._looks: ThreadPoolExecutor | None = None
        self._pending: list[Future[None]] = []
        # per host that succeeded in this step: when its run ended, the facts the role reported
        self._reports: dict[str, tuple[float, dict[str, Any]]] = {}

    def play(self, phase: Phase, step: Step, total: int, apps: Mapping[str, str]) -> RunResult:
        store, reporter = self.a.store, self.a.reporter
        intent = StepRecord(
            self.rollout_id, phase, step.index, step.percent, step.hosts, StepState.RUNNING,
            {}, [], "", self.a.clock(), None,
        )  # fmt: skip
        store.journal_step(intent)
        reporter.step_started(self.environment.name, self.group.name, phase, step, total)
        log.info("step_started", phase=str(phase), step=step.index, hosts=list(step.hosts))
        attempts: list[dict[str, Any]] = []
        self._reports = {}
        result = self._attempt(phase, step, apps, step.hosts, attempts)
        retries = self.group.rollout.retries
        waits = Backoff(retries.backoff_s, retries.max_backoff_s, jitter=0.5).waits()
        while len(attempts) < retries.attempts and result.outcome is not RunOutcome.CANCELED:
            again = policy.unreachable({h: r.status for h, r in result.hosts.items()})
            if not again or self.cancel.is_set():
                break
            wait = next(waits)
            store.journal_step(dataclasses.replace(intent, attempts=list(attempts)))
            log.info("step_retry", step=step.index, hosts=list(again), in_s=round(wait, 1))
            if self.cancel.wait(wait):
                break
            retry = self._attempt(phase, step, apps, again, attempts)
            result = merge(result, retry)
        now = self.a.clock()
        if result.outcome is RunOutcome.CANCELED:
            state = StepState.INTERRUPTED
        else:
            state = StepState.FAILED if result.failed() else StepState.SUCCEEDED
        store.journal_step(
            dataclasses.replace(
                intent,
                state=state,
                host_results={
                    h: {"status": str(r.status), "changed": r.changed, "message": r.message}
                    for h, r in result.hosts.items()
                },
                run_dir=str(result.run_dir),
                finished_at=now,
                attempts=attempts,
            )
        )
        reporter.step_finished(self.environment.name, self.group.name, phase, step, result)
        if self.tell is not None:
            self.tell.step_finished(phase, step, total, result, apps)
        log.info(
            "step_finished",
            phase=str(phase),
            step=step.index,
            outcome=str(result.outcome),
            succeeded=len(result.succeeded()),
            failed=len(result.failed()),
            attempts=len(attempts),
            seconds=round(result.duration_s, 2),
        )
        return result

    def _attempt(
        self,
        phase: Phase,
        step: Step,
        apps: Mapping[str, str],
        hosts: Sequence[str],
        attempts: list[dict[str, Any]],
    ) -> RunResult:
        started = self.a.clock()
        run = playbooks.playbook_run(
            self.execution, self.environment, self.group, self.deployment, self.rollout_id,
            phase, dataclasses.replace(step, hosts=tuple(hosts)), apps,
        )  # fmt: skip
        reports = ansible_observe.DeployReports()
        result = self.a.runner.run(run, cancel=self.abort, on_event=reports)
        finished = self.a.clock()
        for host in result.succeeded():
            self._reports[host] = (finished, reports.facts(host))
        self.a.store.record_deployed(
            [
                DeployedVersion(
                    self.environment.name,
                    host,
                    app,
                    version,
                    self.group.name,
                    self.deployment.commit,
                    self.rollout_id,
                    finished,
                )
                for host in result.succeeded()
                for app, version in apps.items()
            ]
        )
        attempts.append(
            {
                "attempt": len(attempts) + 1,
                "hosts": list(hosts),
                "unreachable": [
                    h for h, r in result.hosts.items() if r.status is HostStatus.UNREACHABLE
                ],
                "outcome": str(result.outcome),
                "started_at": started,
                "finished_at": finished,
            }
        )
        return result

    def observe(self, hosts: Sequence[Host]) -> None:
        if self.a.observer is None or not hosts:
            return
        if self._looks is None:
            self._looks = ThreadPoolExecutor(max_workers=1, thread_name_prefix="observe")
        found, rest = observation.reported(self.environment, self.group, hosts, self._reports)
        context = contextvars.copy_context()  # the rollout's log context, in the look's logs
        self._pending.append(self._looks.submit(context.run, self._look, found, rest))

    def settle(self) -> None:
        """Wait for every look asked so far (see the module docstring)."""
        for pending in self._pending:
            pending.result()
        self._pending.clear()
        if self._looks is not None:
            self._looks.shutdown(wait=True)
            self._looks = None

    def _look(self, reported: list[ObservedVersion], hosts: Sequence[Host]) -> None:
        observer = self.a.observer
        assert observer is not None
        try:
            if reported:
                self.a.store.record_observed(reported)
            if hosts:
                found = observer.observe(
                    self.environment, self.group, hosts, self.deployment.root, cancel=self.abort
                )
                self.a.store.record_observed(found)
        except Exception:  # looking must never fail a rollout
            log.exception("observation_failed", hosts=[h.name for h in hosts])
