"""The HTTP API and the CLI talking to the daemon: data equals the state, auth, the lock."""

from __future__ import annotations

import subprocess

from reconciler.record.sqlite import SqliteStateStore
from reconciler.settings import Settings
from tests.daemon.conftest import RECONCILER, wait_for


def test_api_reports_desired_versus_deployed_per_host(converged):
    daemon = converged
    store = SqliteStateStore(Settings.load(daemon.config).database_path)
    assert daemon.get("/healthz").json() == {"status": "ok"}
    detail = daemon.get("/api/v1/environments/prod").json()
    recorded = {(d.host, d.app): d.version for d in store.deployed("prod")}
    rows = {(h["host"], h["app"]): h for h in detail["hosts"]}
    assert set(rows) == set(recorded) and len(rows) == 6
    for key, row in rows.items():
        assert row["deployed"] == recorded[key] == row["desired"] and row["in_sync"]
        assert daemon.served()[key[0]] == row["deployed"]
    groups = {g["name"]: g for g in detail["groups"]}
    assert groups["web"]["hosts"] == 4 and groups["worker"]["after"] == ["web"]
    assert all(g["in_sync"] and g["drifted_hosts"] == 0 for g in groups.values())
    rollouts = daemon.rollouts()
    assert {(r["group"], r["state"]) for r in rollouts} == {
        ("web", "succeeded"),
        ("worker", "succeeded"),
    }
    one = daemon.get(f"/api/v1/rollouts/{rollouts[0]['id']}").json()
    assert one["steps"] and one["steps"][0]["state"] == "succeeded"
    assert daemon.get("/api/v1/rollouts/nope").status_code == 404
    assert daemon.get("/api/v1/environments/nope").status_code == 404
    spec = daemon.get("/openapi.json").json()
    assert {"/api/v1/status", "/api/v1/sync", "/api/v1/webhooks/{provider}"} <= set(spec["paths"])


def test_mutating_calls_need_the_token_and_one_daemon_owns_the_state_dir(converged):
    daemon = converged
    assert daemon.post("/api/v1/sync", token=None).status_code == 401
    assert daemon.post("/api/v1/sync", token="wrong").status_code == 401
    assert daemon.post("/api/v1/environments/prod/suspend", token="wrong").status_code == 401
    assert daemon.status()["environments"][0]["suspended"] is False
    answer = daemon.post("/api/v1/sync", {"environment": "prod", "wait": True, "timeout": 60})
    assert answer.status_code == 202, answer.text
    assert answer.json()["finished"]["prod"]["result"] == "in_sync"
    assert daemon.post("/api/v1/sync", {"environment": "nope"}).status_code == 404
    # A second daemon on the same state dir refuses to start; the first one is unharmed.
    second = subprocess.run(
        [RECONCILER, "run", "--config", str(daemon.config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "250", "PATH": "/usr/bin:/bin"},
    )
    assert second.returncode == 2
    assert "in use by another reconciler" in second.stderr
    assert daemon.get("/readyz").status_code == 200


def cli(daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RECONCILER, "--config", str(daemon.config), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={"COLUMNS": "250", "PATH": "/usr/bin:/bin"},
    )


def test_cli_talks_to_the_running_daemon(converged):
    daemon = converged
    status = cli(daemon, "status")
    assert status.returncode == 0, status.stderr
    assert "from the daemon" in status.stdout and "6/6" in status.stdout
    assert cli(daemon, "suspend", "prod").returncode == 0
    assert daemon.status()["environments"][0]["suspended"] is True
    daemon.setup.commit_versions({"web": {"shop": "1.1.0"}, "worker": {"jobs": "3.0.0"}}, "bump")
    synced = cli(daemon, "sync", "--once")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert "sync through" in synced.stdout and "suspended" in synced.stdout
    assert daemon.served()["web-01"] == "1.0.0", "a suspended environment changed"
    assert cli(daemon, "resume", "prod").returncode == 0
    wait_for(lambda: daemon.converged("1.1.0"), 120, "convergence after resume")
    history = cli(daemon, "history", "--env", "prod")
    assert history.returncode == 0 and history.stdout.count("succeeded") >= 3
