"""Prometheus metrics (prometheus-client), names as in the product contract.

Two kinds, one registry per daemon:
* Gauges are computed at scrape time from the desired state in force and the state store
  (``StateCollector``), so they always equal what ``status``/``diff`` report.
* Counters and histograms count events as they happen: playbook runs and gate results through
  the ``rollout.Reporter`` callbacks, rollouts/reverts/durations after each environment
  reconcile, webhooks as they arrive. They start at zero with each daemon process.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from reconciler import __version__
from reconciler.edges.ansible.runner import RunResult
from reconciler.edges.gates.checker import GateResult
from reconciler.plan import canary as planning
from reconciler.record import RolloutRecord, StateStore
from reconciler.rollout.reconciler import (
    META_LAST_FETCH,
    META_LAST_SUCCESS,
    META_PROBLEMS,
    META_SOURCE_ERROR,
    DesiredSnapshot,
    EnvironmentOutcome,
    recorded_versions,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
ROLLOUT_RESULTS = ("succeeded", "rolled_back", "failed", "superseded", "interrupted")


def _gauge(name: str, doc: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"reconciler_{name}", doc, labels=list(labels))


class StateCollector(Collector):
    """Gauges derived from the desired state in force and the store, at scrape time."""

    def __init__(self, store: StateStore, snapshot: Callable[[], DesiredSnapshot | None]) -> None:
        self.store = store
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        yield from self._source()
        statuses = {s.environment: s for s in self.store.environment_statuses()}
        suspended = _gauge("suspended", "1 when the environment is suspended.", ["environment"])
        success = _gauge(
            "last_successful_reconcile_timestamp_seconds",
            "When the environment last reconciled successfully (applied or in sync).",
            ["environment"],
        )
        drift = _gauge(
            "drift_hosts",
            "Hosts whose recorded version of the app differs from the desired one.",
            ["environment", "group", "app"],
        )
        hosts = _gauge("group_hosts", "Hosts in the group.", ["environment", "group"])
        in_sync = _gauge(
            "in_sync",
            "1 when every host of the group runs its desired versions.",
            ["environment", "group"],
        )
        desired = _gauge(
            "desired_version_info",
            "Desired version of an app (value 1).",
            ["environment", "group", "app", "version"],
        )
        quarantined = _gauge(
            "quarantined",
            "1 when the group's desired versions failed and are not retried.",
            ["environment", "group"],
        )
        snapshot = self.snapshot()
        state = snapshot.state if snapshot else None
        environments = sorted(set(statuses) | set(state.environments if state else ()))
        for name in environments:
            status = statuses.get(name)
            suspended.add_metric([name], 1.0 if status and status.suspended else 0.0)
            at = self.store.get_meta(META_LAST_SUCCESS.format(environment=name))
            if at:
                success.add_metric([name], float(at))
        quarantines = {(q.environment, q.group) for q in self.store.quarantines()}
        for environment in state.environments.values() if state else ():
            recorded = recorded_versions(self.store, environment.name)
            counts: dict[tuple[str, str], int] = {}
            for row in planning.drift(environment, recorded):
                counts[(row.group, row.app)] = counts.get((row.group, row.app), 0) + 1
            for group in environment.groups.values():
                labels = [environment.name, group.name]
                hosts.add_metric(labels, len(group.hosts))
                drifted = 0
                for app, version in group.apps.items():
                    count = counts.get((group.name, app), 0)
                    drifted += count
                    drift.add_metric([*labels, app], count)
                    desired.add_metric([*labels, app, version], 1.0)
                in_sync.add_metric(labels, 0.0 if drifted else 1.0)
                quarantined.add_metric(
                    labels, 1.0 if (environment.name, group.name) in quarantines else 0.0
                )
        yield from (suspended, success, drift, hosts, in_sync, desired, quarantined)

    def _source(self) -> Iterator[Metric]:
        fetched = self.store.get_meta(META_LAST_FETCH)
        error = self.store.get_meta(META_SOURCE_ERROR)
        problems = json.loads(self.store.get_meta(META_PROBLEMS) or "[]")
        up = _gauge("source_up", "1 when the last fetch of the Git source succeeded.")
        up.add_metric([], 1.0 if fetched and not error else 0.0)
        valid = _gauge("source_tip_valid", "0 when the newest commit was rejected as invalid.")
        valid.add_metric([], 0.0 if problems else 1.0)
        yield up
        yield valid
        if fetched:
            last = _gauge(
                "source_last_fetch_timestamp_seconds", "When the Git source was last fetched."
            )
            last.add_metric([], float(fetched))
            yield last
        info = GaugeMetricFamily(
            "reconciler_build_info", "Version of reconciler (value 1).", labels=["version"]
        )
        info.add_metric([__version__], 1.0)
        yield info


class Metrics:
    """The daemon's registry; also a ``rollout.Reporter`` that counts runs and gates."""

    def __init__(self, store: StateStore, snapshot: Callable[[], DesiredSnapshot | None]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(StateCollector(store, snapshot))
        reg = self.registry
        self.reconcile_duration = Histogram(
            "reconciler_reconcile_duration_seconds",
            "Wall time of one environment reconcile.",
            ["environment"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=reg,
        )
        self.rollouts = Counter(
            "reconciler_rollouts",
            "Group rollouts by result.",
            ["environment", "group", "result"],
            registry=reg,
        )
        self.rollout_duration = Histogram(
            "reconciler_rollout_duration_seconds",
            "Wall time of one group rollout.",
            ["environment", "group"],
            buckets=(5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200),
            registry=reg,
        )
        self.health_checks = Counter(
            "reconciler_health_checks",
            "Health gate evaluations by result.",
            ["environment", "group", "check", "result"],
            registry=reg,
        )
        self.revert_commits = Counter(
            "reconciler_revert_commits", "Revert commits pushed.", ["environment"], registry=reg
        )
        self.playbook_runs = Counter(
            "reconciler_playbook_runs",
            "Playbook runs by phase and outcome.",
            ["environment", "group", "phase", "outcome"],
            registry=reg,
        )
        self.playbook_duration = Histogram(
            "reconciler_playbook_duration_seconds",
            "Wall time of one playbook run.",
            ["environment", "group", "phase"],
            buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
            registry=reg,
        )
        self.webhooks = Counter(
            "reconciler_webhooks",
            "Webhook deliveries by provider and result.",
            ["provider", "result"],
            registry=reg,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    # -- rollout.Reporter
    def step_started(self, *args: object) -> None:
        return None

    def step_finished(
        self, environment: str, group: str, phase: str, step: planning.Step, result: RunResult
    ) -> None:
        self.playbook_runs.labels(environment, group, phase, result.outcome).inc()
        self.playbook_duration.labels(environment, group, phase).observe(result.duration_s)

    def gates_finished(
        self,
        environment: str,
        group: str,
        phase: str,
        step: planning.Step,
        results: Sequence[GateResult],
    ) -> None:
        for result in results:
            verdict = (
                "passed" if result.passed else "inconclusive" if result.inconclusive else "failed"
            )
            self.health_checks.labels(environment, group, result.kind, verdict).inc()

    # -- daemon events
    def reconciled(
        self, outcome: EnvironmentOutcome, seconds: float, rollouts: Sequence[RolloutRecord]
    ) -> None:
        self.reconcile_duration.labels(outcome.environment).observe(seconds)
        finished = {r.id: r for r in rollouts}
        for group in outcome.groups:
            if group.rollout_id is None or group.state not in ROLLOUT_RESULTS:
                continue
            self.rollouts.labels(outcome.environment, group.group, group.state).inc()
            record = finished.get(group.rollout_id)
            if record is not None and record.finished_at is not None:
                self.rollout_duration.labels(outcome.environment, group.group).observe(
                    record.finished_at - record.started_at
                )
            if group.revert.startswith("pushed"):
                self.revert_commits.labels(outcome.environment).inc()

    def webhook(self, provider: str, result: str) -> None:
        self.webhooks.labels(provider, result).inc()
