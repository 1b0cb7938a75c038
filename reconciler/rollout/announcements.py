"""What a rollout tells the event log: one function per transition, summary and details.

Contract: each function emits exactly one event through ``Adapters.events`` (a
``record.EventSink``; it never raises nor waits) with the rollout's environment, group, id and
commit, a one-line summary a chat message can lead with, and details that hold the structure:

* ``versions``: per app ``{"from": [...recorded before...], "to": desired}`` (what changes);
* steps: ``step`` k of ``steps`` (n), ``percent``, the step's ``hosts`` and which
  ``succeeded`` or ``failed`` (host -> message);
* gates: ``gate``, ``kind``, ``host``, ``app``, ``version`` and ``detail`` (what it saw) of the
  first failure, with every failed result;
* ends: ``state``, ``reason``, ``changed`` and ``failed`` hosts; reverts: the ``revert_commit``,
  the ``offending_commit``, what it restores.

Pure formatting plus one ``emit`` call: no I/O of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.edges.ansible import RunResult
from reconciler.edges.gates import GateResult
from reconciler.plan.canary import GroupPlan, Step
from reconciler.plan.outcomes import RevertOutcome
from reconciler.record.events import EventSink
from reconciler.states import (
    EventKind,
    GateCheckpoint,
    Phase,
    PushStatus,
    RolloutState,
    RolloutTrigger,
)

Versions = Mapping[str, Mapping[str, Any]]

_ENDINGS = {
    RolloutState.SUCCEEDED: EventKind.ROLLOUT_SUCCEEDED,
    RolloutState.DEGRADED: EventKind.ROLLOUT_DEGRADED,
    RolloutState.ROLLED_BACK: EventKind.ROLLOUT_ROLLED_BACK,
    RolloutState.FAILED: EventKind.ROLLOUT_FAILED,
    RolloutState.SUPERSEDED: EventKind.ROLLOUT_SUPERSEDED,
    RolloutState.INTERRUPTED: EventKind.ROLLOUT_INTERRUPTED,
}


def versions_of(plan: GroupPlan) -> dict[str, dict[str, Any]]:
    """Per app of the group: the versions its changing hosts had (sorted, None: never
    deployed) and the one they get."""
    out: dict[str, dict[str, Any]] = {}
    for app, desired in plan.apps.items():
        before = {c.apps[app][0] for c in plan.changes if app in c.apps}
        out[app] = {"from": sorted(before, key=lambda v: (v is None, v or "")), "to": desired}
    return out


def change_text(versions: Versions, *, back: bool = False) -> str:
    """``shop 1.0.0 -> 1.2.0`` (``back``: ``shop 1.2.0 -> 1.0.0``), apps joined by ``, ``."""
    parts = []
    for app, v in versions.items():
        before = "/".join(x or "none" for x in v.get("from") or []) or "none"
        parts.append(f"{app} {v['to']} -> {before}" if back else f"{app} {before} -> {v['to']}")
    return ", ".join(parts)


def _hosts(hosts: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(hosts[:limit])
    return shown + (f" (+{len(hosts) - limit} more)" if len(hosts) > limit else "")


@dataclass(frozen=True)
class Teller:
    """Emits the events of one rollout (``where`` is ``environment/group``)."""

    sink: EventSink
    environment: str
    group: str
    rollout_id: str
    commit: str
    trigger: RolloutTrigger

    @property
    def where(self) -> str:
        return f"{self.environment}/{self.group}"

    def _emit(self, kind: EventKind, summary: str, details: Mapping[str, Any]) -> None:
        self.sink.emit(
            kind,
            summary=f"{self.where}: {summary}",
            environment=self.environment,
            group=self.group,
            rollout_id=self.rollout_id,
            commit=self.commit,
            details={"trigger": str(self.trigger), **details},
        )

    def started(self, plan: GroupPlan, versions: Versions) -> None:
        hosts = list(plan.hosts_to_change)
        verb = (
            "self-heal redeploying" if self.trigger is RolloutTrigger.SELF_HEAL else "rolling out"
        )
        steps = [
            {"step": s.index, "percent": s.percent, "hosts": list(s.hosts)} for s in plan.steps
        ]
        self._emit(
            EventKind.ROLLOUT_STARTED,
            f"{verb} {change_text(versions)} on {len(hosts)} host(s) in {len(steps)} step(s)",
            {"versions": versions, "hosts": hosts, "steps": steps},
        )

    def step_finished(
        self, phase: Phase, step: Step, total: int, result: RunResult, apps: Mapping[str, str]
    ) -> None:
        succeeded, failed = list(result.succeeded()), result.failed()
        share = f" ({step.percent}%)" if phase is Phase.DEPLOY else ""
        text = f"{phase} step {step.index}/{total}{share} finished on {_hosts(list(step.hosts))}"
        text += f": {len(succeeded)} ok" + (f", failed: {_hosts(failed)}" if failed else "")
        self._emit(
            EventKind.STEP_FINISHED,
            text,
            {
                "phase": str(phase),
                "step": step.index,
                "steps": total,
                "percent": step.percent,
                "hosts": list(step.hosts),
                "apps": dict(apps),
                "succeeded": succeeded,
                "failed": {
                    h: result.hosts[h].message or str(result.hosts[h].status) for h in failed
                },
                "outcome": str(result.outcome),
                "seconds": round(result.duration_s, 2),
            },
        )

    def gate_failed(
        self,
        phase: Phase,
        step: Step,
        total: int,
        checkpoint: GateCheckpoint,
        results: Sequence[GateResult],
        apps: Mapping[str, str],
    ) -> None:
        failed = [r for r in results if not r.passed]
        if not failed:
            return
        first = failed[0]
        where = f" on {first.host}" if first.host else ""
        when = f"{checkpoint.replace('_', ' ')} ({phase} step {step.index}/{total})"
        more = f" (+{len(failed) - 1} more)" if len(failed) > 1 else ""
        self._emit(
            EventKind.GATE_FAILED,
            f"gate {first.gate} failed{where} {when}: {first.detail}{more}",
            {
                "phase": str(phase),
                "step": step.index,
                "steps": total,
                "checkpoint": str(checkpoint),
                "gate": first.gate,
                "kind": first.kind,
                "host": first.host,
                "app": first.app,
                "version": apps.get(first.app) if first.app else None,
                "detail": first.detail,
                "failed": [r.as_dict() for r in failed[:20]],
                "passed": len(results) - len(failed),
            },
        )

    def finished(
        self,
        state: RolloutState,
        reason: str,
        versions: Versions,
        changed: Sequence[str],
        failed: Mapping[str, str],
        seconds: float,
    ) -> None:
        change = change_text(versions)
        texts = {
            RolloutState.SUCCEEDED: f"{change} rolled out to {len(changed)} host(s)",
            RolloutState.DEGRADED: f"{change} rolled out, degraded: {reason}",
            RolloutState.ROLLED_BACK: f"{change_text(versions, back=True)} rolled back: {reason}",
            RolloutState.FAILED: f"rollout of {change} failed: {reason}",
            RolloutState.SUPERSEDED: f"rollout of {change} superseded: {reason}",
            RolloutState.INTERRUPTED: f"rollout of {change} interrupted: {reason}",
        }
        if state not in _ENDINGS:
            return
        self._emit(
            _ENDINGS[state],
            texts[state],
            {
                "state": str(state),
                "reason": reason,
                "versions": versions,
                "changed": list(changed),
                "failed": dict(failed),
                "seconds": round(seconds, 2),
            },
        )

    def reverted(
        self,
        revert: RevertOutcome,
        restore: Mapping[str, str],
        failed_versions: Mapping[str, str],
        rolled_back: bool,
    ) -> None:
        back = ", ".join(f"{a} back to {v}" for a, v in restore.items()) or "nothing to restore"
        details = {
            "status": str(revert.status) if revert.status else None,
            "revert_commit": revert.sha,
            "offending_commit": self.commit,
            "restore": dict(restore),
            "failed_versions": dict(failed_versions),
            "detail": revert.detail,
            "rolled_back": rolled_back,
        }
        if revert.status is PushStatus.PUSHED and revert.sha:
            text = f"revert {revert.sha[:12]} pushed ({back}; reverts {self.commit[:12]})"
            self._emit(EventKind.REVERT_PUSHED, text, details)
        elif revert.status in (None, PushStatus.DISABLED):
            text = f"revert of {self.commit[:12]} awaits a human ({back}): {revert.detail}"
            self._emit(EventKind.REVERT_AWAITING_HUMAN, text, details)
        elif revert.status in (PushStatus.CONFLICT, PushStatus.ERROR):
            text = f"revert push of {self.commit[:12]} failed ({revert.status}): {revert.detail}"
            self._emit(EventKind.REVERT_PUSH_FAILED, text, details)

    def quarantined(self, apps: Mapping[str, str], fingerprint: str, reason: str) -> None:
        shown = ", ".join(f"{a}={v}" for a, v in apps.items())
        self._emit(
            EventKind.QUARANTINE_SET,
            f"{shown} quarantined: not retried until a commit changes these versions",
            {"apps": dict(apps), "fingerprint": fingerprint, "reason": reason},
        )
