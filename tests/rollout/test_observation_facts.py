"""How the ``Observer`` turns local facts into observations, with a runner that replays the
events a real ``raw`` run of ``reconciler-observe.yml`` gives (the real runs are in
tests/content/test_observed_fact.py), and how the raw task's output is parsed."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from reconciler.desired.model import EnvironmentDesired, GroupDesired, Host, Rollout
from reconciler.desired.schema import FactProbe, Observe
from reconciler.edges.ansible import HostResult, HostStatus, PlaybookRun, RunOutcome, RunResult
from reconciler.edges.ansible.observe import DeployReports, fact_note, parse_facts
from reconciler.record import ObservedVersion
from reconciler.rollout.observation import Observer
from reconciler.settings import ExecutionSettings
from reconciler.states import ObservationStatus


class ReplayRunner:
    """Answers every run with the output of the raw task printing ``local`` (name -> the fact
    as JSON, or a string printed as is)."""

    def __init__(
        self, runs_dir: Path, local: Mapping[str, Any], outcome: RunOutcome = RunOutcome.SUCCESSFUL
    ) -> None:
        self.runs_dir = runs_dir
        self.local = local
        self.outcome = outcome

    def run(
        self,
        run: PlaybookRun,
        *,
        cancel: threading.Event | None = None,
        on_event: Callable[[dict], None] | None = None,
    ) -> RunResult:
        assert on_event is not None
        if self.outcome is RunOutcome.CANCELED:  # killed before any host answered
            hosts = {h: HostResult(h, HostStatus.FAILED, False, "canceled") for h in run.hosts}
            return RunResult("x", RunOutcome.CANCELED, 254, hosts, 0.1, self.runs_dir)
        stdout = "".join(
            f"\n@@reconciler-fact {name}@@\n"
            + (value if isinstance(value, str) else json.dumps(value))
            + "\n"
            for name, value in self.local.items()
        )
        for name in run.extra_vars["reconciler_fact_names"]:
            if name not in self.local:
                stdout += f"\n@@reconciler-fact {name}@@\n@@missing@@\n"
        for host in run.hosts:
            on_event(
                {
                    "event": "runner_on_ok",
                    "event_data": {
                        "host": host,
                        "resolved_action": "ansible.builtin.raw",
                        "res": {"stdout": stdout, "rc": 0},
                    },
                }
            )
        hosts = {h: HostResult(h, HostStatus.OK, False, "") for h in run.hosts}
        return RunResult("x", RunOutcome.SUCCESSFUL, 0, hosts, 0.1, self.runs_dir)


def observe(
    tmp_path: Path, local: Mapping[str, Any], outcome: RunOutcome = RunOutcome.SUCCESSFUL
) -> list[ObservedVersion]:
    host = Host("h1", "127.0.0.1")
    group = GroupDesired(
        "web", {"shop": "2.0.0"}, (host,), (), "deploy-app.yml", Rollout(), (), 60,
        observe=Observe(fact=FactProbe()),
    )  # fmt: skip
    environment = EnvironmentDesired("prod", "environments/prod.yaml", "inv.yml", {"web": group})
    runner = ReplayRunner(tmp_path, local, outcome)
    observer = Observer(runner, None, ExecutionSettings(), lambda: 1.0)
    return observer.observe(environment, group, (host,), tmp_path)


def observe_one(tmp_path: Path, local: Mapping[str, Any]) -> tuple[str | None, str, str]:
    (seen,) = observe(tmp_path, local)
    return seen.version, seen.status, seen.detail


def test_a_running_app_is_ok(tmp_path: Path) -> None:
    local = {"reconciler_shop": {"version": "2.0.0", "running": True, "state": "running"}}
    assert observe_one(tmp_path, local) == ("2.0.0", ObservationStatus.OK, "")


def test_a_stopped_app_is_stopped_and_says_why(tmp_path: Path) -> None:
    fact = {"version": None, "running": False, "state": "stopped", "reason": "shop is not running"}
    version, status, detail = observe_one(tmp_path, {"reconciler_shop": fact})
    assert (version, status) == (None, ObservationStatus.STOPPED)
    expected = "no 'version' in the local fact 'reconciler_shop': stopped; shop is not running"
    assert detail == expected


def test_a_look_cut_short_observes_nothing(tmp_path: Path) -> None:
    """A superseded reconcile's observation is killed: the hosts are not made "unknown"."""
    local = {"reconciler_shop": {"version": "2.0.0", "running": True, "state": "running"}}
    assert observe(tmp_path, local, RunOutcome.CANCELED) == []


def test_a_fact_version_that_is_no_version_is_refused(tmp_path: Path) -> None:
    local = {"reconciler_shop": {"version": "{{ lookup('pipe', 'id') }}"}}
    version, status, detail = observe_one(tmp_path, local)
    assert (version, status) == (None, ObservationStatus.MISSING)
    assert "is not a version" in detail


@pytest.mark.parametrize(
    ("local", "note"),
    [
        ({}, "no such fact"),
        ({"reconciler_shop": "Failure executing fact script (x), rc: 1"}, "Failure executing"),
        ({"reconciler_shop": ["a"]}, "not a mapping"),
        ({"reconciler_shop": {"state": "error", "error": "bad\nline\x1b[31m"}}, "error; bad line"),
    ],
)
def test_fact_note(local: Mapping[str, Any], note: str) -> None:
    said = fact_note(local, "reconciler_shop")
    assert said.startswith(note)
    assert said.isprintable()


def test_the_run_time_budget_grows_with_the_hosts_per_fork(tmp_path: Path) -> None:
    """One look at a large group gets a budget per wave of ``forks`` hosts: with a fixed one,
    1,000 local hosts were cut off after 60 s and the ~900 unanswered ones were ``unknown``."""
    hosts = tuple(Host(f"h{i}", "127.0.0.1") for i in range(1, 121))
    group = GroupDesired(
        "web", {"shop": "2.0.0"}, hosts, (), "deploy-app.yml", Rollout(), (), 60,
        observe=Observe(fact=FactProbe()),
    )  # fmt: skip
    environment = EnvironmentDesired("prod", "environments/prod.yaml", "inv.yml", {"web": group})
    runs: list[PlaybookRun] = []

    class Recording(ReplayRunner):
        def run(self, run: PlaybookRun, **kwargs: Any) -> RunResult:
            runs.append(run)
            return super().run(run, **kwargs)

    runner = Recording(tmp_path, {"reconciler_shop": {"version": "2.0.0", "running": True}})
    observer = Observer(runner, None, ExecutionSettings(), lambda: 1.0, forks=50)
    observer.observe(environment, group, hosts[:50], tmp_path)
    observer.observe(environment, group, hosts, tmp_path)
    assert [r.timeout_s for r in runs] == [60.0, 180.0]  # 1 wave of 50, then 3 (50+50+20)
    assert [r.envvars["ANSIBLE_FORKS"] for r in runs] == ["50", "50"]


def test_the_raw_output_is_parsed_per_fact() -> None:
    stdout = (
        "\n@@reconciler-fact reconciler_shop@@\n"
        '{"version": "2.0.0", "running": true}\n'
        "\n@@reconciler-fact reconciler_jobs@@\n@@missing@@\n"
        "\n@@reconciler-fact reconciler_api@@\nTraceback: not json\n"
    )
    facts = parse_facts(stdout)
    assert parse_facts(stdout.replace("\n", "\r\n")) == facts  # over SSH: a tty's CRLF
    assert facts["reconciler_shop"] == {"version": "2.0.0", "running": True}
    assert "reconciler_jobs" not in facts  # no file: "no such fact", as with setup
    assert (
        facts["reconciler_api"] == "error loading the fact reconciler_api: its output is not JSON"
    )
    assert fact_note(facts, "reconciler_jobs") == "no such fact"


@pytest.mark.parametrize(
    "stdout",
    [
        "",
        "garbage before any marker",
        "@@reconciler-fact bad name;rm@@\n{}",  # not a marker: names are [A-Za-z0-9_]
        "@@reconciler-fact reconciler_shop@@\n" + '{"v": "' + "x" * 70000 + '"}',
        "@@reconciler-fact reconciler_shop@@\n" + "[" * 30000 + "]" * 30000,  # too deep
        "x" * (5 * 1024 * 1024) + "\n@@reconciler-fact reconciler_shop@@\n{}",  # past the bound
    ],
)
def test_hostile_or_empty_raw_output_gives_no_version(stdout: str) -> None:
    facts = parse_facts(stdout)
    assert all(not isinstance(value, dict) for value in facts.values())


def deploy_event(stdout: object, **data: object) -> dict[str, Any]:
    event_data = {
        "host": "web-1",
        "role": "deploy_app",
        "resolved_action": "ansible.builtin.command",
        "res": {"stdout": stdout},
        **data,
    }
    return {"event": data.pop("event", "runner_on_ok"), "event_data": event_data}


def test_the_deploy_role_helper_reports_are_collected_per_host_and_app() -> None:
    reports = DeployReports()
    first = {"app": "web-api", "version": "1.0.0", "running": True}
    last = {"app": "web-api", "version": "2.0.0", "running": True}
    reports(deploy_event(json.dumps({"changed": True, "fact": first})))
    reports(deploy_event(json.dumps({"changed": False, "fact": last})))
    reports(deploy_event(json.dumps({"changed": True, "unpack": True})))  # no fact: nothing
    assert reports.facts("web-1") == {"reconciler_web_api": last}, "the last report wins"


@pytest.mark.parametrize(
    ("stdout", "data"),
    [
        ('{"fact": {"app": "shop", "version": "1"}}', {"role": "my_role"}),  # not the role
        ('{"fact": {"app": "shop", "version": "1"}}', {"resolved_action": "ansible.builtin.raw"}),
        ('{"fact": {"app": "shop", "version": "1"}}', {"event": "runner_on_failed"}),
        ('{"fact": {"app": "Bad App;", "version": "1"}}', {}),  # no app name
        ('{"fact": ["shop"]}', {}),
        ('{"fact": "shop"} trailing', {}),  # not JSON
        ('{"fact": ' + "[" * 30000 + "]" * 30000 + "}", {}),  # nested too deep
        ('{"fact": {"app": "shop", "v": "' + "x" * 70000 + '"}}', {}),  # too large
        (None, {}),
    ],
)
def test_a_report_that_is_not_the_helpers_is_ignored(stdout: object, data: dict) -> None:
    reports = DeployReports()
    reports(deploy_event(stdout, **data))
    assert reports.by_host == {}
