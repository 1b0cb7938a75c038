"""Rollout progress for people: one line per event, each naming its environment/group.

A ``rollout.ports.Reporter`` used by ``reconciler sync`` in the foreground and by the demo.
Groups of one environment roll out in parallel, so every line starts with
``environment/group``; gate checks say which checkpoint they are (after the step, after the
bake, after a rollback). Lines only (no spinners), so output stays readable in CI logs.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from rich.console import Console
from rich.text import Text

from reconciler.edges.ansible import RunResult
from reconciler.edges.gates import GateResult
from reconciler.plan.canary import Step
from reconciler.plan.outcomes import GroupOutcome
from reconciler.rollout.ports import SilentReporter
from reconciler.states import GateCheckpoint, Phase

_CHECKPOINTS = {
    GateCheckpoint.AFTER_STEP: "after the step",
    GateCheckpoint.AFTER_BAKE: "after the bake",
    GateCheckpoint.AFTER_ROLLBACK: "after the rollback",
}


class ProgressReporter(SilentReporter):
    def __init__(self, console: Console) -> None:
        self.console = console
        self._lock = threading.Lock()

    def _line(self, environment: str, group: str, text: Text | str, style: str = "") -> None:
        with self._lock:
            self.console.print(
                Text(f"{environment}/{group} ", style="cyan") + Text(str(text), style=style),
                highlight=False,
            )

    def step_started(
        self, environment: str, group: str, phase: Phase, step: Step, total_steps: int
    ) -> None:
        if phase is Phase.DEPLOY:
            text = (
                f"deploy step {step.index}/{total_steps} ({step.percent}%): deploying to "
                f"{len(step.hosts)} host(s) {', '.join(step.hosts)}"
            )
            self._line(environment, group, text)
        else:
            text = (
                f"rollback step {step.index}/{total_steps}: rolling back "
                f"{len(step.hosts)} host(s) {', '.join(step.hosts)}"
            )
            self._line(environment, group, text, "yellow")

    def step_finished(
        self, environment: str, group: str, phase: Phase, step: Step, result: RunResult
    ) -> None:
        failed = result.failed()
        self._line(
            environment,
            group,
            f"  {phase} step {step.index}: {result.outcome} in {result.duration_s:.1f}s, "
            f"{len(result.succeeded())} ok, {len(failed)} failed",
            "red" if failed else "green",
        )
        for host in failed:
            self._line(environment, group, f"    {host}: {result.hosts[host].message}", "red")

    def bake_started(self, environment: str, group: str, step: Step, seconds: float) -> None:
        self._line(environment, group, f"  baking {seconds:g}s after step {step.index}")

    def gates_finished(
        self,
        environment: str,
        group: str,
        phase: Phase,
        step: Step,
        checkpoint: GateCheckpoint,
        results: Sequence[GateResult],
    ) -> None:
        passed = sum(r.passed for r in results)
        self._line(
            environment,
            group,
            f"  health gates {_CHECKPOINTS[checkpoint]} (step {step.index}): "
            f"{passed}/{len(results)} passed",
            "green" if passed == len(results) else "red",
        )
        for result in results:
            if not result.passed:
                where = f" {result.host}" if result.host else ""
                self._line(environment, group, f"    {result.gate}{where}: {result.detail}", "red")

    def rollout_finished(self, environment: str, outcome: GroupOutcome, duration_s: float) -> None:
        text = f"rollout {outcome.state} in {duration_s:.1f}s"
        if outcome.reason:
            text += f": {outcome.reason}"
        if outcome.revert is not None:
            text += f"; revert {outcome.revert}"
        self._line(environment, outcome.group, text, "" if outcome.state == "succeeded" else "bold")
