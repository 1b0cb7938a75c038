"""contrib/: Prometheus alert rules (promtool check + unit tests) and the Grafana dashboard."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.tools import require_tool

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES = REPO_ROOT / "contrib" / "prometheus" / "alerts.yml"
RULES_TEST = REPO_ROOT / "contrib" / "prometheus" / "alerts_test.yml"
DASHBOARD = REPO_ROOT / "contrib" / "grafana" / "reconciler-dashboard.json"

#: The metrics the daemon serves (the contract): name -> (type, labels).
METRICS: dict[str, tuple[str, frozenset[str]]] = {
    name: (kind, frozenset(labels.split()))
    for name, kind, labels in (
        ("reconciler_drift_hosts", "gauge", "environment group app"),
        ("reconciler_out_of_band_hosts", "gauge", "environment group app"),
        ("reconciler_unknown_hosts", "gauge", "environment group"),
        ("reconciler_drift_since_timestamp_seconds", "gauge", "environment group app"),
        ("reconciler_group_hosts", "gauge", "environment group"),
        ("reconciler_in_sync", "gauge", "environment group"),
        ("reconciler_desired_version_info", "gauge", "environment group app version"),
        ("reconciler_quarantined", "gauge", "environment group"),
        ("reconciler_suspended", "gauge", "environment"),
        ("reconciler_source_up", "gauge", ""),
        ("reconciler_source_tip_valid", "gauge", ""),
        ("reconciler_source_last_fetch_timestamp_seconds", "gauge", ""),
        ("reconciler_last_successful_reconcile_timestamp_seconds", "gauge", "environment"),
        ("reconciler_build_info", "gauge", "version"),
        ("reconciler_rollouts_total", "counter", "environment group result"),
        ("reconciler_health_checks_total", "counter", "environment group check result"),
        ("reconciler_revert_commits_total", "counter", "environment"),
        ("reconciler_playbook_runs_total", "counter", "environment group phase outcome"),
        ("reconciler_webhooks_total", "counter", "provider result"),
        ("reconciler_reconcile_duration_seconds", "histogram", "environment"),
        ("reconciler_playbook_duration_seconds", "histogram", "environment group phase"),
        ("reconciler_rollout_duration_seconds", "histogram", "environment group"),
    )
}
#: Label values the daemon uses, where expressions may match on them.
LABEL_VALUES = {
    "result": {
        "succeeded", "degraded", "rolled_back", "failed", "superseded", "interrupted",  # rollouts
        "passed", "inconclusive",  # health checks (and "failed")
    },
    "check": {"http", "tcp", "command", "prometheus"},
    "outcome": {"successful", "failed", "timeout", "canceled", "error"},
}  # fmt: skip
#: Target labels Prometheus adds to every scraped series.
TARGET_LABELS = {"instance", "job"}
_NAME = re.compile(r"\breconciler_[a-z0-9_]+\b")
_SELECTOR = re.compile(r"\b(reconciler_[a-z0-9_]+)\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*\"([^\"]*)\"")


def _metric(name: str) -> tuple[str, frozenset[str]]:
    """Type and labels of a series name, histogram suffixes resolved; fails when unknown."""
    if name in METRICS and METRICS[name][0] != "histogram":
        return METRICS[name]
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and METRICS.get(base, ("",))[0] == "histogram":
            kind, labels = METRICS[base]
            return kind, labels | {"le"} if suffix == "_bucket" else labels
    raise AssertionError(f"unknown metric {name!r} (histograms need _bucket/_sum/_count)")


def check_expression(expr: str) -> set[str]:
    """Assert that ``expr`` uses only known metrics, labels and label values; return them."""
    names = set(_NAME.findall(expr))
    for name in names:
        _metric(name)
    for name, matchers in _SELECTOR.findall(expr):
        _kind, labels = _metric(name)
        for label, op, value in _MATCHER.findall(matchers):
            assert label in labels | TARGET_LABELS, f"{name} has no label {label!r}: {expr}"
            if label in LABEL_VALUES and op in ("=", "!="):
                assert value in LABEL_VALUES[label], f"{label}={value!r}: {expr}"
    return names


def test_check_expression_rejects_typos() -> None:
    """The checker used below must catch what it is there for."""
    check_expression('rate(reconciler_rollouts_total{result="rolled_back"}[5m])')
    for bad in (
        "reconciler_rollouts",  # counter without _total
        "reconciler_drift_host",
        "reconciler_reconcile_duration_seconds",  # a histogram has no bare series
        'reconciler_suspended{group="web"}',
        'reconciler_rollouts_total{result="rolledback"}',
    ):
        with pytest.raises(AssertionError):
            check_expression(bad)


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=120, check=False)


def _rules() -> list[dict[str, Any]]:
    data = YAML(typ="safe").load(RULES.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


# ------------------------------------------------------------------------------ alert rules


def test_rules_pass_promtool_check() -> None:
    promtool = require_tool("promtool", "prometheus")
    result = _run([promtool, "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_rules_pass_their_promtool_unit_tests() -> None:
    promtool = require_tool("promtool", "prometheus")
    result = _run([promtool, "test", "rules", str(RULES_TEST)], cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_unit_tests_exercise_at_least_three_alerts_firing() -> None:
    data = YAML(typ="safe").load(RULES_TEST.read_text(encoding="utf-8"))
    assert data["rule_files"] == ["alerts.yml"]
    firing = {
        case["alertname"]
        for test in data["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    defined = {rule["alert"] for rule in _rules()}
    assert firing <= defined
    assert len(firing) >= 3, firing


def test_the_expected_alerts_exist_with_severity_and_annotations() -> None:
    rules = _rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    assert {
        "ReconcilerSourceDown",
        "ReconcilerSourceTipRejected",
        "ReconcilerSourceStale",
        "ReconcilerDriftPersisting",
        "ReconcilerOutOfBandDrift",
        "ReconcilerRolloutRolledBack",
        "ReconcilerRolloutFailed",
        "ReconcilerRevertCommitPushed",
        "ReconcilerGroupQuarantined",
        "ReconcilerNoSuccessfulReconcile",
        "ReconcilerEnvironmentSuspended",
    } <= set(names)
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]
    by_name = {rule["alert"]: rule for rule in rules}
    assert by_name["ReconcilerSourceDown"]["for"] == "10m"
    assert by_name["ReconcilerDriftPersisting"]["for"] == "30m"
    assert by_name["ReconcilerEnvironmentSuspended"]["for"] == "24h"
    assert by_name["ReconcilerEnvironmentSuspended"]["labels"]["severity"] == "info"


def test_rules_use_only_known_metrics() -> None:
    used: set[str] = set()
    for rule in _rules():
        used |= check_expression(rule["expr"])
    assert "reconciler_drift_hosts" in used
    assert "reconciler_rollouts_total" in used


# -------------------------------------------------------------------------- Grafana dashboard


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows


def _expressions(dashboard: dict[str, Any]) -> list[str]:
    return [
        target["expr"]
        for panel in _panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def test_dashboard_variables(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    environment = variables["environment"]
    assert environment["type"] == "query"
    assert environment["datasource"]["uid"] == "${datasource}"
    query = environment["query"]
    query = query["query"] if isinstance(query, dict) else query
    match = re.fullmatch(r"label_values\((reconciler_[a-z_]+),\s*environment\)", query)
    assert match, query
    assert "environment" in _metric(match.group(1))[1]


def test_every_panel_queries_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    panels = [p for p in _panels(dashboard) if p["type"] != "row"]
    assert len(panels) >= 10
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]


def test_dashboard_uses_only_known_metrics(dashboard: dict[str, Any]) -> None:
    expressions = _expressions(dashboard)
    used = set().union(*(check_expression(expr) for expr in expressions))
    for required in (
        "reconciler_drift_hosts",
        "reconciler_in_sync",
        "reconciler_rollouts_total",
        "reconciler_health_checks_total",
        "reconciler_reconcile_duration_seconds_bucket",
        "reconciler_playbook_duration_seconds_bucket",
        "reconciler_source_up",
        "reconciler_source_last_fetch_timestamp_seconds",
        "reconciler_revert_commits_total",
        "reconciler_suspended",
        "reconciler_quarantined",
    ):
        assert required in used, required
    text = "\n".join(expressions)
    assert "histogram_quantile(0.5, " in text
    assert "histogram_quantile(0.95, " in text
    for expr in expressions:  # the environment filter applies wherever the label exists
        for name, _matchers in _SELECTOR.findall(expr):
            assert "environment" not in _metric(name)[1] or "$environment" in _matchers, expr


def test_dashboard_expressions_are_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """promtool parses each panel query once Grafana's variables are substituted."""
    promtool = require_tool("promtool", "prometheus")
    substitutions = {"$__rate_interval": "5m", "$__range": "6h", "$environment": ".*"}
    rules = []
    for index, expr in enumerate(_expressions(dashboard)):
        for variable, value in substitutions.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _run([promtool, "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
