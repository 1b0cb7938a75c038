"""The record types: what the state store keeps, as frozen dataclasses.

Contract:
* Field names and order are stable (callers construct records positionally).
* Every state is a ``StrEnum`` of ``reconciler.states``. A field typed as one also accepts its
  text on construction (``"running"``) and always holds the enum member afterwards; an unknown
  value raises ``ValueError`` at construction, before anything reaches a backend. Because a
  ``StrEnum`` equals its text, ``record.state == "succeeded"`` keeps working.
* ``EnvironmentStatus.last_result`` is ``None`` for an environment that was never reconciled
  (the first release stored ``''``; backends map it to ``None`` on read).
* Timestamps are seconds since the epoch, supplied by the caller: the store has no clock.
* JSON-shaped fields (``summary``, ``apps``, ``host_results``, ``gate_results``, an event's
  ``details``) hold plain JSON values and come back equal, not identical.
* ``Event.id`` is ``None`` until the store appends it; then a positive integer greater than
  the id of every event appended before it.

Pure data: no I/O, no backend knowledge.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from reconciler.states import (
    EnvironmentResult,
    EventKind,
    ObservationStatus,
    Phase,
    RolloutState,
    RolloutTrigger,
    Severity,
    StepState,
)

__all__ = [
    "DeployedVersion",
    "DriftMark",
    "EnvironmentStatus",
    "Event",
    "Lease",
    "ObservedVersion",
    "QuarantineRecord",
    "Replica",
    "RolloutRecord",
    "RunRecord",
    "StepRecord",
]


def _coerce(record: object, name: str, enum: type[StrEnum]) -> None:
    """Replace the text in a frozen field by its enum member (ValueError when unknown)."""
    object.__setattr__(record, name, enum(getattr(record, name)))


@dataclass(frozen=True)
class DeployedVersion:
    """The version of an app last deployed successfully on a host (only real successes)."""

    environment: str
    host: str
    app: str
    version: str
    group: str
    commit: str | None
    rollout_id: str | None
    deployed_at: float


@dataclass(frozen=True)
class RunRecord:
    """One reconcile run of an environment; ``result`` is ``RUNNING`` until it finishes."""

    id: str
    environment: str
    commit: str | None
    started_at: float
    finished_at: float | None
    result: EnvironmentResult
    summary: Mapping[str, Any]

    def __post_init__(self) -> None:
        _coerce(self, "result", EnvironmentResult)


@dataclass(frozen=True)
class RolloutRecord:
    """A journalled rollout of one group to ``apps`` (app -> version)."""

    id: str
    run_id: str
    environment: str
    group: str
    commit: str | None
    apps: Mapping[str, str]
    state: RolloutState
    reason: str
    started_at: float
    finished_at: float | None
    trigger: RolloutTrigger = RolloutTrigger.CHANGE

    def __post_init__(self) -> None:
        _coerce(self, "state", RolloutState)
        _coerce(self, "trigger", RolloutTrigger)


@dataclass(frozen=True)
class StepRecord:
    """One step of a rollout, keyed by (rollout_id, phase, index); written before it runs."""

    rollout_id: str
    phase: Phase
    index: int
    percent: int
    hosts: tuple[str, ...]
    state: StepState
    host_results: Mapping[str, Any]
    gate_results: Sequence[Any]
    run_dir: str
    started_at: float
    finished_at: float | None
    attempts: Sequence[Any] = ()  # one entry per playbook attempt (retries of unreachable)
    bake_until: float | None = None  # when the bake after this step ends (None: no bake yet)

    def __post_init__(self) -> None:
        _coerce(self, "phase", Phase)
        _coerce(self, "state", StepState)


@dataclass(frozen=True)
class ObservedVersion:
    """What a host reported of an app, and when (``version`` None unless ``status`` is OK)."""

    environment: str
    host: str
    app: str
    version: str | None
    status: ObservationStatus
    detail: str
    observed_at: float

    def __post_init__(self) -> None:
        _coerce(self, "status", ObservationStatus)


@dataclass(frozen=True)
class DriftMark:
    """The history of one host and app's drift: since when it is unresolved, when it was
    last healed, and whether it drifted again too soon after (``flapping``: not healed
    again until an operator acts)."""

    environment: str
    host: str
    app: str
    since: float | None  # unresolved drift since; None while in sync
    healed_at: float | None
    flapping: bool


@dataclass(frozen=True)
class QuarantineRecord:
    """Desired versions of a group whose rollout failed: never retried automatically."""

    environment: str
    group: str
    fingerprint: str
    commit: str | None
    rollout_id: str | None
    reason: str
    revert: str
    created_at: float


@dataclass(frozen=True)
class EnvironmentStatus:
    """Per environment facts; ``last_result`` is None when it was never reconciled."""

    environment: str
    suspended: bool
    last_attempted_commit: str | None
    last_applied_commit: str | None
    last_result: EnvironmentResult | None
    last_error: str
    updated_at: float | None

    def __post_init__(self) -> None:
        if self.last_result is not None:
            _coerce(self, "last_result", EnvironmentResult)

    @classmethod
    def unknown(cls, environment: str) -> EnvironmentStatus:
        """The status of an environment the store has no row for."""
        return cls(environment, False, None, None, None, "", None)


@dataclass(frozen=True)
class Event:
    """One entry of the event log: what happened, where, and why, in one line and as data.

    ``summary`` is one human line (a chat message's first line); ``details`` holds the
    structure (apps and versions from -> to, step k/n and hosts, the gate, host and what it
    saw, the revert commit).
    """

    id: int | None
    at: float
    kind: EventKind
    severity: Severity
    summary: str
    environment: str | None = None
    group: str | None = None
    rollout_id: str | None = None
    commit: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _coerce(self, "kind", EventKind)
        _coerce(self, "severity", Severity)

    def as_dict(self) -> dict[str, Any]:
        """The event as plain JSON values (the API's and the stream's shape)."""
        return {
            "id": self.id,
            "at": self.at,
            "kind": str(self.kind),
            "severity": str(self.severity),
            "summary": self.summary,
            "environment": self.environment,
            "group": self.group,
            "rollout_id": self.rollout_id,
            "commit": self.commit,
            "details": dict(self.details),
        }


@dataclass(frozen=True)
class Lease:
    """An environment leased to a replica: ``token`` fences its writes (strictly increasing
    over every lease ever granted); ``expires_at`` is on the database's clock (epoch seconds),
    ``live`` says whether it had not expired when read."""

    environment: str
    holder: str
    token: int
    expires_at: float
    live: bool = True


@dataclass(frozen=True)
class Replica:
    """A daemon sharing the database: its name, where its API listens (for people and for
    forwarding), and until when its last heartbeat counts (the database's clock)."""

    replica: str
    address: str
    expires_at: float
