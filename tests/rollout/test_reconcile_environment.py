"""One environment's reconcile with fakes of our runner/checker Protocols: maintenance windows,
parallel independent groups, ``after`` ordering, quarantines, results, and resuming rollouts a
crash left unfinished."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.desired.model import DesiredState, EnvironmentDesired, GroupDesired, Host, Rollout
from reconciler.desired.schema import (
    FactProbe,
    HealthCheck,
    HttpGate,
    MaintenanceWindow,
    Observe,
    SelfHeal,
)
from reconciler.edges.git import CommitInfo
from reconciler.plan import policy
from reconciler.record import ObservedVersion
from reconciler.record.sqlite import (
    DeployedVersion,
    QuarantineRecord,
    RolloutRecord,
    RunRecord,
    SqliteStateStore,
    StepRecord,
)
from reconciler.rollout.ports import Adapters
from reconciler.rollout.reconciler import Reconciler, ReconcileResult
from reconciler.settings import Settings
from reconciler.source.refresh import DesiredSnapshot
from reconciler.states import EnvironmentResult, GroupState, RolloutTrigger
from reconciler.testing.fakes import FakeChecker, FakeReverter, FakeRunner, StaticSource

# 2026-11-24 (a Tuesday) 12:00 UTC
NOON = datetime(2026, 11, 24, 12, 0, tzinfo=UTC).timestamp()
WAIT = 30  # seconds: a bound that only a broken implementation reaches


@pytest.fixture
def store(tmp_path):
    return SqliteStateStore(tmp_path / "state.db")


def group(name, hosts, version="2", after=(), windows=(), health=()) -> GroupDesired:
    return GroupDesired(
        name=name,
        apps={name: version},
        hosts=tuple(Host(h, "127.0.0.1") for h in hosts),
        after=tuple(after),
        playbook="deploy-app.yml",
        rollout=Rollout(canary=(100,)),
        health=tuple(health),
        timeout_s=30,
        maintenance_windows=tuple(windows),
    )


def snapshot(*groups: GroupDesired, sha: str = "c0ffee" * 6 + "abcd") -> DesiredSnapshot:
    env = EnvironmentDesired(
        "prod", "environments/prod.yaml", "inv.yml", {g.name: g for g in groups}
    )
    commit = CommitInfo(sha, "a", "a@x", "m", 0.0)
    return DesiredSnapshot(commit, Path("/repo"), DesiredState({"prod": env}))


def reconciler(store, runner, parallel_groups=4, clock=lambda: NOON, checker=None, **kw):
    settings = Settings(
        state_dir=Path("/nonexistent"), execution={"parallel_groups": parallel_groups}
    )
    adapters = Adapters(
        store,
        runner,
        checker or FakeChecker(),
        kw.get("reverter"),
        clock=clock,
        observer=kw.get("observer"),
    )
    source = kw.get("source") or StaticSource(snapshot())
    return Reconciler(settings, source=source, adapters=adapters)


def run_env(rec, snap, **kwargs):
    return rec.reconcile_environment(snap.state.environments["prod"], snap, **kwargs)


NIGHTLY = MaintenanceWindow(cron="0 2 * * *", duration="2h", timezone="Europe/Berlin")
MIDDAY = MaintenanceWindow(cron="30 12 * * 1-5", duration="1h", timezone="Europe/Berlin")
GATE = HealthCheck(http=HttpGate(url="http://{host}/"))


def test_outside_its_window_a_group_is_planned_and_reported_not_applied(store):
    runner = FakeRunner()
    snap = snapshot(
        group("web", ["w1", "w2"], windows=[NIGHTLY]), group("worker", ["k1"], after=["web"])
    )
    outcome = run_env(reconciler(store, runner), snap)
    assert runner.calls == []
    assert outcome.result == EnvironmentResult.DEFERRED
    states = {g.group: g.state for g in outcome.groups}
    assert states == {"web": "outside_window", "worker": "outside_window"}
    assert "2026-11-25T02:00:00+01:00" in outcome.group("web").reason
    assert store.runs("prod") == [], "nothing applied, no run recorded"
    assert store.environment_status("prod").last_result == "deferred"
    assert not ReconcileResult(snap, (outcome,)).failed


def test_inside_its_window_a_group_is_applied(store):
    runner = FakeRunner()
    at_1245_berlin = NOON - 15 * 60  # 11:45 UTC = 12:45 in Berlin
    snap = snapshot(group("web", ["w1"], windows=[NIGHTLY, MIDDAY]))
    outcome = run_env(reconciler(store, runner, clock=lambda: at_1245_berlin), snap)
    assert outcome.result == EnvironmentResult.APPLIED
    assert runner.calls == [(("w1",), {"web": "2"})]


class GatedRunner(FakeRunner):
    """Each run announces itself, then waits until the test releases it: concurrency is
    observed on events, never on time."""

    def __init__(self) -> None:
        super().__init__()
        self.cond = threading.Condition()
        self.inside: list[str] = []
        self.most = 0
        self.release = threading.Semaphore(0)

    def run(self, run, **kwargs):
        with self.cond:
            self.inside.append(run.hosts[0])
            self.most = max(self.most, len(self.inside))
            self.cond.notify_all()
        assert self.release.acquire(timeout=WAIT), "never released"
        with self.cond:
            self.inside.remove(run.hosts[0])
        return super().run(run, **kwargs)

    def wait_inside(self, count: int) -> list[str]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.inside) >= count, timeout=WAIT)
            return list(self.inside)

    def wait_for(self, host: str) -> list[str]:
        with self.cond:
            assert self.cond.wait_for(lambda: host in self.inside, timeout=WAIT)
            return list(self.inside)


def background(fn):
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", fn()))
    thread.start()
    return thread, result


def test_independent_groups_roll_out_in_parallel_up_to_the_bound(store):
    runner = GatedRunner()
    groups = [group(f"g{i}", [f"h{i}"]) for i in range(4)]
    thread, result = background(
        lambda: run_env(reconciler(store, runner, parallel_groups=4), snapshot(*groups))
    )
    assert sorted(runner.wait_inside(4)) == ["h0", "h1", "h2", "h3"]
    for _ in groups:
        runner.release.release()
    thread.join(WAIT)
    assert result["value"].result == EnvironmentResult.APPLIED and runner.most == 4


def test_the_bound_and_after_are_respected(store):
    runner = GatedRunner()
    groups = [
        group("web", ["w1"]),
        group("api", ["a1"]),
        group("worker", ["k1"], after=["web", "api"]),
    ]
    thread, result = background(
        lambda: run_env(reconciler(store, runner, parallel_groups=2), snapshot(*groups))
    )
    assert sorted(runner.wait_inside(2)) == ["a1", "w1"], "worker waits for web and api"
    runner.release.release()
    runner.release.release()
    assert runner.wait_for("k1") == ["k1"]
    runner.release.release()
    thread.join(WAIT)
    assert result["value"].result == EnvironmentResult.APPLIED
    assert runner.most == 2 and runner.calls[-1][1] == {"worker": "2"}


def test_one_group_at_a_time_when_the_bound_is_one(store):
    runner = GatedRunner()
    groups = [group("web", ["w1"]), group("api", ["a1"])]
    thread, _ = background(
        lambda: run_env(reconciler(store, runner, parallel_groups=1), snapshot(*groups))
    )
    [first] = runner.wait_inside(1)
    runner.release.release()
    runner.wait_for("a1" if first == "w1" else "w1")
    runner.release.release()
    thread.join(WAIT)
    assert runner.most == 1 and len(runner.calls) == 2


def test_a_failed_group_holds_the_groups_after_it(store):
    store.record_deployed([DeployedVersion("prod", "w1", "web", "1", "web", "c", None, 0.0)])
    snap = snapshot(group("web", ["w1"], health=[GATE]), group("worker", ["k1"], after=["web"]))
    outcome = run_env(reconciler(store, FakeRunner(), checker=FakeChecker("2")), snap)
    assert outcome.result == EnvironmentResult.ROLLED_BACK
    assert outcome.group("worker").state == GroupState.WAITING
    assert outcome.group("worker").reason == "waiting for web"
    assert store.runs("prod")[0].result == "rolled_back"


def test_tolerated_host_failures_make_the_environment_degraded(store):
    snap = snapshot(
        GroupDesired(
            **{
                **group("web", ["w1", "w2"]).__dict__,
                "rollout": Rollout(canary=(100,), max_failed_hosts=1),
            }
        ),
        group("worker", ["k1"], after=["web"]),
    )
    outcome = run_env(reconciler(store, FakeRunner({"w2"})), snap)
    assert outcome.group("web").state == GroupState.DEGRADED
    assert outcome.group("worker").state == GroupState.SUCCEEDED, "degraded does not block"
    assert outcome.result == EnvironmentResult.DEGRADED and outcome.result.ok
    assert store.environment_status("prod").last_applied_commit == snap.commit.sha


def test_a_quarantine_holds_while_its_versions_are_desired_and_is_lifted_after(store):
    store.record_deployed([DeployedVersion("prod", "w1", "web", "1", "web", "c", None, 0.0)])
    store.set_quarantine(
        QuarantineRecord(
            "prod", "web", policy.fingerprint({"web": "2"}), "bad", "r9", "gate", "pushed", 1.0
        )
    )
    runner = FakeRunner()
    held = run_env(reconciler(store, runner), snapshot(group("web", ["w1"], version="2")))
    assert held.result == EnvironmentResult.QUARANTINED and runner.calls == []
    # the revert is in force: the group is in sync and the quarantine no longer holds
    back = run_env(reconciler(store, runner), snapshot(group("web", ["w1"], version="1")))
    assert back.result == EnvironmentResult.IN_SYNC and runner.calls == []
    assert store.quarantines() == [], "lifted although nothing needed to run"


def test_the_daemons_own_revert_becomes_the_commit_in_force(store):
    store.record_deployed([DeployedVersion("prod", "w1", "web", "1", "web", "c", None, 0.0)])
    reverted = snapshot(group("web", ["w1"], version="1"), sha="feedface" * 5)
    source = StaticSource(reverted)
    rec = reconciler(
        store, FakeRunner(), checker=FakeChecker("2"), reverter=FakeReverter(), source=source
    )
    adopted = []
    bad = snapshot(group("web", ["w1"], version="2", health=[GATE]))
    outcome = run_env(rec, bad, on_revert=adopted.append)
    assert outcome.result == EnvironmentResult.ROLLED_BACK
    assert source.refreshes == 1 and adopted == [reverted]


def test_a_reconcile_that_raises_ends_its_run_in_error(store):
    def explode(run):
        raise RuntimeError("runner exploded")

    snap = snapshot(group("web", ["w1"]))
    rec = reconciler(store, FakeRunner(before=explode))
    outcome = run_env(rec, snap)
    # the group engine turns its own exception into a failed rollout
    assert outcome.result == EnvironmentResult.FAILED
    assert "runner exploded" in outcome.group("web").reason
    [run] = store.runs("prod")
    assert run.result == "failed" and run.finished_at is not None
    assert store.unfinished_rollouts() == []


def _interrupted(store, hosts, apps, state="running"):
    store.start_run(RunRecord("run1", "prod", "old", 1.0, None, "running", {}))
    store.start_rollout(
        RolloutRecord("r1", "run1", "prod", "web", "old", apps, "running", "", 1.0, None)
    )
    store.journal_step(
        StepRecord("r1", "deploy", 1, 100, tuple(hosts), state, {}, [], "", 1.0, None)
    )


def test_resume_forgets_hosts_the_planner_would_otherwise_skip(store):
    store.record_deployed(
        [DeployedVersion("prod", h, "web", "1", "web", "c", None, 0.0) for h in ("w1", "w2", "w3")]
    )
    _interrupted(store, ["w1", "w2"], {"web": "2"})
    # Meanwhile Git went back to version 1: w1 and w2 may run 2 although recorded as 1.
    snap = snapshot(group("web", ["w1", "w2", "w3"], version="1"))
    rec = reconciler(store, FakeRunner())
    resumed = rec.resume_interrupted(snap)
    assert [r.id for r in resumed] == ["r1"]
    assert store.rollout("r1").state == "interrupted"
    assert [s.state for s in store.steps("r1")] == ["interrupted"]
    assert store.unfinished_rollouts() == []
    assert {d.host for d in store.deployed("prod")} == {"w3"}
    assert store.runs("prod")[0].result == "interrupted"
    runner = FakeRunner()
    run_env(reconciler(store, runner), snap)
    calls = [(sorted(hosts), apps) for hosts, apps in runner.calls]
    assert calls == [(["w1", "w2"], {"web": "1"})]


def test_resume_keeps_last_good_versions_when_the_target_is_still_desired(store):
    store.record_deployed(
        [DeployedVersion("prod", h, "web", "1", "web", "c", None, 0.0) for h in ("w1", "w2")]
    )
    _interrupted(store, ["w1"], {"web": "2"})
    snap = snapshot(group("web", ["w1", "w2"], version="2"))
    reconciler(store, FakeRunner()).resume_interrupted(snap)
    assert {(d.host, d.version) for d in store.deployed("prod")} == {("w1", "1"), ("w2", "1")}


class Reporting:
    """An observer that reports ``versions`` (host -> version) for every observed host."""

    def __init__(self, versions: dict[str, str | None]) -> None:
        self.versions = versions
        self.calls = 0

    def observe(self, environment, group, hosts, root, *, cancel=None):
        self.calls += 1
        return [
            ObservedVersion(
                environment.name, h.name, app, self.versions.get(h.name), "ok", "", NOON
            )
            for h in hosts
            for app in group.apps
        ]


def healing(name, hosts, version="2") -> GroupDesired:
    return dataclasses.replace(
        group(name, hosts, version),
        observe=Observe(fact=FactProbe()),
        self_heal=SelfHeal(enabled=True, flap_period=3600),
    )


def test_out_of_band_hosts_are_reported_not_touched_without_self_heal(store):
    store.record_deployed([DeployedVersion("prod", "w1", "web", "2", "web", "c", None, 0.0)])
    g = dataclasses.replace(group("web", ["w1"]), observe=Observe(fact=FactProbe()))
    runner, observer = FakeRunner(), Reporting({"w1": "1"})
    rec = reconciler(store, runner, observer=observer)
    outcome = run_env(rec, snapshot(g))
    assert observer.calls == 1, "never observed: due at once"
    assert runner.calls == [] and outcome.result == EnvironmentResult.IN_SYNC
    [mark] = store.drift_marks("prod").values()
    assert mark.since == NOON and not mark.flapping
    assert store.observed("prod")[("w1", "web")].version == "1"


def test_self_heal_redeploys_an_out_of_band_host_and_a_flapping_one_is_left_alone(store):
    store.record_deployed(
        [DeployedVersion("prod", h, "web", "2", "web", "c", None, 0.0) for h in ("w1", "w2")]
    )
    clock = [NOON]
    runner = FakeRunner()
    observer = Reporting({"w1": "1", "w2": "2"})
    rec = reconciler(store, runner, observer=observer, clock=lambda: clock[0])
    outcome = run_env(rec, snapshot(healing("web", ["w1", "w2"])))
    assert runner.calls == [(("w1",), {"web": "2"})], "only the out-of-band host"
    assert outcome.group("web").state == GroupState.SUCCEEDED
    heal = store.rollouts("prod")[0]
    assert heal.trigger == RolloutTrigger.SELF_HEAL
    # w1 drifts again 10 minutes later: flapping, not healed a second time
    clock[0] = NOON + 600
    observer.versions["w1"] = "1"
    run_env(rec, snapshot(healing("web", ["w1", "w2"])), observe=True)
    assert len(runner.calls) == 1, "a flapping host is not healed again"
    assert store.drift_marks("prod")[("w1", "web")].flapping


def test_self_heal_waits_while_the_environment_is_suspended(store):
    store.record_deployed([DeployedVersion("prod", "w1", "web", "2", "web", "c", None, 0.0)])
    store.update_environment("prod", NOON, suspended=True)
    runner = FakeRunner()
    rec = reconciler(store, runner, observer=Reporting({"w1": "1"}))
    outcome = run_env(rec, snapshot(healing("web", ["w1"])))
    assert runner.calls == [] and outcome.result == EnvironmentResult.SUSPENDED


def test_hosts_gone_from_the_inventory_are_forgotten(store):
    store.record_deployed(
        [DeployedVersion("prod", h, "web", "2", "web", "c", None, 0.0) for h in ("w1", "gone")]
    )
    run_env(reconciler(store, FakeRunner()), snapshot(group("web", ["w1"])))
    assert set(store.recorded_versions("prod")) == {("w1", "web")}


class Counting(Reporting):
    def __init__(self, versions: dict[str, str | None]) -> None:
        super().__init__(versions)
        self.hosts: list[tuple[str, ...]] = []

    def observe(self, environment, group, hosts, root, *, cancel=None):
        self.hosts.append(tuple(h.name for h in hosts))
        return super().observe(environment, group, hosts, root, cancel=cancel)


def test_a_due_look_skips_pending_and_new_hosts_and_observe_looks_at_every_host(store):
    """w1 is about to get version 3 (pending: its class does not depend on what it runs, and
    its rollout reports it), w3 was never deployed (a new host: likewise); w2 is in sync and
    never observed: due, and the only one looked at."""
    store.record_deployed(
        [
            DeployedVersion("prod", "w1", "web", "2", "web", "c", None, 0.0),
            DeployedVersion("prod", "w2", "api", "3", "api", "c", None, 0.0),
        ]
    )
    web = dataclasses.replace(group("web", ["w1", "w3"], "3"), observe=Observe(fact=FactProbe()))
    api = dataclasses.replace(group("api", ["w2"], "3"), observe=Observe(fact=FactProbe()))
    observer = Counting({"w1": "2", "w2": "3", "w3": None})
    rec = reconciler(store, FakeRunner(), observer=observer)
    run_env(rec, snapshot(web, api))
    # before the rollout only w2; w1 and w3 after their step (this fake runner's deploys report
    # nothing)
    assert observer.hosts[0] == ("w2",), "a pending or new host was looked at before its rollout"
    assert sorted(h for hosts in observer.hosts[1:] for h in hosts) == ["w1", "w3"]

    observer.hosts.clear()
    store.update_environment("prod", NOON, suspended=True)
    run_env(rec, snapshot(dataclasses.replace(web, apps={"web": "4"}), api), observe=True)
    assert sorted(h for hosts in observer.hosts for h in hosts) == ["w1", "w2", "w3"], (
        "reconciler observe: every host"
    )
