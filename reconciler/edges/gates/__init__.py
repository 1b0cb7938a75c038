"""The gates edge (TEMPORARY shim until the per-kind split lands)."""

from typing import Any, Protocol

from reconciler.edges.gates.checker import GateResult, GateTarget, MissingPlaceholder


class GateChecker(Protocol):
    def evaluate(self, checks: Any, targets: Any, **kwargs: Any) -> list[GateResult]: ...


__all__ = ["GateChecker", "GateResult", "GateTarget", "MissingPlaceholder"]
