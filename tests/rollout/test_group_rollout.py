"""Logic of one group's rollout with fakes of our own runner/checker/reverter Protocols.

The real adapters are exercised in tests/end_to_end; here the store is the real SQLite store and
only the playbook runner, the health checker and the Git reverter are the small fakes of
``reconciler.testing.fakes``.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest

from reconciler.desired.model import EnvironmentDesired, GroupDesired, Host, Retries, Rollout
from reconciler.desired.schema import FactProbe, HealthCheck, HttpGate, Observe
from reconciler.plan import canary, policy
from reconciler.record import ObservedVersion
from reconciler.record.sqlite import SqliteStateStore
from reconciler.rollout.group import Deployment, GroupRollout
from reconciler.rollout.ports import Adapters, SilentReporter, StopRequest
from reconciler.settings import ExecutionSettings
from reconciler.states import GroupState, PushStatus, RolloutState, RolloutTrigger, StopReason
from reconciler.testing.fakes import FakeChecker, FakeLease, FakeReverter, FakeRunner

HOSTS = [f"web-{i:02d}" for i in range(1, 11)]
COHORT = canary.cohort("prod", "web", HOSTS)


def group(version: str, *, max_failed: int | str = 0, bake: float = 0.0) -> GroupDesired:
    return GroupDesired(
        name="web",
        apps={"shop": version},
        hosts=tuple(Host(h, "127.0.0.1") for h in HOSTS),
        after=(),
        playbook="deploy-app.yml",
        rollout=Rollout(canary=(10, 50, 100), bake_s=bake, max_failed_hosts=max_failed),
        health=(HealthCheck(http=HttpGate(url="http://{host}/")),),
        timeout_s=30,
    )


def environment(g: GroupDesired) -> EnvironmentDesired:
    return EnvironmentDesired("prod", "environments/prod.yaml", "inv.yml", {"web": g})


@pytest.fixture
def store(tmp_path):
    return SqliteStateStore(tmp_path / "state.db")


class Recorder(SilentReporter):
    def __init__(self) -> None:
        self.finished = []

    def rollout_finished(self, environment, outcome, duration_s):
        self.finished.append(outcome)


def run(store, g, recorded, *, runner=None, checker=None, reverter=None, cancel=None):
    runner = runner or FakeRunner()
    checker = checker or FakeChecker()
    reporter = Recorder()
    adapters = Adapters(store, runner, checker, reverter, reporter)
    engine = GroupRollout(
        adapters,
        ExecutionSettings(),
        environment(g),
        g,
        Deployment(Path("/repo"), "c0ffee", "r1"),
        cancel=cancel,
    )
    outcome = engine.run(canary.plan_group("prod", g, recorded))
    assert reporter.finished == [outcome], "every rollout is reported once, at its end"
    return outcome, runner, checker


def on_v1() -> dict[tuple[str, str], str]:
    return {(h, "shop"): "1" for h in HOSTS}


def test_good_bump_runs_three_gated_steps(store):
    outcome, runner, checker = run(store, group("2"), on_v1())
    assert outcome.state == GroupState.SUCCEEDED
    assert [len(hosts) for hosts, _ in runner.calls] == [1, 4, 5]
    assert [len(c) for c in checker.calls] == [1, 4, 5]
    assert {d.version for d in store.deployed("prod")} == {"2"}
    assert store.rollouts("prod")[0].state == RolloutState.SUCCEEDED


def test_failed_gate_rolls_back_only_the_canary_and_quarantines(store):
    reverter = FakeReverter()
    outcome, runner, _ = run(
        store, group("2"), on_v1(), checker=FakeChecker("2"), reverter=reverter
    )
    assert outcome.state == GroupState.ROLLED_BACK
    canary_host = runner.calls[0][0]
    assert runner.calls == [(canary_host, {"shop": "2"}), (canary_host, {"shop": "1"})]
    assert "gate http failed on" in outcome.reason and "status 500" in outcome.reason
    assert {d.version for d in store.deployed("prod")} == {"1"}
    [request] = reverter.calls
    assert (request.failed_versions, request.restore_versions, request.offending_sha) == (
        {"shop": "2"},
        {"shop": "1"},
        "c0ffee",
    )
    assert outcome.revert is not None and outcome.revert.status is PushStatus.PUSHED
    quarantine = store.quarantine("prod", "web")
    assert quarantine.fingerprint == policy.fingerprint({"shop": "2"})
    assert quarantine.revert.startswith("pushed")
    [record] = store.rollouts("prod")
    assert record.state == RolloutState.ROLLED_BACK
    steps = store.steps(record.id)
    assert [(s.phase, s.state) for s in steps] == [
        ("deploy", "succeeded"),
        ("rollback", "succeeded"),
    ]
    assert steps[0].gate_results[0]["passed"] is False
    assert steps[0].gate_results[0]["checkpoint"] == "after_step"
    assert steps[1].gate_results[0]["checkpoint"] == "after_rollback"


def test_playbook_failures_within_tolerance_end_degraded(store):
    failing = {COHORT[3]}  # a host of step 2
    outcome, runner, _ = run(store, group("2", max_failed=1), on_v1(), runner=FakeRunner(failing))
    assert outcome.state == GroupState.DEGRADED and set(outcome.failed_hosts) == failing
    assert len(runner.calls) == 3
    record = store.rollouts("prod")[0]
    assert record.state == RolloutState.DEGRADED
    assert record.reason == f"tolerated failures: {COHORT[3]}"
    recorded = {d.host: d.version for d in store.deployed("prod")}
    assert set(recorded) == set(HOSTS) - failing, "a failed host is not recorded as deployed"
    assert set(recorded.values()) == {"2"}


def test_playbook_failures_beyond_tolerance_roll_back_every_touched_host(store):
    # the host fails version 2 only, so the rollback to 1 works: rolled back, not failed
    runner = FakeRunner({COHORT[2]}, failing_versions={"2"})
    outcome, runner, _ = run(store, group("2"), on_v1(), runner=runner)
    assert outcome.state == GroupState.ROLLED_BACK
    assert "1 of 4 hosts failed the playbook (tolerated 0)" in outcome.reason
    rollback_hosts = {h for hosts, apps in runner.calls if apps == {"shop": "1"} for h in hosts}
    assert rollback_hosts == set(COHORT[:5])
    assert not any(set(hosts) & set(COHORT[5:]) for hosts, _ in runner.calls)


def test_a_rollback_that_fails_ends_the_rollout_failed(store):
    runner = FakeRunner({COHORT[2]})  # fails every version: the rollback fails there too
    outcome, _, _ = run(store, group("2"), on_v1(), runner=runner)
    assert outcome.state == GroupState.FAILED
    assert f"rollback failed on {COHORT[2]}" in outcome.reason
    assert store.rollouts("prod")[0].state == RolloutState.FAILED


def test_rollback_batches_hosts_by_their_previous_versions(store):
    recorded = on_v1()
    recorded[(COHORT[0], "shop")] = "0.9"
    outcome, runner, _ = run(store, group("2"), recorded, checker=FakeChecker("2"))
    assert outcome.state == GroupState.ROLLED_BACK
    assert runner.calls[1:] == [((COHORT[0],), {"shop": "0.9"})]


def test_first_deployment_has_nothing_to_roll_back_to(store):
    reverter = FakeReverter()
    outcome, runner, _ = run(store, group("2"), {}, checker=FakeChecker("2"), reverter=reverter)
    assert len(runner.calls) == 1  # no rollback playbook: there is no last good version
    assert "no last good version" in outcome.reason
    assert reverter.calls == [] and outcome.revert_text.startswith("pending")


def test_a_newer_commit_supersedes_a_rollout_waiting_on_gates(store):
    cancel = StopRequest()
    checker = FakeChecker(on_call=lambda _n: cancel.request(StopReason.SUPERSEDED))
    outcome, runner, _ = run(store, group("2"), on_v1(), checker=checker, cancel=cancel)
    assert outcome.state == GroupState.SUPERSEDED
    assert len(runner.calls) == 1, "finish the current step, start no other, roll nothing back"
    assert store.rollouts("prod")[0].state == RolloutState.SUPERSEDED
    assert store.quarantine("prod", "web") is None


def test_a_shutdown_interrupts_between_steps(store):
    cancel = StopRequest()
    checker = FakeChecker(on_call=lambda _n: cancel.request(StopReason.INTERRUPTED))
    outcome, runner, _ = run(store, group("2"), on_v1(), checker=checker, cancel=cancel)
    assert outcome.state == GroupState.INTERRUPTED and len(runner.calls) == 1
    assert store.rollouts("prod")[0].state == RolloutState.INTERRUPTED


class BakeClock(StopRequest):
    """Records each bake (a wait on the stop request) in ``events``; never really waits."""

    def __init__(self, events: list) -> None:
        super().__init__()
        self.events = events

    def wait(self, timeout=None):
        self.events.append(("bake", timeout))
        return False


def test_bake_holds_each_step_between_two_gate_checks(store):
    events: list = []
    checker = FakeChecker(on_call=lambda n: events.append(("gates", n)))
    outcome, _, _ = run(
        store, group("2", bake=30), on_v1(), checker=checker, cancel=BakeClock(events)
    )
    assert outcome.state == GroupState.SUCCEEDED
    assert events == [
        ("gates", 1), ("bake", 30), ("gates", 2),
        ("gates", 3), ("bake", 30), ("gates", 4),
        ("gates", 5), ("bake", 30), ("gates", 6),
    ]  # fmt: skip
    steps = store.steps(store.rollouts("prod")[0].id)
    assert [g["checkpoint"] for g in steps[0].gate_results] == [
        "after_step",
        "after_bake",
    ]


def test_each_bake_end_is_journalled_before_the_bake_starts(store):
    """The web page counts down to ``bake_until`` of the step that bakes."""
    seen: list = []

    class Watch(BakeClock):
        def wait(self, timeout=None):
            [rollout] = store.rollouts("prod")
            seen.append(([s.bake_until for s in store.steps(rollout.id)], time.time(), timeout))
            return False

    run(store, group("2", bake=30), on_v1(), cancel=Watch([]))
    assert len(seen) == 3
    for n, (ends, now, timeout) in enumerate(seen, start=1):
        assert None not in ends[: n - 1], "earlier steps keep theirs"
        assert ends[n:] == [], "later steps are not journalled yet"
        assert now - 5 < ends[n - 1] - timeout <= now  # this step's: now + the bake
    [rollout] = store.rollouts("prod")
    assert all(s.bake_until is not None for s in store.steps(rollout.id))


def test_without_a_bake_no_bake_end_is_journalled(store):
    run(store, group("2"), on_v1())
    [rollout] = store.rollouts("prod")
    assert [s.bake_until for s in store.steps(rollout.id)] == [None, None, None]


def test_a_failure_found_after_bake_still_rolls_back(store):
    # healthy right after the step, broken after the bake
    checker = FakeChecker(verdicts=lambda number, target: number != 2)
    outcome, runner, _ = run(
        store, group("2", bake=30), on_v1(), checker=checker, cancel=BakeClock([])
    )
    assert outcome.state == GroupState.ROLLED_BACK
    assert "step 1: after the bake: gate http failed" in outcome.reason
    assert len(runner.calls) == 2


def test_an_engine_that_raises_ends_the_rollout_failed_with_the_error(store):
    def explode(number: int) -> None:
        raise RuntimeError("checker exploded")

    outcome, _, _ = run(store, group("2"), on_v1(), checker=FakeChecker(on_call=explode))
    assert outcome.state == GroupState.FAILED
    assert outcome.reason == "internal error: RuntimeError: checker exploded"
    [record] = store.rollouts("prod")
    assert record.state == RolloutState.FAILED and record.finished_at is not None
    assert "checker exploded" in record.reason
    assert store.unfinished_rollouts() == []


def test_a_revert_pushed_is_made_the_commit_in_force(store):
    adopted = []
    g = group("2")
    adapters = Adapters(store, FakeRunner(), FakeChecker("2"), FakeReverter())
    engine = GroupRollout(
        adapters,
        ExecutionSettings(),
        environment(g),
        g,
        Deployment(Path("/repo"), "c0ffee", "r1"),
        on_reverted=lambda: adopted.append(store.quarantine("prod", "web")),
    )
    outcome = engine.run(canary.plan_group("prod", g, on_v1()))
    assert outcome.state == GroupState.ROLLED_BACK
    [quarantine] = adopted
    assert quarantine is not None, "the quarantine is written before the revert is adopted"


@pytest.mark.parametrize("status", [PushStatus.CONFLICT, PushStatus.DISABLED, PushStatus.ERROR])
def test_a_revert_not_pushed_is_pending_and_not_adopted(store, status):
    adopted = []
    g = group("2")
    adapters = Adapters(store, FakeRunner(), FakeChecker("2"), FakeReverter(status))
    engine = GroupRollout(
        adapters,
        ExecutionSettings(),
        environment(g),
        g,
        Deployment(Path("/repo"), "c0ffee", "r1"),
        on_reverted=lambda: adopted.append(True),
    )
    outcome = engine.run(canary.plan_group("prod", g, on_v1()))
    assert adopted == [] and outcome.revert_text.startswith(f"pending ({status})")
    assert dataclasses.replace(outcome.revert, detail="x").status is status


def rolled_back_with(store, lease: FakeLease, runner: FakeRunner, reverter: FakeReverter):
    adopted: list[bool] = []
    g = group("2")
    adapters = Adapters(store, runner, FakeChecker("2"), reverter, lease=lease)
    engine = GroupRollout(
        adapters,
        ExecutionSettings(),
        environment(g),
        g,
        Deployment(Path("/repo"), "c0ffee", "r1"),
        on_reverted=lambda: adopted.append(True),
    )
    return engine.run(canary.plan_group("prod", g, on_v1())), adopted


def test_the_revert_is_pushed_only_after_the_lease_is_confirmed_right_before(store):
    runner, reverter = FakeRunner(), FakeReverter()
    asked_after: list[tuple[int, int]] = []  # (playbook runs, pushes) when the lease is asked
    lease = FakeLease(
        on_confirm=lambda: asked_after.append((len(runner.calls), len(reverter.calls)))
    )
    outcome, adopted = rolled_back_with(store, lease, runner, reverter)
    assert outcome.state == GroupState.ROLLED_BACK and adopted == [True]
    assert asked_after == [(2, 0)], "once, after the rollback playbook, before the push"
    assert len(reverter.calls) == 1 and outcome.revert.status is PushStatus.PUSHED


def test_a_replica_that_lost_the_lease_during_the_rollback_pushes_no_revert(store):
    lease = FakeLease()
    reverter = FakeReverter()

    def lose_it_on_rollback(run) -> None:
        if dict(run.extra_vars["reconciler_apps"]) == {
            "shop": "1"
        }:  # the rollback: meanwhile another replica took over
            lease.held = False

    outcome, adopted = rolled_back_with(
        store, lease, FakeRunner(before=lose_it_on_rollback), reverter
    )
    assert lease.confirmations == 1 and not lease.held
    assert reverter.calls == [], "Git is not fenced: a replica without the lease never pushes"
    assert adopted == [] and outcome.revert.status is None
    assert outcome.revert_text == (
        "pending: not pushed: this replica no longer holds the environment's lease"
    )


def test_a_repository_role_named_like_a_shipped_one_is_not_used_and_is_reported(store, tmp_path):
    from structlog.testing import capture_logs

    from reconciler import content

    repo = tmp_path / "repo"
    (repo / "roles" / "deploy_app").mkdir(parents=True)
    seen = []
    runner = FakeRunner(before=lambda run: seen.append(run.roles_path))
    adapters = Adapters(store, runner, FakeChecker(), None, SilentReporter())
    g = group("2")
    engine = GroupRollout(
        adapters, ExecutionSettings(), environment(g), g, Deployment(repo, "c0ffee", "r1")
    )
    with capture_logs() as logs:
        engine.run(canary.plan_group("prod", g, on_v1()))
    assert seen and all(path == (content.roles_dir(), repo / "roles") for path in seen)
    warned = [e for e in logs if e["event"] == "repository_role_shadows_shipped"]
    assert warned and warned[0]["roles"] == ["deploy_app"] and warned[0]["used"] == "shipped"


class FlakyRunner(FakeRunner):
    """Hosts in ``down`` are unreachable for their first ``times`` attempts."""

    def __init__(self, down: dict[str, int], **kwargs) -> None:
        super().__init__(**kwargs)
        self.down = dict(down)

    def run(self, run, **kwargs):
        self.unreachable = {h for h in run.hosts if self.down.get(h, 0) > 0}
        for host in self.unreachable:
            self.down[host] -= 1
        return super().run(run, **kwargs)


def fast_retries(g: GroupDesired, attempts: int = 3) -> GroupDesired:
    rollout = dataclasses.replace(g.rollout, retries=Retries(attempts, 0.0, 0.0))
    return dataclasses.replace(g, rollout=rollout)


def test_an_unreachable_host_is_retried_and_the_step_succeeds(store):
    canary = COHORT[0]
    runner = FlakyRunner({canary: 2})
    outcome, runner, _ = run(store, fast_retries(group("2")), on_v1(), runner=runner)
    assert outcome.state == GroupState.SUCCEEDED
    assert runner.calls[:3] == [((canary,), {"shop": "2"})] * 3, "two retries of the canary"
    first = store.steps(store.rollouts("prod")[0].id)[0]
    assert [(a["attempt"], a["unreachable"]) for a in first.attempts] == [
        (1, [canary]),
        (2, [canary]),
        (3, []),
    ]
    assert first.state == "succeeded"


def test_only_unreachable_hosts_are_retried_never_failed_ones(store):
    runner = FakeRunner({COHORT[0]}, failing_versions={"2"})  # a failed task, not unreachable
    outcome, runner, _ = run(store, fast_retries(group("2")), on_v1(), runner=runner)
    assert outcome.state == GroupState.ROLLED_BACK
    deploys = [c for c in runner.calls if c[1] == {"shop": "2"}]
    assert len(deploys) == 1, "a failing task is a real failure: no retry"


def test_a_host_never_reached_is_not_rolled_back(store):
    # step 2 (4 hosts): COHORT[2] never answers, COHORT[3] fails the playbook: beyond tolerance
    runner = FlakyRunner({COHORT[2]: 99}, failing={COHORT[3]}, failing_versions={"2"})
    outcome, runner, _ = run(store, fast_retries(group("2"), attempts=2), on_v1(), runner=runner)
    assert outcome.state == GroupState.ROLLED_BACK
    rolled_back = {h for hosts, apps in runner.calls if apps == {"shop": "1"} for h in hosts}
    assert COHORT[2] not in rolled_back, "it ran nothing of the rollout"
    assert {COHORT[0], COHORT[1], COHORT[3], COHORT[4]} <= rolled_back


class Observing:
    """An observer that reports the versions the fake runner deployed last."""

    def __init__(self, store) -> None:
        self.store = store
        self.calls: list[tuple[str, ...]] = []

    def observe(self, environment, group, hosts, root, *, cancel=None):
        self.calls.append(tuple(h.name for h in hosts))
        recorded = self.store.recorded_versions(environment.name)
        return [
            ObservedVersion(
                environment.name, h.name, app, recorded.get((h.name, app)), "ok", "", 1.0
            )
            for h in hosts
            for app in group.apps
        ]


def test_every_step_is_observed_after_it(store):
    observer = Observing(store)
    adapters = Adapters(store, FakeRunner(), FakeChecker(), observer=observer)
    g = group("2")
    engine = GroupRollout(
        adapters, ExecutionSettings(), environment(g), g, Deployment(Path("/repo"), "c0", "r1")
    )
    engine.run(canary.plan_group("prod", g, on_v1()))
    assert [len(c) for c in observer.calls] == [1, 4, 5], "each step's hosts, once"
    assert sorted(h for c in observer.calls for h in c) == sorted(COHORT)
    assert {o.version for o in store.observed("prod").values()} == {"2"}


def observing_facts(version: str, *, max_failed: int = 0) -> GroupDesired:
    return dataclasses.replace(
        group(version, max_failed=max_failed), observe=Observe(fact=FactProbe())
    )


def test_hosts_the_deploy_reported_are_recorded_from_the_report_not_looked_at(store):
    observer = Observing(store)
    runner = FakeRunner(reports=True)
    ticks = iter(range(1, 10_000))
    adapters = Adapters(
        store, runner, FakeChecker(), observer=observer, clock=lambda: float(next(ticks))
    )
    g = observing_facts("2")
    engine = GroupRollout(
        adapters, ExecutionSettings(), environment(g), g, Deployment(Path("/repo"), "c0", "r1")
    )
    engine.run(canary.plan_group("prod", g, on_v1()))
    assert observer.calls == [], "every host told what it runs in the deploy's events"
    observed = store.observed("prod")
    assert sorted(h for h, _ in observed) == sorted(HOSTS)
    assert {(o.version, o.status) for o in observed.values()} == {("2", "ok")}
    # seen when the step's run ended (not later, when the gates were done)
    ended = {
        host: attempt["finished_at"]
        for step in store.steps(store.rollouts("prod")[0].id)
        for attempt in step.attempts
        for host in attempt["hosts"]
    }
    assert {h: o.observed_at for (h, _), o in observed.items()} == ended


def test_a_host_that_did_not_report_is_looked_at(store):
    """A failed host reports nothing (its report is not used); a group observing another
    fact than the shipped role's is looked at whatever the deploy reported."""
    observer = Observing(store)
    runner = FakeRunner({COHORT[2]}, reports=True)
    adapters = Adapters(store, runner, FakeChecker(), observer=observer)
    g = observing_facts("2", max_failed=1)
    engine = GroupRollout(
        adapters, ExecutionSettings(), environment(g), g, Deployment(Path("/repo"), "c0", "r1")
    )
    engine.run(canary.plan_group("prod", g, on_v1()))
    assert observer.calls == [(COHORT[2],)]

    other = dataclasses.replace(g, observe=Observe(fact=FactProbe(name="app_{app}")))
    observer.calls.clear()
    engine = GroupRollout(
        adapters,
        ExecutionSettings(),
        environment(other),
        other,
        Deployment(Path("/repo"), "c1", "r2"),
    )
    engine.run(canary.plan_group("prod", other, {(h, "shop"): "1" for h in HOSTS}))
    assert sorted(h for c in observer.calls for h in c) == sorted(HOSTS)


def test_a_look_overlaps_the_next_step_and_every_look_is_recorded_before_the_end(store):
    """The look after step 1 waits until step 2's playbook has started: observed in line
    (before the next step) it would never see that and time out."""
    step_2 = threading.Event()
    runner = FakeRunner(before=lambda run: step_2.set() if len(runner.calls) == 1 else None)
    overlapped: list[bool] = []

    class Waiting(Observing):
        def observe(self, environment, group, hosts, root, *, cancel=None):
            if not self.calls:
                overlapped.append(step_2.wait(timeout=30))  # a liveness bound, not a timing
            return super().observe(environment, group, hosts, root, cancel=cancel)

    observer = Waiting(store)
    finished_with: list[int] = []

    class Store(type(store)):  # the end is recorded only after every look was recorded
        def finish_rollout(self, *args, **kwargs):
            finished_with.append(len(self.observed("prod")))
            return super().finish_rollout(*args, **kwargs)

    store.__class__ = Store
    adapters = Adapters(store, runner, FakeChecker(), observer=observer)
    g = group("2")
    engine = GroupRollout(
        adapters, ExecutionSettings(), environment(g), g, Deployment(Path("/repo"), "c0", "r1")
    )
    outcome = engine.run(canary.plan_group("prod", g, on_v1()))
    assert outcome.state == GroupState.SUCCEEDED
    assert overlapped == [True], "step 2 started while step 1's hosts were being looked at"
    assert finished_with == [len(COHORT)]


def test_a_failed_self_heal_ends_failed_without_rollback_or_revert(store):
    reverter = FakeReverter()
    outcome, runner, _ = run_heal(store, reverter)
    assert outcome.state == GroupState.FAILED and outcome.reason.startswith("self-heal failed")
    assert [apps for _, apps in runner.calls] == [{"shop": "2"}], "no rollback playbook"
    assert reverter.calls == [] and store.quarantine("prod", "web") is None
    assert store.rollouts("prod")[0].trigger == RolloutTrigger.SELF_HEAL


def run_heal(store, reverter):
    g = dataclasses.replace(group("2"), rollout=Rollout(canary=(100,)))
    runner = FakeRunner()
    adapters = Adapters(store, runner, FakeChecker("2"), reverter)
    engine = GroupRollout(
        adapters,
        ExecutionSettings(),
        environment(g),
        g,
        Deployment(Path("/repo"), "c0", "r1"),
        trigger=RolloutTrigger.SELF_HEAL,
    )
    recorded = {(h, "shop"): "1" for h in HOSTS[:1]} | {(h, "shop"): "2" for h in HOSTS[1:]}
    return engine.run(canary.plan_group("prod", g, recorded)), runner, None
