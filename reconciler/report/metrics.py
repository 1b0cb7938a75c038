"""Prometheus metrics (prometheus-client), names as in the product contract.

Two kinds, one registry per daemon:
* Gauges are rendered at scrape time from the status read model (``report.status.build``), the
  very object ``GET /api/v1/status`` and ``reconciler status`` show, so they always agree.
* Counters and histograms count events as they happen, through the ``rollout.ports.Reporter``
  callbacks (playbook runs, gate results, finished rollouts and reconciles) and webhook
  deliveries, notifications (``reconciler_notifications_total{route,result}``: sent, failed,
  skipped) and commit statuses (``reconciler_commit_statuses_total{provider,result}``: set,
  failed, skipped). They start at zero with each daemon process. Rollout results are the
  ``RolloutState`` values: ``degraded`` (host failures within ``max_failed_hosts``) is its own
  result, not ``succeeded``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from reconciler import __version__
from reconciler.edges.ansible import RunResult
from reconciler.edges.gates import GateResult
from reconciler.plan.canary import Step
from reconciler.plan.outcomes import EnvironmentOutcome, GroupOutcome
from reconciler.report.status import StatusView
from reconciler.rollout.ports import SilentReporter
from reconciler.states import GateCheckpoint, GroupState, Phase

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Group outcomes that are the end of a rollout (counted in reconciler_rollouts_total).
ROLLOUT_RESULTS = frozenset(
    {
        GroupState.SUCCEEDED,
        GroupState.DEGRADED,
        GroupState.ROLLED_BACK,
        GroupState.FAILED,
        GroupState.SUPERSEDED,
        GroupState.INTERRUPTED,
    }
)


def _gauge(name: str, doc: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"reconciler_{name}", doc, labels=list(labels))


class OwnerCollector(Collector):
    """``reconciler_environment_owner{environment,replica}``: 1 per environment this replica
    holds the lease of (several replicas: each exports its own, so sums across them are
    right). Nothing without replicas."""

    def __init__(self) -> None:
        self.owners: Callable[[], Mapping[str, str]] | None = None  # None: no replicas

    def exported(self) -> set[str] | None:
        """The environments whose per-environment gauges this replica exports (None: all)."""
        return None if self.owners is None else set(self.owners())

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        gauge = _gauge(
            "environment_owner",
            "1 for each environment whose lease this replica holds",
            ["environment", "replica"],
        )
        for environment, replica in sorted((self.owners or dict)().items()):
            gauge.add_metric([environment, replica], 1)
        yield gauge


class StatusCollector(Collector):
    """Gauges rendered from the status read model at scrape time; per-environment gauges only
    for the environments ``exported()`` names (replicas: the ones this replica owns, so sums
    across replicas are right; None: every environment)."""

    def __init__(
        self,
        status: Callable[[], StatusView],
        exported: Callable[[], set[str] | None] = lambda: None,
    ) -> None:
        self.status = status
        self.exported = exported

    def describe(self) -> list[Metric]:
        """Nothing at registration: the read model is built at scrape time only."""
        return []

    def collect(self) -> Iterator[Metric]:
        view = self.status()
        up = _gauge("source_up", "1 when the last fetch of the Git source succeeded.")
        up.add_metric([], 1.0 if view.source.up else 0.0)
        valid = _gauge("source_tip_valid", "0 when the newest commit was rejected as invalid.")
        valid.add_metric([], 0.0 if view.source.problems else 1.0)
        yield from (up, valid)
        if view.source.last_fetch_at is not None:
            last = _gauge(
                "source_last_fetch_timestamp_seconds", "When the Git source was last fetched."
            )
            last.add_metric([], view.source.last_fetch_at)
            yield last
        info = _gauge("build_info", "Version of reconciler (value 1).", ["version"])
        info.add_metric([__version__], 1.0)
        yield info

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
            "1 while the group's desired versions are the ones that failed (not retried).",
            ["environment", "group"],
        )
        out_of_band = _gauge(
            "out_of_band_hosts",
            "Hosts that run another version of the app than reconciler deployed (observed).",
            ["environment", "group", "app"],
        )
        unknown = _gauge(
            "unknown_hosts",
            "Hosts whose versions are not known: never observed, or unreachable.",
            ["environment", "group"],
        )
        since = _gauge(
            "drift_since_timestamp_seconds",
            "Since when the oldest unresolved drift of the app in the group is.",
            ["environment", "group", "app"],
        )
        only = self.exported()
        for environment in view.environments:
            if only is not None and environment.name not in only:
                continue
            suspended.add_metric([environment.name], 1.0 if environment.suspended else 0.0)
            if environment.last_success_at is not None:
                success.add_metric([environment.name], environment.last_success_at)
            for group in environment.groups:
                labels = [environment.name, group.name]
                hosts.add_metric(labels, group.hosts)
                in_sync.add_metric(labels, 1.0 if group.in_sync else 0.0)
                quarantined.add_metric(labels, 1.0 if group.quarantined else 0.0)
                unknown.add_metric(labels, group.unknown_hosts)
                for app, version in group.apps.items():
                    drift.add_metric([*labels, app], group.drift.get(app, 0))
                    out_of_band.add_metric([*labels, app], group.out_of_band.get(app, 0))
                    desired.add_metric([*labels, app, version], 1.0)
                    if app in group.drift_since:
                        since.add_metric([*labels, app], group.drift_since[app])
        yield from (suspended, success, drift, hosts, in_sync, desired, quarantined)
        yield from (out_of_band, unknown, since)


class Metrics(SilentReporter):
    """The daemon's registry; also the rollout ``Reporter`` that counts what happens."""

    def __init__(self, status: Callable[[], StatusView]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.owner_gauge = OwnerCollector()  # fed by the daemon when it has replicas
        self.registry.register(StatusCollector(status, self.owner_gauge.exported))
        self.registry.register(self.owner_gauge)
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
            "Group rollouts by result (degraded: host failures within max_failed_hosts).",
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
        self.lease_transitions = Counter(
            "reconciler_lease_transitions",
            "Leases of environments this replica acquired or lost (replicas only).",
            ["environment", "transition"],
            registry=reg,
        )

        self.notifications = Counter(
            "reconciler_notifications",
            "Notification deliveries per route (one per event and channel) by result.",
            ["route", "result"],
            registry=reg,
        )
        self.commit_statuses = Counter(
            "reconciler_commit_statuses",
            "Commit statuses posted to the Git host by result.",
            ["provider", "result"],
            registry=reg,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    # -- rollout.ports.Reporter
    def step_finished(
        self, environment: str, group: str, phase: Phase, step: Step, result: RunResult
    ) -> None:
        self.playbook_runs.labels(environment, group, str(phase), str(result.outcome)).inc()
        self.playbook_duration.labels(environment, group, str(phase)).observe(result.duration_s)

    def gates_finished(
        self,
        environment: str,
        group: str,
        phase: Phase,
        step: Step,
        checkpoint: GateCheckpoint,
        results: Sequence[GateResult],
    ) -> None:
        for result in results:
            self.health_checks.labels(environment, group, result.kind, str(result.verdict)).inc()

    def rollout_finished(self, environment: str, outcome: GroupOutcome, duration_s: float) -> None:
        if outcome.state not in ROLLOUT_RESULTS:
            return
        self.rollouts.labels(environment, outcome.group, str(outcome.state)).inc()
        self.rollout_duration.labels(environment, outcome.group).observe(duration_s)
        if outcome.revert is not None and outcome.revert.sha is not None:
            self.revert_commits.labels(environment).inc()

    def environment_finished(self, outcome: EnvironmentOutcome, duration_s: float) -> None:
        self.reconcile_duration.labels(outcome.environment).observe(duration_s)

    # -- the API
    def webhook(self, provider: str, result: str) -> None:
        self.webhooks.labels(provider, result).inc()

    def notification(self, route: str, result: str) -> None:
        self.notifications.labels(route, result).inc()

    def commit_status(self, provider: str, result: str) -> None:
        self.commit_statuses.labels(provider, result).inc()
