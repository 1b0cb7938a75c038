"""Prometheus gates against a real Prometheus scraping real test apps (reconciler.demo.testapp)."""

from __future__ import annotations

from reconciler.edges.gates.checker import HealthChecker

from .conftest import PromFleet, check


def prom(fleet: PromFleet, query: str, **gate: object):
    gate.setdefault("timeout", 1.5)
    gate.setdefault("interval", 0.25)
    return check("prometheus", url=fleet.url, query=query, **gate)


def test_threshold_pass(prometheus: PromFleet):
    good = prometheus.apps["good"]
    query = 'testapp_healthy{job="testapp", instance="{host}:{port}"}'
    [result] = HealthChecker().evaluate([prom(prometheus, query, min=1, name="healthy")], [good])
    assert result.passed, result.detail
    assert (result.gate, result.kind, result.host, result.app) == (
        "healthy",
        "prometheus",
        "good-host",
        "good",
    )
    assert result.detail.endswith("value 1 within min 1")
    assert not result.inconclusive


def test_threshold_fail(prometheus: PromFleet):
    [result] = HealthChecker().evaluate(
        [prom(prometheus, "max(testapp_healthy)", max=0.5)], [prometheus.apps["good"]]
    )
    assert not result.passed and not result.inconclusive
    assert (result.host, result.app) == (None, None)  # group-wide, even with one target
    assert result.detail.endswith("value 1 > max 0.5")
    assert result.attempts >= 2


def test_unhealthy_app_below_min(prometheus: PromFleet):
    sick = prometheus.apps["sick"]
    query = 'testapp_healthy{instance="{host}:{port}"}'
    [result] = HealthChecker().evaluate([prom(prometheus, query, min=1)], [sick])
    assert not result.passed
    assert (result.host, result.app) == ("sick-host", "sick")
    assert "value 0 < min 1" in result.detail


def test_query_depending_on_app_only(prometheus: PromFleet):
    query = 'testapp_info{app="{app}", version="{version}"}'
    results = HealthChecker().evaluate(
        [prom(prometheus, query, min=1)], list(prometheus.apps.values())
    )
    assert [(r.host, r.app, r.passed) for r in results] == [
        (None, "good", True),
        (None, "sick", True),
    ]


def test_every_sample_must_satisfy_the_bounds(prometheus: PromFleet):
    [result] = HealthChecker().evaluate(
        [prom(prometheus, "testapp_healthy", min=1)], [prometheus.apps["good"]]
    )
    assert not result.passed
    sick_instance = f'instance="127.0.0.1:{prometheus.apps["sick"].host.ports["sick"]}"'
    assert sick_instance in result.detail
    assert "value 0 < min 1 (1 of 2 samples out of bounds)" in result.detail
    [both] = HealthChecker().evaluate(
        [prom(prometheus, "testapp_info", min=1, max=1)], [prometheus.apps["good"]]
    )
    assert both.passed and "all 2 samples within min 1 max 1" in both.detail


def test_empty_result_fails_closed(prometheus: PromFleet):
    [result] = HealthChecker().evaluate(
        [prom(prometheus, "absent_metric_xyz", max=0.1, timeout=1)], [prometheus.apps["good"]]
    )
    assert not result.passed
    assert result.inconclusive
    assert result.attempts >= 2
    assert "inconclusive, failing closed" in result.detail
    assert "returned no samples" in result.detail


def test_nan_is_inconclusive(prometheus: PromFleet):
    [result] = HealthChecker().evaluate(
        [prom(prometheus, "0/0", min=0, timeout=0.5)], [prometheus.apps["good"]]
    )
    assert (result.passed, result.inconclusive) == (False, True)
    assert "returned NaN" in result.detail


def test_scalar_result(prometheus: PromFleet):
    [result] = HealthChecker().evaluate(
        [prom(prometheus, "scalar(sum(testapp_healthy))", min=1, max=1)],
        [prometheus.apps["good"]],
    )
    assert result.passed, result.detail


def test_bad_query_is_a_failed_attempt(prometheus: PromFleet):
    [result] = HealthChecker().evaluate(
        [prom(prometheus, "sum(", max=1, timeout=0.5)], [prometheus.apps["good"]]
    )
    assert not result.passed and not result.inconclusive
    assert "error: bad_data" in result.detail


def test_unreachable_prometheus_fails(prometheus: PromFleet):
    gate = check("prometheus", url="http://127.0.0.1:1", query="up", min=1, timeout=0.3)
    [result] = HealthChecker().evaluate([gate], [prometheus.apps["good"]])
    assert not result.passed and not result.inconclusive
    assert "Connection refused" in result.detail


def test_group_wide_query_runs_once_host_query_per_target(prometheus: PromFleet):
    targets = list(prometheus.apps.values())
    group_wide = prom(
        prometheus, 'count(testapp_info{group="{group}"} or testapp_info)', min=2, name="fleet"
    )
    per_host = prom(
        prometheus,
        'testapp_info{instance="{host}:{port}", version="{version}"}',
        min=1,
        name="per-host",
    )
    results = HealthChecker().evaluate([group_wide, per_host], targets, group="web")
    assert [(r.gate, r.host, r.app, r.passed) for r in results] == [
        ("fleet", None, None, True),
        ("per-host", "good-host", "good", True),
        ("per-host", "sick-host", "sick", True),
    ], [r.detail for r in results]
    assert prometheus.version  # the real server answered buildinfo


def test_requests_counter_is_scraped(prometheus: PromFleet):
    [result] = HealthChecker().evaluate(
        [prom(prometheus, 'testapp_requests_total{instance="{host}:{port}"}', min=1)],
        [prometheus.apps["good"]],
    )
    assert result.passed, result.detail
