"""Issue 5 end to end over real SSH: 10 sshd hosts, the real CLI, a bare Git remote."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from reconciler.plan import canary as planning
from reconciler.record import RolloutRecord
from reconciler.record.sqlite import SqliteStateStore
from reconciler.settings import Settings
from reconciler.testing.fleet import served_version
from tests.end_to_end.conftest import RECONCILER, Setup
from tests.ssh.conftest import WEB, commit, new_version, ssh_fleet

pytestmark = pytest.mark.ssh

COHORT = planning.cohort("prod", "web", WEB)  # canary order: step 1 of [10, ...] is COHORT[0]


def store(setup: Setup) -> SqliteStateStore:
    return SqliteStateStore(Settings.load(setup.config).database_path)


def rollout_of(setup: Setup, version: str) -> RolloutRecord:
    [rollout] = [r for r in store(setup).rollouts("prod") if r.apps == {"shop": version}]
    return rollout


def serving(setup: Setup, version: str, hosts: list[str]) -> None:
    """Each host serves ``version`` over HTTP and its current symlink points at it."""
    for host in hosts:
        assert served_version(setup.port(host)) == version, host
        assert setup.fleet.current_release(host, "shop") == version, host


def with_release(setup: Setup, version: str) -> list[str]:
    return [h for h in WEB if (setup.fleet.app_root(h, "shop") / "releases" / version).exists()]


def remote_prod(setup: Setup) -> str:
    return setup.remote.git(setup.remote.bare, "show", "main:environments/prod.yaml")


def test_good_bump_converges_every_host_over_ssh(ssh_setup: Setup, baseline: str) -> None:
    setup = ssh_setup
    version = new_version(setup.fleet)
    commit(setup, "bump shop", version)
    out = setup.cli("sync", "--once", check=True).stdout
    assert "deploy step 1/3 (10%): deploying to 1 host(s)" in out
    assert "deploy step 2/3 (50%): deploying to 4 host(s)" in out
    assert "deploy step 3/3 (100%): deploying to 5 host(s)" in out
    serving(setup, version, WEB)
    assert rollout_of(setup, version).state == "succeeded"
    assert setup.cli("diff").returncode == 0


def test_bad_version_stays_on_the_canary_and_is_reverted_in_git(
    ssh_setup: Setup, baseline: str
) -> None:
    setup = ssh_setup
    bad_version = new_version(setup.fleet, "unhealthy")
    bad = commit(setup, "bump shop to a bad build", bad_version)
    result = setup.cli("sync", "--once")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "rolling back" in result.stdout
    assert with_release(setup, bad_version) == [COHORT[0]]  # the canary and nobody else
    serving(setup, baseline, WEB)

    head = setup.remote.remote_head()
    assert head != bad
    message = setup.remote.git(setup.remote.bare, "log", "-1", "--format=%B", head)
    assert f"Reverts: {bad}" in message
    assert f'shop: "{baseline}"' in remote_prod(setup)
    rollout = rollout_of(setup, bad_version)
    assert rollout.state == "rolled_back"
    assert "gate http failed" in rollout.reason and "500" in rollout.reason
    assert "in_sync" in setup.cli("sync", "--once", check=True).stdout


def sync_losing_a_host(
    setup: Setup, tmp_path: Path, version: str, max_failed_hosts: int
) -> tuple[str, subprocess.CompletedProcess[str]]:
    """Bump shop to ``version`` in steps [10, 20, 100] (1, 1 and 8 hosts) and stop the sshd of
    step 2's host mid-rollout: after step 1's playbook ran and before step 2 starts (a command
    gate holds step 1 until the host is down). Returns the bump commit and the finished sync.
    """
    go = tmp_path / "go"
    hold = f"    - command: {{argv: [/usr/bin/test, -f, {go}], interval: 0.2s, timeout: 120s}}\n"
    bump = commit(setup, "bump shop", version, canary="[10, 20, 100]",
                  max_failed_hosts=max_failed_hosts, extra_gates=hold)  # fmt: skip
    with subprocess.Popen(
        [RECONCILER, "--config", str(setup.config), "sync", "--once"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "250"},
    ) as sync:
        db = store(setup)
        while not step_finished(db, version, 1):
            assert sync.poll() is None, sync.communicate()[0]
            time.sleep(0.2)
        assert not step_finished(db, version, 2)
        ssh_fleet(setup).stop_host(COHORT[1])
        go.touch()
        out, _ = sync.communicate(timeout=300)
    steps = db.steps(rollout_of(setup, version).id)
    [step_two] = [s for s in steps if s.phase == "deploy" and s.index == 2]
    assert step_two.hosts == (COHORT[1],)
    assert step_two.host_results[COHORT[1]]["status"] == "unreachable"
    assert "Connection refused" in step_two.host_results[COHORT[1]]["message"]
    assert "0 ok, 1 failed" in out and f"{COHORT[1]}: " in out and "Connection refused" in out
    return bump, subprocess.CompletedProcess(sync.args, sync.returncode, out, "")


def step_finished(db: SqliteStateStore, version: str, index: int) -> bool:
    rollouts = [r for r in db.rollouts("prod") if r.apps == {"shop": version}]
    return any(
        s.phase == "deploy" and s.index == index and s.state != "running"
        for rollout in rollouts
        for s in db.steps(rollout.id)
    )


def test_unreachable_host_within_max_failed_hosts(
    ssh_setup: Setup, baseline: str, tmp_path: Path
) -> None:
    setup = ssh_setup
    version = new_version(setup.fleet)
    lost = COHORT[1]
    _, result = sync_losing_a_host(setup, tmp_path, version, max_failed_hosts=1)
    assert result.returncode == 0, result.stdout
    others = [h for h in WEB if h != lost]
    serving(setup, version, others)
    serving(setup, baseline, [lost])  # its app runs on; only SSH is down
    rollout = rollout_of(setup, version)
    assert rollout.state == "degraded", rollout.reason
    assert lost in rollout.reason
    diff = setup.cli("diff")
    assert diff.returncode == 1 and lost in diff.stdout
    assert not any(h in diff.stdout for h in others)
    # the host comes back: the next reconcile corrects its drift
    ssh_fleet(setup).start_host(lost)
    setup.cli("sync", "--once", check=True)
    serving(setup, version, WEB)


def test_unreachable_host_beyond_max_failed_hosts(
    ssh_setup: Setup, baseline: str, tmp_path: Path
) -> None:
    setup = ssh_setup
    version = new_version(setup.fleet)
    canary, lost = COHORT[0], COHORT[1]
    bump, result = sync_losing_a_host(setup, tmp_path, version, max_failed_hosts=0)
    assert result.returncode == 1, result.stdout
    assert "rolling back" in result.stdout
    # the canary went back, the lost host never changed, step 3's hosts were never touched
    assert with_release(setup, version) == [canary]
    serving(setup, baseline, WEB)
    rollout = rollout_of(setup, version)
    assert "1 of 1 hosts failed the playbook (tolerated 0)" in rollout.reason
    # the lost host was never reached (it runs what it ran before): it is not rolled back,
    # so the rollout ends rolled back, not failed
    assert rollout.state == "rolled_back", rollout.reason
    assert f"rollback failed on {lost}" not in rollout.reason
    message = setup.remote.git(setup.remote.bare, "log", "-1", "--format=%B", "main")
    assert f"Reverts: {bump}" in message
    assert f'shop: "{baseline}"' in remote_prod(setup)
