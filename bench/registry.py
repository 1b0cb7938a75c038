"""The benchmark registry: a name -> function returning ``Row`` figures.

A benchmark is a function ``(Context) -> list[Row]`` decorated with ``@register(...)`` in a module
listed in ``MODULES`` (import order is run order: a benchmark may read the rows of those run
before it through ``Context.rows``). Rows carry medians of several repetitions with min/max, or
figures derived from them (``kind`` says which); nothing here asserts on timings.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Benchmark modules, in run order. Add a new module here after writing it.
MODULES: tuple[str, ...] = (
    "bench.idle_cycle",
    "bench.ansible_pull",
    "bench.observation",
    "bench.plan_diff",
    "bench.rollback_latency",
    "bench.daemon",
    "bench.ssh_rollout",
    "bench.parallel_groups",
    "bench.notify_delay",
    "bench.web_page",
    "bench.store",
    "bench.replicas",
)

MEASURED, DERIVED, EXTRAPOLATED, SINGLE = "measured", "derived", "extrapolated", "single run"


@dataclass(frozen=True)
class Row:
    """One figure: the median of ``runs`` samples (with min/max), or a derived value."""

    key: str  # stable id that docs and other benchmarks quote, e.g. "idle.warm.1000"
    case: str  # human label
    value: float
    unit: str  # "s", "MiB", "%", "x", "rows"
    low: float | None = None
    high: float | None = None
    runs: int = 1
    kind: str = MEASURED
    note: str = ""
    detail: bool = False  # printed with --details only; always in the JSON

    @classmethod
    def of(
        cls,
        key: str,
        case: str,
        samples: Sequence[float],
        unit: str = "s",
        note: str = "",
        *,
        detail: bool = False,
    ) -> Row:
        """Median, min and max of ``samples`` (a single sample is marked as such)."""
        if not samples:
            raise ValueError(f"{key}: no samples")
        return cls(
            key,
            case,
            statistics.median(samples),
            unit,
            min(samples),
            max(samples),
            len(samples),
            MEASURED if len(samples) > 1 else SINGLE,
            note,
            detail,
        )

    @property
    def spread(self) -> float | None:
        """(max - min) / median, or None without a range."""
        if self.low is None or self.high is None or not self.value or self.runs < 2:
            return None
        return (self.high - self.low) / abs(self.value)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "spread": self.spread}


@dataclass
class Context:
    """What a benchmark gets: the mode, a scratch directory, rows of earlier benchmarks."""

    quick: bool
    workdir: Path
    results: dict[str, list[Row]] = field(default_factory=dict)

    def reps(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def row(self, key: str) -> Row | None:
        """A row of a benchmark run earlier in this invocation, by key."""
        return next((r for rows in self.results.values() for r in rows if r.key == key), None)


@dataclass(frozen=True)
class Benchmark:
    name: str
    func: Callable[[Context], list[Row]]
    summary: str
    in_quick: bool  # part of ``--quick`` runs (always runnable with ``--only``)


BENCHMARKS: dict[str, Benchmark] = {}


def register(
    name: str, summary: str, *, in_quick: bool = True
) -> Callable[[Callable[[Context], list[Row]]], Callable[[Context], list[Row]]]:
    """Decorator: add ``func`` to the registry under ``name``."""

    def add(func: Callable[[Context], list[Row]]) -> Callable[[Context], list[Row]]:
        BENCHMARKS[name] = Benchmark(name, func, summary, in_quick)
        return func

    return add
