"""Health gates: the public surface (types and the ``GateChecker`` Protocol), nothing concrete.

The rollout engine imports this package for these names only; importing it loads neither httpx
nor psutil nor any gate kind (``reconciler.edges.gates.checker`` holds the adapter,
``HealthChecker``, which only ``service.wiring`` should need).

* ``GateTarget``: one (host, app) a gate is checked for, with the version that should run.
* ``GateResult``: one evaluation (a check on the targets whose rendering was identical, after
  its retries). ``as_dict()`` is what the store journals and the API/CLI read back (``gate``,
  ``host``, ``passed``, ``detail``, ...); its keys are the dataclass fields, unchanged.
  ``verdict`` is the same result as a :class:`reconciler.states.GateVerdict`.
* ``MissingPlaceholder``: a template needs a value this target does not have (``{port}``).
* ``GateChecker``: ``evaluate(checks, targets, *, environment, group, cancel)`` returns one
  result per evaluation, in check order then in order of first target, and never raises for a
  failing target (see ``reconciler.edges.gates.checker`` for the whole contract).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from reconciler.desired.model import Host
from reconciler.desired.schema import HealthCheck
from reconciler.states import GateVerdict

__all__ = ["GateChecker", "GateResult", "GateTarget", "MissingPlaceholder"]


@dataclass(frozen=True)
class GateTarget:
    """One (host, app) a gate is checked for, with the version that should run there."""

    host: Host
    app: str
    version: str


@dataclass(frozen=True)
class GateResult:
    """One gate evaluation, after its retries."""

    gate: str  # HealthCheck.label
    kind: str  # http|tcp|command|prometheus
    host: str | None  # Host.name; None when the check does not depend on one host
    app: str | None  # None when the check does not depend on one app
    passed: bool
    inconclusive: bool  # failed closed: the last attempt saw no data (prometheus: empty/NaN)
    attempts: int
    detail: str
    duration_s: float

    @property
    def verdict(self) -> GateVerdict:
        if self.passed:
            return GateVerdict.PASSED
        if self.inconclusive:
            return GateVerdict.INCONCLUSIVE
        return GateVerdict.FAILED

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["duration_s"] = round(self.duration_s, 3)
        return data


class MissingPlaceholder(ValueError):
    """A template needs a value that this target does not have (e.g. ``{port}``)."""


class GateChecker(Protocol):
    """Evaluates health checks against rollout targets (``HealthChecker``, test fakes)."""

    def evaluate(
        self,
        checks: Sequence[HealthCheck],
        targets: Sequence[GateTarget],
        *,
        environment: str = "",
        group: str = "",
        cancel: threading.Event | None = None,
    ) -> list[GateResult]: ...
