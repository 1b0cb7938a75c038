"""Placeholder rendering: literal replacement of exactly the documented tokens."""

from __future__ import annotations

import sys

import pytest

from reconciler.desired.model import Host
from reconciler.edges.gates import GateTarget, MissingPlaceholder
from reconciler.edges.gates.checker import HealthChecker
from reconciler.edges.gates.templates import render_template

from .conftest import check, target

VALUES = {
    "host": "10.0.0.5",
    "name": "web1",
    "port": "8080",
    "app": "shop",
    "version": "2.5.0",
    "environment": "prod",
    "group": "web",
}


def test_all_tokens():
    text = "{host}:{port} {name} {app}@{version} in {environment}/{group}"
    assert render_template(text, VALUES) == "10.0.0.5:8080 web1 shop@2.5.0 in prod/web"


@pytest.mark.parametrize(
    "template",
    [
        "http://{host.__class__}/",
        "{host!r}",
        "{host:>20}",
        "{0}",
        "{}",
        "{{host}}x",
        "{HOST}",
        "{ host }",
        "{__import__('os')}",
        'up{instance="x"}',
    ],
)
def test_nothing_but_exact_tokens_is_touched(template):
    expected = template.replace("{host}", "10.0.0.5")
    assert render_template(template, VALUES) == expected


def test_values_are_not_rendered_again():
    values = {**VALUES, "version": "{host}{port}"}
    assert render_template("v={version}", values) == "v={host}{port}"


def test_missing_value_raises():
    with pytest.raises(MissingPlaceholder):
        render_template("{port}", {"host": "x"})


def test_injection_in_url_stays_literal(http_server):
    gate = check("http", url="http://{host.__class__}/", timeout=0.1)
    [result] = HealthChecker().evaluate([gate], [target(1)])
    assert not result.passed
    assert "http://{host.__class__}/" in result.detail
    assert "str" not in result.detail.split("->")[0]


def test_environment_and_group_in_command():
    gate = check(
        "command",
        argv=[
            sys.executable,
            "-c",
            "import sys; print(sys.argv[1])",
            "{environment}/{group}/{name}/{app}/{version}/{port}",
        ],
    )
    t = GateTarget(Host("web1", "10.1.1.1", {"shop": 9000}), "shop", "3.1.4")
    [result] = HealthChecker().evaluate([gate], [t], environment="prod", group="web")
    assert result.passed
    assert result.detail.endswith("exit 0: prod/web/web1/shop/3.1.4/9000")


def test_no_targets_runs_only_target_independent_checks():
    independent = check("command", argv=[sys.executable, "-c", "pass", "{group}"], name="a")
    dependent = check("command", argv=[sys.executable, "-c", "pass", "{host}"], name="b")
    results = HealthChecker().evaluate([independent, dependent], [], group="web")
    assert [(r.gate, r.host, r.app, r.passed) for r in results] == [("a", None, None, True)]


def test_results_follow_check_then_target_order():
    checks = [
        check("command", argv=[sys.executable, "-c", "pass", "{name}"], name=f"c{i}")
        for i in range(3)
    ]
    targets = [target(name=f"h{i}") for i in range(4)]
    results = HealthChecker(max_parallel=3).evaluate(checks, targets)
    assert [(r.gate, r.host) for r in results] == [
        (f"c{c}", f"h{h}") for c in range(3) for h in range(4)
    ]
    assert all(r.passed for r in results)
