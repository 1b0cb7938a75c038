"""Faults on the real daemon: the remote disappears, an invalid commit, SIGTERM and kill -9
in the middle of a rollout step."""

from __future__ import annotations

import signal

import psutil

from reconciler.edges.ansible import RUNS_DIR_ENV
from reconciler.record.sqlite import SqliteStateStore
from reconciler.settings import Settings
from tests.daemon.conftest import wait_for

V1 = {"web": {"shop": "1.0.0"}, "worker": {"jobs": "3.0.0"}}
V2 = {"web": {"shop": "1.1.0"}, "worker": {"jobs": "3.0.0"}}


def test_remote_removed_then_restored_the_daemon_stays_up_and_recovers(setup, make_daemon):
    setup.commit_versions(V1, "initial")
    daemon = make_daemon(source={"poll_interval": "1s", "poll_jitter": 0.0}).start()
    daemon.wait_converged("1.0.0", "the initial convergence")
    valid = daemon.status()["source"]["valid_commit"]
    hidden = setup.remote.bare.with_name("hidden.git")
    setup.remote.bare.rename(hidden)
    try:
        wait_for(lambda: not daemon.status()["source"]["up"], 30, "source up = 0")
        status = daemon.status()
        assert "cannot fetch" in status["source"]["error"]
        assert status["source"]["valid_commit"] == valid, "the last known state stays in force"
        assert daemon.get("/healthz").status_code == 200
        assert "reconciler_source_up 0.0" in daemon.get("/metrics").text
        wait_for(lambda: daemon.status()["daemon"]["source_failures"] >= 2, 30, "a backoff")
        assert any(e.get("event") == "source_backoff" for e in daemon.events())
    finally:
        hidden.rename(setup.remote.bare)
    sha = setup.commit_versions(V2, "bump after the outage")
    wait_for(lambda: daemon.status()["source"]["up"], 60, "the source to come back by itself")
    wait_for(lambda: daemon.converged("1.1.0"), 120, "convergence after the outage")
    assert daemon.status()["source"]["valid_commit"] == sha
    assert any(e.get("event") == "source_recovered" for e in daemon.events())


def test_an_invalid_commit_is_rejected_and_the_last_valid_one_kept(converged):
    daemon = converged
    valid = daemon.status()["source"]["valid_commit"]
    bad = daemon.setup.remote.commit(
        "typo",
        {
            "environments/prod.yaml": "environment: prod\ninventory: inventories/prod.yml\n"
            'groups:\n  web:\n    apps: {shop: \'{{ lookup("pipe", "id") }}\'}\n'
        },
    )
    daemon.post("/api/v1/sync", {"wait": True, "timeout": 60})
    source = daemon.status()["source"]
    assert source["valid_commit"] == valid and source["rejected_commit"] == bad
    assert any("templating" in p for p in source["problems"])
    rejected = [e for e in daemon.events() if e.get("event") == "commit_rejected"]
    assert rejected and rejected[-1]["commit"] == bad
    assert "reconciler_source_tip_valid 0.0" in daemon.get("/metrics").text
    assert daemon.served()["web-01"] == "1.0.0"


def _store(daemon) -> SqliteStateStore:
    return SqliteStateStore(Settings.load(daemon.config).database_path)


def _running_step(store: SqliteStateStore, commit: str):
    for rollout in store.rollouts("prod", limit=50):
        if rollout.commit == commit:
            for step in store.steps(rollout.id):
                if step.state == "running":
                    return rollout, step
    return None


def _marked_processes(runs_dir: str) -> list[int]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(RUNS_DIR_ENV) == runs_dir:
                found.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return found


def _canary_bump(setup) -> str:
    return setup.commit_versions(V2, "bump in small steps", canary="[25, 50, 100]")


def test_sigterm_during_a_step_finishes_it_journals_it_and_a_restart_finishes(converged):
    daemon = converged
    store = _store(daemon)
    sha = _canary_bump(daemon.setup)
    daemon.github_push()
    rollout, _ = wait_for(lambda: _running_step(store, sha), 60, "a running step", 0.05)
    daemon.send(signal.SIGTERM)
    assert daemon.proc.wait(timeout=90) == 0
    steps = store.steps(rollout.id)
    assert [s.state for s in steps] == ["succeeded"], "the running step finished, no other began"
    assert steps[0].host_results and steps[0].finished_at is not None
    assert store.rollout(rollout.id).state == "interrupted"
    served = daemon.served()
    assert sorted(v for h, v in served.items() if h.startswith("web")) == [
        "1.0.0",
        "1.0.0",
        "1.0.0",
        "1.1.0",
    ]
    daemon.start()
    wait_for(lambda: daemon.converged("1.1.0"), 120, "the restart to finish the rollout")
    later = [r for r in store.rollouts("prod") if r.commit == sha and r.id != rollout.id]
    assert [r.state for r in later] == ["succeeded"]


def test_kill_9_during_a_step_restart_resumes_and_converges(converged):
    daemon = converged
    store = _store(daemon)
    runs_dir = str(Settings.load(daemon.config).runs_dir)
    sha = _canary_bump(daemon.setup)
    daemon.github_push()
    rollout, _ = wait_for(lambda: _running_step(store, sha), 60, "a running step", 0.05)
    daemon.send(signal.SIGKILL)
    daemon.proc.wait(timeout=30)
    assert store.rollout(rollout.id).finished_at is None, "the journal shows it unfinished"
    daemon.start()
    wait_for(lambda: daemon.converged("1.1.0"), 180, "the restart to converge")
    resumed = store.rollout(rollout.id)
    assert resumed.state == "interrupted" and "redeployed" in resumed.reason
    assert [s.state for s in store.steps(rollout.id)] == ["interrupted"]
    assert any(e.get("event") == "rollout_resumed" for e in daemon.events())
    for host in daemon.setup.groups["web"]:
        assert daemon.setup.fleet.current_release(host, "shop") == "1.1.0"
    ours = set(_marked_processes(runs_dir))
    assert ours <= {p.pid for p in psutil.Process(daemon.proc.pid).children(recursive=True)}
