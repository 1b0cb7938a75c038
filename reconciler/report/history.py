"""The history read model: rollouts with their journalled steps, host and gate results.

Rendered by ``GET /api/v1/rollouts[/{id}]``, ``reconciler history`` (from the daemon's JSON or
from the store) and the web page: one shape. A step's ``hosts`` are the hosts that step itself
changed (per step, not cumulative); ``percent`` is the step's cumulative share of the group.
A rollout's ``trigger`` says why it ran (``change``: a commit; ``self_heal``: out-of-band hosts
redeployed); a step's ``attempts`` are its playbook runs, one per try of the hosts it could not
reach (``attempt``, ``hosts``, ``unreachable``, ``outcome``, ``started_at``, ``finished_at``).
``revert`` is what became of the revert commit of a rolled back rollout (pushed with its sha,
or pending a human), as its run summarised it; None while the run goes on or when none was due.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from reconciler.record import RolloutRecord, RunRecord, StepRecord


class Step(BaseModel):
    """One journalled step; gate results carry their ``checkpoint``."""

    phase: str
    index: int
    percent: int
    hosts: list[str]
    state: str
    host_results: dict[str, Any]
    gate_results: list[Any]
    started_at: float
    finished_at: float | None
    attempts: list[Any] = []
    bake_until: float | None = None


class Rollout(BaseModel):
    id: str
    environment: str
    group: str
    commit: str | None
    apps: dict[str, str]
    state: str
    reason: str
    started_at: float
    finished_at: float | None
    trigger: str = "change"
    revert: str | None = None
    steps: list[Step] | None = None


def revert_of(record: RolloutRecord, run: RunRecord | None) -> str | None:
    """The revert text the rollout's run summarised for its group, if any."""
    group = run.summary.get(record.group) if run is not None else None
    revert = group.get("revert") if isinstance(group, dict) else None
    return revert if isinstance(revert, str) and revert else None


def rollout_view(
    record: RolloutRecord, steps: list[StepRecord] | None = None, run: RunRecord | None = None
) -> Rollout:
    return Rollout(
        id=record.id,
        environment=record.environment,
        group=record.group,
        commit=record.commit,
        apps=dict(record.apps),
        state=str(record.state),
        reason=record.reason,
        started_at=record.started_at,
        finished_at=record.finished_at,
        trigger=str(record.trigger),
        revert=revert_of(record, run),
        steps=None
        if steps is None
        else [
            Step(
                phase=str(s.phase),
                index=s.index,
                percent=s.percent,
                hosts=list(s.hosts),
                state=str(s.state),
                host_results=dict(s.host_results),
                gate_results=list(s.gate_results),
                started_at=s.started_at,
                finished_at=s.finished_at,
                attempts=list(s.attempts),
                bake_until=s.bake_until,
            )
            for s in steps
        ],
    )
