"""What the daemon says is true: after its own revert, with tolerated failures, while the CLI
reads, and while a revert push hangs. A real daemon, real Git, the local fleet."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import threading
from pathlib import Path

from reconciler.settings import Settings
from reconciler.testing.fleet import write_inventory
from tests.daemon.conftest import RECONCILER, wait_for
from tests.daemon.test_metrics import samples, value
from tests.end_to_end.test_rollout import env_text


def cli(daemon, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI next to the running daemon (same config, same state dir)."""
    return subprocess.run(
        [RECONCILER, "--config", str(daemon.config), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "250", **(env or {})},
    )


def rollouts(metrics, result: str) -> float | None:
    """reconciler_rollouts_total of prod/web with this result."""
    labels = {"environment": "prod", "group": "web", "result": result}
    return value(metrics, "reconciler_rollouts_total", **labels)


def dump(database: Path) -> list[tuple]:
    """Every row of every table, read without writing."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return [(t, *row) for t in sorted(tables) for row in db.execute(f"SELECT * FROM {t}")]


def test_after_its_own_revert_everything_says_the_revert_is_in_force(converged):
    daemon = converged
    setup = daemon.setup
    setup.fleet.build("shop", "1.2.0", "unhealthy")
    good = setup.remote.commit("gated 1.0.0", {"environments/prod.yaml": env_text("1.0.0")})
    assert daemon.post("/api/v1/sync", {"wait": True, "timeout": 120}).status_code == 202
    bad = setup.remote.commit("bad bump", {"environments/prod.yaml": env_text("1.2.0")})
    answer = daemon.post("/api/v1/sync", {"wait": True, "timeout": 300}).json()
    assert answer["finished"]["prod"]["groups"]["web"]["state"] == "rolled_back"
    revert = setup.remote.remote_head()
    assert revert not in (good, bad)
    assert f"Reverts: {bad}" in setup.remote.git(setup.remote.bare, "log", "-1", "--format=%B")

    # No poll, no webhook since: the revert is the commit in force right away, everywhere.
    status = daemon.status()
    assert status["source"]["valid_commit"] == revert
    assert status["quarantines"] == [], "the failed versions are no longer desired"
    web = next(g for g in status["environments"][0]["groups"] if g["name"] == "web")
    assert web["apps"] == {"shop": "1.0.0"} and web["in_sync"] and not web["quarantined"]
    metrics = samples(daemon.get("/metrics").text)
    assert (
        value(metrics, "reconciler_drift_hosts", environment="prod", group="web", app="shop") == 0
    )
    shop = {"environment": "prod", "group": "web", "app": "shop"}
    assert value(metrics, "reconciler_desired_version_info", **shop, version="1.0.0") == 1
    assert value(metrics, "reconciler_desired_version_info", **shop, version="1.2.0") is None
    assert value(metrics, "reconciler_quarantined", environment="prod", group="web") == 0
    assert rollouts(metrics, "rolled_back") == 1
    assert value(metrics, "reconciler_revert_commits_total", environment="prod") == 1
    diff = cli(daemon, "diff")
    assert diff.returncode == 0, diff.stdout + diff.stderr

    # The next reconcile has nothing to do and lifts the stored quarantine.
    answer = daemon.post("/api/v1/sync", {"wait": True, "timeout": 120}).json()
    assert answer["finished"]["prod"]["result"] == "in_sync"
    database = Settings.load(daemon.config).database_path
    assert [row for row in dump(database) if row[0] == "quarantine"] == []


def test_tolerated_failures_are_degraded_in_history_api_and_metrics(converged):
    daemon = converged
    setup = daemon.setup
    text = env_text("1.1.0", canary="[100]").replace("max_failed_hosts: 0", "max_failed_hosts: 1")
    # web-02 cannot run any module any more: its Python is gone (a failed host, not a gate)
    write_inventory(
        setup.remote.work / "inventories" / "prod.yml",
        setup.groups,
        setup.ports,
        {"web-02": {"ansible_python_interpreter": "/nonexistent/python3"}},
    )
    setup.remote.commit("bump with one bad host", {"environments/prod.yaml": text})
    answer = daemon.post("/api/v1/sync", {"wait": True, "timeout": 300}).json()
    assert answer["finished"]["prod"]["result"] == "degraded"
    assert answer["finished"]["prod"]["groups"]["web"]["state"] == "degraded"
    assert answer["finished"]["prod"]["groups"]["worker"]["state"] in ("succeeded", "in_sync")
    [rollout] = [r for r in daemon.rollouts() if r["apps"] == {"shop": "1.1.0"}]
    assert rollout["state"] == "degraded" and "web-02" in rollout["reason"]
    metrics = samples(daemon.get("/metrics").text)
    assert rollouts(metrics, "degraded") == 1
    assert rollouts(metrics, "succeeded") == 1
    history = cli(daemon, "history", "--env", "prod", "-o", "json")
    assert history.returncode == 0, history.stderr
    assert '"state": "degraded"' in history.stdout
    served = daemon.served()
    assert served["web-02"] == "1.0.0" and served["web-01"] == "1.1.0"


def test_diff_and_plan_leave_the_store_as_the_daemon_wrote_it(converged):
    daemon = converged
    setup = daemon.setup
    database = Settings.load(daemon.config).database_path
    before = dump(database)
    hidden = setup.remote.bare.with_name("moved.git")
    setup.remote.bare.rename(hidden)  # the CLI's fetch fails; the daemon is not asked to fetch
    try:
        for command in ("diff", "plan"):
            result = cli(daemon, command)
            assert result.returncode == 2, (command, result.stdout, result.stderr)
            assert "fetch failed" in result.stderr
        status = cli(daemon, "status")
        assert status.returncode == 0
    finally:
        hidden.rename(setup.remote.bare)
    assert dump(database) == before
    assert daemon.status()["source"]["up"] is True, "a read changed what the daemon reports"


HOOK = """#!/bin/sh
# Stall the first push of a commit the reconciler authored until the test releases it.
while read old new ref; do
  if [ "$(git log -1 --format=%an "$new")" = "reconciler" ] && [ ! -e "{done}" ]; then
    echo stalled > "{entered}"
    read line < "{release}"
    echo released > "{done}"
  fi
done
exit 0
"""


def test_a_revert_push_that_hangs_stops_neither_fetches_nor_the_main_loop(converged, tmp_path):
    daemon = converged
    setup = daemon.setup
    setup.fleet.build("shop", "1.2.0", "unhealthy")
    setup.remote.commit("gated 1.0.0", {"environments/prod.yaml": env_text("1.0.0")})
    assert daemon.post("/api/v1/sync", {"wait": True, "timeout": 120}).status_code == 202
    entered, release = tmp_path / "entered", tmp_path / "release"
    os.mkfifo(release)
    hook = setup.remote.bare / "hooks" / "pre-receive"
    hook.write_text(HOOK.format(entered=entered, release=release, done=tmp_path / "done"))
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    bad = setup.remote.commit("bad bump", {"environments/prod.yaml": env_text("1.2.0")})
    answered = threading.Event()
    threading.Thread(
        target=lambda: (
            daemon.post("/api/v1/sync", {"wait": True, "timeout": 300}),
            answered.set(),
        ),
        daemon=True,
    ).start()
    wait_for(entered.exists, 240, "the revert push to reach the remote's hook")
    try:
        # The push hangs. Another developer pushes; a webhook makes the daemon fetch it.
        other = setup.remote.commit("docs", {"README.md": "hello\n"})
        assert daemon.github_push().status_code == 202
        wait_for(
            lambda: daemon.status()["source"]["valid_commit"] == other,
            60,
            "the daemon to fetch and adopt the new commit while the revert push hangs",
        )
        assert daemon.get("/healthz").status_code == 200
        assert not answered.is_set()
    finally:
        with release.open("w") as fifo:  # let the stalled push go on
            fifo.write("go\n")
    assert answered.wait(300)
    head = setup.remote.remote_head()
    message = setup.remote.git(setup.remote.bare, "log", "-1", "--format=%B")
    assert f"Reverts: {bad}" in message, daemon.log_tail(6000)
    wait_for(
        lambda: daemon.status()["source"]["valid_commit"] == head,
        60,
        "the pushed revert to be in force",
    )
