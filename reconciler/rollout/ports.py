"""What the rollout engine needs from the outside, as Protocols, and how it reports progress.

The engine is given ``Adapters``: the state store (``record.StateStore``), a playbook
``Runner`` (``edges.ansible``), a ``GateChecker`` (``edges.gates``), a ``Reverter`` (the Git
write-back, ``edges.git``), a ``Reporter``, an ``EventSink`` (``record.events``: the event
log; ``rollout.announcements`` says what a rollout tells it) and, with replicas, the
``LeaseCheck`` of the environment (asked right before the Git revert push, which no database
can fence). Only ``service.wiring`` builds the real ones; ``reconciler.testing.fakes`` has
small fakes that mypy checks against these Protocols.

``StopRequest`` is the cancel event of a rollout that also says why it stops: a newer commit
(``superseded``) or a daemon shutdown (``interrupted``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from reconciler.desired.messages import RevertRequest
from reconciler.desired.model import EnvironmentDesired, GroupDesired, Host
from reconciler.edges.ansible import Runner, RunResult
from reconciler.edges.gates import GateChecker, GateResult
from reconciler.edges.git import PushResult
from reconciler.plan.canary import Step
from reconciler.plan.outcomes import EnvironmentOutcome, GroupOutcome
from reconciler.record import EventSink, ObservedVersion, SilentSink, StateStore
from reconciler.source.refresh import DesiredSnapshot
from reconciler.states import GateCheckpoint, Phase, StopReason

__all__ = [
    "Adapters",
    "LeaseCheck",
    "ObserverPort",
    "Reporter",
    "Reverter",
    "SilentReporter",
    "SourceStage",
    "StopRequest",
    "VersionReader",
]


class SourceStage(Protocol):
    """The desired state in force (``source.refresh.DesiredSource`` is one)."""

    @property
    def current(self) -> DesiredSnapshot | None: ...

    def refresh(self, *, fetch: bool = True) -> DesiredSnapshot: ...

    def pinned(self, sha: str) -> AbstractContextManager[None]: ...


class Reverter(Protocol):
    """Pushes the revert commit of a rolled back group (``edges.git`` write-back)."""

    def revert_rollout(self, request: RevertRequest) -> PushResult: ...


class LeaseCheck(Protocol):
    """Whether this replica still holds the lease of the environment it rolls out.

    Asked right before an act the database cannot fence: the Git revert push of a rollout.
    False (lost, lapsed, or the database cannot confirm it): the act is not done; the lease's
    new holder resumes the rollout and reverts itself.
    """

    def confirm(self) -> bool: ...


class VersionReader(Protocol):
    """Reads a version over HTTP for ``observe: {http: ...}`` (``edges.gates.versions``)."""

    def read(self, url: str, *, timeout: float) -> tuple[bool, str, str]:
        """(answered, body, detail); answered False when nothing answered."""
        ...


class ObserverPort(Protocol):
    """Looks at what hosts run (``rollout.observation.Observer``)."""

    def observe(
        self,
        environment: EnvironmentDesired,
        group: GroupDesired,
        hosts: Sequence[Host],
        root: Path,
        *,
        cancel: threading.Event | None = None,
    ) -> list[ObservedVersion]: ...


class Reporter(Protocol):
    """Progress callbacks: the CLI draws them, the daemon's metrics count them."""

    def step_started(
        self, environment: str, group: str, phase: Phase, step: Step, total_steps: int
    ) -> None: ...

    def step_finished(
        self, environment: str, group: str, phase: Phase, step: Step, result: RunResult
    ) -> None: ...

    def bake_started(self, environment: str, group: str, step: Step, seconds: float) -> None: ...

    def gates_finished(
        self,
        environment: str,
        group: str,
        phase: Phase,
        step: Step,
        checkpoint: GateCheckpoint,
        results: Sequence[GateResult],
    ) -> None: ...

    def rollout_finished(
        self, environment: str, outcome: GroupOutcome, duration_s: float
    ) -> None: ...

    def environment_finished(self, outcome: EnvironmentOutcome, duration_s: float) -> None: ...


class SilentReporter:
    """A ``Reporter`` that reports nothing (base class for reporters that want a few calls)."""

    def step_started(
        self, environment: str, group: str, phase: Phase, step: Step, total_steps: int
    ) -> None:
        return None

    def step_finished(
        self, environment: str, group: str, phase: Phase, step: Step, result: RunResult
    ) -> None:
        return None

    def bake_started(self, environment: str, group: str, step: Step, seconds: float) -> None:
        return None

    def gates_finished(
        self,
        environment: str,
        group: str,
        phase: Phase,
        step: Step,
        checkpoint: GateCheckpoint,
        results: Sequence[GateResult],
    ) -> None:
        return None

    def rollout_finished(self, environment: str, outcome: GroupOutcome, duration_s: float) -> None:
        return None

    def environment_finished(self, outcome: EnvironmentOutcome, duration_s: float) -> None:
        return None


class StopRequest(threading.Event):
    """A cancel event that says why the rollout stops."""

    def __init__(self) -> None:
        super().__init__()
        self.reason = StopReason.SUPERSEDED

    def request(self, reason: StopReason = StopReason.SUPERSEDED) -> None:
        self.reason = reason
        self.set()


@dataclass(frozen=True)
class Adapters:
    """Everything a rollout talks to. ``reverter=None``: nothing to push to (reverts pend).
    ``lease=None``: no lease to check (one daemon: the state-dir flock owns everything)."""

    store: StateStore
    runner: Runner
    checker: GateChecker
    reverter: Reverter | None = None
    reporter: Reporter = field(default_factory=SilentReporter)
    clock: Callable[[], float] = time.time
    observer: ObserverPort | None = None
    events: EventSink = field(default_factory=SilentSink)
    lease: LeaseCheck | None = None
