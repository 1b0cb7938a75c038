"""Issue 12 over real SSH: a host whose sshd is stopped is ``unknown`` (never in sync), and a
step retries it (``rollout.retries``) until its sshd is back, each attempt in ``history``.

Two sshd hosts of their own (the module fleet of test_rollout_over_ssh deploys ten hosts a
step): a baseline deploy, then one host's sshd stopped for an observation and a rollout.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.record.sqlite import SqliteStateStore
from reconciler.settings import Settings
from reconciler.testing.fleet import served_version
from reconciler.testing.ssh_fleet import SshFleet
from tests.end_to_end.conftest import RECONCILER, Setup
from tests.ssh.conftest import commit, fleet_setup, new_version, ssh_address, ssh_fleet

pytestmark = pytest.mark.ssh

UP, LOST = "pair-01", "pair-02"


@pytest.fixture
def pair(sshd: str, tmp_path: Path) -> Iterator[Setup]:
    fleet = SshFleet(tmp_path / "fleet", 2, names=[UP, LOST], first_address=ssh_address(60))
    with fleet:
        yield fleet_setup(fleet, tmp_path)
    assert fleet.leftovers() == []


def first_attempt_missed(db: SqliteStateStore, version: str) -> bool:
    """The rollout of ``version`` journalled a first attempt that could not reach LOST (it is
    journalled before the retry waits)."""
    return any(
        LOST in step.attempts[0]["unreachable"]
        for rollout in db.rollouts("prod")
        if rollout.apps == {"shop": version}
        for step in db.steps(rollout.id)
        if step.attempts
    )


def test_host_without_sshd_is_unknown_then_retried_until_it_is_back(pair: Setup) -> None:
    setup = pair
    baseline = new_version(setup.fleet)
    commit(setup, f"baseline {baseline}", baseline, canary="[100]")
    setup.cli("sync", "--once", check=True)
    ssh_fleet(setup).stop_host(LOST)

    observed = setup.cli("observe", "-o", "json")
    assert observed.returncode == 0, observed.stdout + observed.stderr  # unknown is not drift
    [row] = json.loads(observed.stdout)["drift"]
    assert (row["host"], row["class"], row["recorded"]) == (LOST, "unknown", baseline)
    diff = setup.cli("diff")
    assert diff.returncode == 0, diff.stdout + diff.stderr
    assert f"unknown: unreachable, recorded {baseline}" in diff.stdout and LOST in diff.stdout

    # One step for both hosts; LOST is tried again alone 5 to 10 s after its first attempt:
    # its sshd is back long before that.
    version = new_version(setup.fleet)
    retries = "{attempts: 3, backoff: 10s, max_backoff: 10s}"
    commit(setup, "bump shop", version, canary="[100]", retries=retries)
    with subprocess.Popen(
        [RECONCILER, "--config", str(setup.config), "sync", "--once"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "250"},
    ) as sync:
        db = SqliteStateStore(Settings.load(setup.config).database_path)
        while not first_attempt_missed(db, version):
            assert sync.poll() is None, sync.communicate()[0]
            time.sleep(0.2)
        ssh_fleet(setup).start_host(LOST)
        out, _ = sync.communicate(timeout=300)
    assert sync.returncode == 0, out
    [rollout] = [r for r in db.rollouts("prod") if r.apps == {"shop": version}]
    assert rollout.state == "succeeded", rollout.reason
    [step] = db.steps(rollout.id)
    assert step.state == "succeeded"
    assert {h: r["status"] for h, r in step.host_results.items()} == {UP: "ok", LOST: "ok"}
    first, *_, last = step.attempts
    assert sorted(first["hosts"]) == [UP, LOST] and first["unreachable"] == [LOST]
    assert last["hosts"] == [LOST] and last["unreachable"] == []
    assert last["outcome"] == "successful"
    history = setup.cli("history", check=True).stdout
    assert f"attempts: #1 unreachable {LOST}, " in history
    for host in (UP, LOST):
        assert served_version(setup.port(host)) == version
        assert setup.fleet.current_release(host, "shop") == version
    assert setup.cli("diff").returncode == 0
