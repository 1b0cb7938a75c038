"""Logic of one group's rollout with fakes of our own runner/checker/reverter interfaces.

The real adapters are exercised in tests/end_to_end; here the store is the real SQLite store and
only the playbook runner, the health checker and the Git reverter are small fakes.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from reconciler.desired.messages import RevertRequest
from reconciler.desired.model import EnvironmentDesired, GroupDesired, Host, Rollout
from reconciler.desired.schema import HealthCheck, HttpGate
from reconciler.edges.ansible.runner import HostResult, HostStatus, RunResult
from reconciler.edges.gates.checker import GateResult
from reconciler.edges.git import PushResult
from reconciler.plan import canary as planning
from reconciler.record.sqlite import SqliteStateStore
from reconciler.rollout import group as rollout
from reconciler.settings import ExecutionSettings
from reconciler.states import ChangeKind, PushStatus

HOSTS = [f"web-{i:02d}" for i in range(1, 11)]


class FakeRunner:
    def __init__(self, failing: set[str] = frozenset()) -> None:
        self.failing = failing
        self.calls: list[tuple[tuple[str, ...], dict[str, str]]] = []

    def run(self, run, **_):
        self.calls.append((run.hosts, dict(run.extra_vars["reconciler_apps"])))
        hosts = {
            h: HostResult(
                h,
                HostStatus.FAILED if h in self.failing else HostStatus.OK,
                True,
                "boom" if h in self.failing else "",
            )
            for h in run.hosts
        }
        outcome = "failed" if set(run.hosts) & self.failing else "successful"
        return RunResult("id", outcome, 0, hosts, 0.1, Path("/nonexistent"), "")


class FakeChecker:
    def __init__(
        self, bad_version: str | None = None, cancel_on_call: threading.Event | None = None
    ):
        self.bad_version = bad_version
        self.cancel_on_call = cancel_on_call
        self.calls: list[list[tuple[str, str]]] = []

    def evaluate(self, checks, targets, *, environment="", group="", cancel=None):
        self.calls.append([(t.host.name, t.version) for t in targets])
        if self.cancel_on_call is not None:
            self.cancel_on_call.set()
        return [
            GateResult(
                "http",
                "http",
                t.host.name,
                t.app,
                t.version != self.bad_version,
                False,
                1,
                "status 500" if t.version == self.bad_version else "status 200",
                0.0,
            )
            for t in targets
        ]


class FakeReverter:
    def __init__(self) -> None:
        self.calls: list[RevertRequest] = []

    def revert_rollout(self, request: RevertRequest) -> PushResult:
        self.calls.append(request)
        return PushResult(PushStatus.PUSHED, ChangeKind.REVERT, "abc", 1, "reverted")


def group(version: str, *, max_failed: int | str = 0, hosts=HOSTS) -> GroupDesired:
    return GroupDesired(
        name="web",
        apps={"shop": version},
        hosts=tuple(Host(h, "127.0.0.1") for h in hosts),
        after=(),
        playbook="deploy-app.yml",
        rollout=Rollout(canary=(10, 50, 100), max_failed_hosts=max_failed),
        health=(HealthCheck(http=HttpGate(url="http://{host}/")),),
        timeout_s=30,
    )


def environment(g: GroupDesired) -> EnvironmentDesired:
    return EnvironmentDesired("prod", "environments/prod.yaml", "inv.yml", {"web": g})


@pytest.fixture
def store(tmp_path):
    return SqliteStateStore(tmp_path / "state.db")


def run(store, g, recorded, *, runner=None, checker=None, reverter=None, cancel=None):
    runner = runner or FakeRunner()
    checker = checker or FakeChecker()
    engine = rollout.GroupRollout(
        store=store,
        runner=runner,
        checker=checker,
        execution=ExecutionSettings(),
        reporter=rollout.SilentReporter(),
        reverter=reverter,
        cancel=cancel,
    )
    plan = planning.plan_group("prod", g, recorded)
    outcome = engine.run(environment(g), g, plan, rollout.Deployment(Path("/repo"), "c0ffee", "r1"))
    return outcome, runner, checker


def on_v1() -> dict[tuple[str, str], str]:
    return {(h, "shop"): "1" for h in HOSTS}


def test_good_bump_runs_three_gated_steps(store):
    outcome, runner, checker = run(store, group("2"), on_v1())
    assert outcome.state == "succeeded"
    assert [len(hosts) for hosts, _ in runner.calls] == [1, 4, 5]
    assert [len(c) for c in checker.calls] == [1, 4, 5]
    assert {d.version for d in store.deployed("prod")} == {"2"}


def test_failed_gate_rolls_back_only_the_canary_and_quarantines(store):
    reverter = FakeReverter()
    outcome, runner, _ = run(
        store, group("2"), on_v1(), checker=FakeChecker("2"), reverter=reverter
    )
    assert outcome.state == "rolled_back"
    canary = runner.calls[0][0]
    assert runner.calls == [(canary, {"shop": "2"}), (canary, {"shop": "1"})]
    assert "gate http failed on" in outcome.reason and "status 500" in outcome.reason
    assert {d.version for d in store.deployed("prod")} == {"1"}
    [call] = reverter.calls
    assert (call.failed_versions, call.restore_versions, call.offending_sha) == (
        {"shop": "2"},
        {"shop": "1"},
        "c0ffee",
    )
    quarantine = store.quarantine("prod", "web")
    assert quarantine.fingerprint == rollout.fingerprint({"shop": "2"})
    assert quarantine.revert.startswith("pushed")
    [record] = store.rollouts("prod")
    assert record.state == "rolled_back"
    steps = store.steps(record.id)
    assert [(s.phase, s.state) for s in steps] == [
        ("deploy", "succeeded"),
        ("rollback", "succeeded"),
    ]
    assert steps[0].gate_results[0]["passed"] is False


def test_playbook_failures_within_tolerance_continue(store):
    failing = {planning.cohort("prod", "web", HOSTS)[3]}  # a host of step 2
    outcome, runner, _ = run(store, group("2", max_failed=1), on_v1(), runner=FakeRunner(failing))
    assert outcome.state == "succeeded" and set(outcome.failed_hosts) == failing
    assert len(runner.calls) == 3
    assert store.rollouts("prod")[0].state == "degraded"
    recorded = {d.host: d.version for d in store.deployed("prod")}
    assert set(recorded) == set(HOSTS) - failing, "a failed host is not recorded as deployed"
    assert set(recorded.values()) == {"2"}


def test_playbook_failures_beyond_tolerance_roll_back_every_touched_host(store):
    cohort = planning.cohort("prod", "web", HOSTS)
    outcome, runner, _ = run(store, group("2"), on_v1(), runner=FakeRunner({cohort[2]}))
    assert outcome.state in ("rolled_back", "failed")
    touched = set(cohort[:5])
    rollback_hosts = {h for hosts, apps in runner.calls if apps == {"shop": "1"} for h in hosts}
    assert rollback_hosts == touched
    assert not any(set(hosts) & set(cohort[5:]) for hosts, _ in runner.calls)


def test_rollback_batches_hosts_by_their_previous_versions(store):
    recorded = on_v1()
    cohort = planning.cohort("prod", "web", HOSTS)
    recorded[(cohort[0], "shop")] = "0.9"
    outcome, runner, _ = run(store, group("2"), recorded, checker=FakeChecker("2"))
    assert outcome.state == "rolled_back"
    assert runner.calls[1:] == [((cohort[0],), {"shop": "0.9"})]


def test_first_deployment_has_nothing_to_roll_back_to(store):
    reverter = FakeReverter()
    outcome, runner, _ = run(store, group("2"), {}, checker=FakeChecker("2"), reverter=reverter)
    assert len(runner.calls) == 1  # no rollback playbook: there is no last good version
    assert "no last good version" in outcome.reason
    assert reverter.calls == [] and outcome.revert.startswith("pending")


def test_a_newer_commit_supersedes_a_rollout_waiting_on_gates(store):
    cancel = threading.Event()
    outcome, runner, _ = run(
        store, group("2"), on_v1(), checker=FakeChecker(None, cancel), cancel=cancel
    )
    assert outcome.state == "superseded"
    assert len(runner.calls) == 1, "finish the current step, start no other, roll nothing back"
    assert store.rollouts("prod")[0].state == "superseded"
    assert store.quarantine("prod", "web") is None


def test_bake_holds_each_step_and_checks_the_gates_again(store):
    g = group("2")
    g = GroupDesired(**{**g.__dict__, "rollout": Rollout(canary=(10, 50, 100), bake_s=0.05)})
    outcome, _, checker = run(store, g, on_v1())
    assert outcome.state == "succeeded"
    assert [len(c) for c in checker.calls] == [1, 1, 4, 4, 5, 5]


def test_a_failure_found_after_bake_still_rolls_back(store):
    class LateFailure(FakeChecker):
        def evaluate(self, checks, targets, **kwargs):
            results = super().evaluate(checks, targets, **kwargs)
            if len(self.calls) == 2:  # healthy right after the step, broken after the bake
                return [
                    GateResult(r.gate, r.kind, r.host, r.app, False, False, 1, "late", 0)
                    for r in results
                ]
            return results

    g = group("2")
    g = GroupDesired(**{**g.__dict__, "rollout": Rollout(canary=(10, 50, 100), bake_s=0.01)})
    outcome, runner, _ = run(store, g, on_v1(), checker=LateFailure())
    assert outcome.state == "rolled_back" and "late" in outcome.reason
    assert len(runner.calls) == 2
