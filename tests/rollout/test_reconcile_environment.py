"""One environment's reconcile with fakes of our runner/checker: maintenance windows, parallel
independent groups, ``after`` ordering, and resuming rollouts a crash left unfinished."""

from __future__ import annotations

import contextlib
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.desired.model import DesiredState, EnvironmentDesired, GroupDesired, Host, Rollout
from reconciler.desired.schema import MaintenanceWindow
from reconciler.edges.git import CommitInfo
from reconciler.record.sqlite import DeployedVersion, RolloutRecord, RunRecord, StepRecord
from reconciler.rollout import reconciler as reconcile
from reconciler.settings import Settings
from tests.rollout.test_group_rollout import FakeChecker, FakeRunner, store  # noqa: F401

# 2026-11-24 (a Tuesday) 12:00 UTC
NOON = datetime(2026, 11, 24, 12, 0, tzinfo=UTC).timestamp()


def group(name, hosts, version="2", after=(), windows=()) -> GroupDesired:
    return GroupDesired(
        name=name,
        apps={name: version},
        hosts=tuple(Host(h, "127.0.0.1") for h in hosts),
        after=tuple(after),
        playbook="deploy-app.yml",
        rollout=Rollout(canary=(100,)),
        health=(),
        timeout_s=30,
        maintenance_windows=tuple(windows),
    )


def snapshot(*groups: GroupDesired) -> reconcile.DesiredSnapshot:
    env = EnvironmentDesired(
        "prod", "environments/prod.yaml", "inv.yml", {g.name: g for g in groups}
    )
    commit = CommitInfo("c0ffee" * 6 + "abcd", "a", "a@x", "m", 0.0)
    return reconcile.DesiredSnapshot(commit, Path("/repo"), DesiredState({"prod": env}))


def reconciler(store, runner, parallel_groups=4, clock=lambda: NOON):  # noqa: F811
    settings = Settings(
        state_dir=Path("/nonexistent"), execution={"parallel_groups": parallel_groups}
    )
    return reconcile.Reconciler(
        settings, source=None, store=store, runner=runner, checker=FakeChecker(), clock=clock
    )


def run_env(rec, snap):
    return rec.reconcile_environment(snap.state.environments["prod"], snap)


NIGHTLY = MaintenanceWindow(cron="0 2 * * *", duration="2h", timezone="Europe/Berlin")
MIDDAY = MaintenanceWindow(cron="30 12 * * 1-5", duration="1h", timezone="Europe/Berlin")


def test_outside_its_window_a_group_is_planned_and_reported_not_applied(store):  # noqa: F811
    runner = FakeRunner()
    snap = snapshot(
        group("web", ["w1", "w2"], windows=[NIGHTLY]), group("worker", ["k1"], after=["web"])
    )
    outcome = run_env(reconciler(store, runner), snap)
    assert runner.calls == []
    assert outcome.result == "deferred"
    states = {g.group: g.state for g in outcome.groups}
    assert states == {"web": "outside_window", "worker": "outside_window"}
    web = next(g for g in outcome.groups if g.group == "web")
    assert "2026-11-25T02:00:00+01:00" in web.reason
    assert store.runs("prod") == [], "nothing applied, no run recorded"
    assert store.environment_status("prod").last_result == "deferred"
    assert not reconcile.ReconcileResult(snap, (outcome,)).failed


def test_inside_its_window_a_group_is_applied(store):  # noqa: F811
    runner = FakeRunner()
    at_1245_berlin = NOON - 15 * 60  # 11:45 UTC = 12:45 in Berlin
    snap = snapshot(group("web", ["w1"], windows=[NIGHTLY, MIDDAY]))
    outcome = run_env(reconciler(store, runner, clock=lambda: at_1245_berlin), snap)
    assert outcome.result == "applied" and runner.calls == [(("w1",), {"web": "2"})]


def test_window_rejected_in_the_desired_state():
    for bad in (
        {"cron": "61 * * * *", "duration": "1h"},
        {"cron": "0 2 * * *", "duration": 0},
        {"cron": "0 2 * * *", "duration": "1h", "timezone": "Mars/Olympus"},
    ):
        with pytest.raises(ValueError):
            MaintenanceWindow.model_validate(bad)


class BarrierRunner(FakeRunner):
    """Each run waits until ``parties`` runs are inside at once (or times out)."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=5)
        self.concurrent = 0
        self.most = 0
        self.lock = threading.Lock()

    def run(self, run, **kwargs):
        with self.lock:
            self.concurrent += 1
            self.most = max(self.most, self.concurrent)
        with contextlib.suppress(threading.BrokenBarrierError):
            self.barrier.wait()
        time.sleep(0.05)
        with self.lock:
            self.concurrent -= 1
        return super().run(run, **kwargs)


def test_independent_groups_roll_out_in_parallel_up_to_the_bound(store):  # noqa: F811
    groups = [group(f"g{i}", [f"h{i}"]) for i in range(4)]
    runner = BarrierRunner(parties=4)
    outcome = run_env(reconciler(store, runner, parallel_groups=4), snapshot(*groups))
    assert outcome.result == "applied" and runner.most == 4
    assert not runner.barrier.broken


def test_the_bound_and_after_are_respected(store, tmp_path):  # noqa: F811
    runner = BarrierRunner(parties=2)
    runner.barrier = threading.Barrier(2, timeout=0.3)
    groups = [
        group("web", ["w1"]),
        group("api", ["a1"]),
        group("worker", ["k1"], after=["web", "api"]),
    ]
    outcome = run_env(reconciler(store, runner, parallel_groups=2), snapshot(*groups))
    assert outcome.result == "applied" and runner.most == 2
    assert [c[1] for c in runner.calls][-1] == {"worker": "2"}, "worker runs after both"

    serial = BarrierRunner(parties=2)
    serial.barrier = threading.Barrier(2, timeout=0.2)
    from reconciler.record.sqlite import SqliteStateStore

    other = SqliteStateStore(tmp_path / "serial.db")
    run_env(reconciler(other, serial, parallel_groups=1), snapshot(*groups[:2]))
    assert serial.most == 1


def _interrupted(store, hosts, apps, state="running"):  # noqa: F811
    store.start_run(RunRecord("run1", "prod", "old", 1.0, None, "running", {}))
    store.start_rollout(
        RolloutRecord("r1", "run1", "prod", "web", "old", apps, "running", "", 1.0, None)
    )
    store.journal_step(
        StepRecord("r1", "deploy", 1, 100, tuple(hosts), state, {}, [], "", 1.0, None)
    )


def test_resume_forgets_hosts_the_planner_would_otherwise_skip(store):  # noqa: F811
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
    rec.runner = runner
    run_env(rec, snap)
    calls = [(sorted(hosts), apps) for hosts, apps in runner.calls]
    assert calls == [(["w1", "w2"], {"web": "1"})]


def test_resume_keeps_last_good_versions_when_the_target_is_still_desired(store):  # noqa: F811
    store.record_deployed(
        [DeployedVersion("prod", h, "web", "1", "web", "c", None, 0.0) for h in ("w1", "w2")]
    )
    _interrupted(store, ["w1"], {"web": "2"})
    snap = snapshot(group("web", ["w1", "w2"], version="2"))
    reconciler(store, FakeRunner()).resume_interrupted(snap)
    assert {(d.host, d.version) for d in store.deployed("prod")} == {("w1", "1"), ("w2", "1")}
