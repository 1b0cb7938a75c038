"""The local fact tells what runs when it is read: the role's executable fact, run by the raw task
of the shipped reconciler-observe.yml (real ansible-runner runs) and by reconciler's
own ``Observer`` with the real ``PlaybookRunner``.

One fleet (obs1, obs2; pidfile manager) walks through a history, each step a module-scoped
fixture depending on the one before (so any test can run alone):
deploy 1.0.0 -> obs2's fact replaced by hand with the static file the previous release wrote
-> a check-mode run, a real run and one more run of 1.0.0 -> deploy 2.0.0 -> observe -> obs1's
``current`` switched by hand to 1.0.0 -> obs1's ``current`` pointed somewhere weird (then back)
-> obs2's app killed. Observations also cover ``gone``, a host whose SSH port is closed.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reconciler import content
from reconciler.desired.model import EnvironmentDesired, GroupDesired, Host, Rollout
from reconciler.desired.schema import FactProbe, Observe
from reconciler.edges.ansible import HostStatus, PlaybookRun, RunOutcome
from reconciler.edges.ansible import observe as ansible_observe
from reconciler.edges.ansible.runner import PlaybookRunner
from reconciler.record import ObservedVersion
from reconciler.rollout import observation
from reconciler.rollout.observation import Observer
from reconciler.settings import ExecutionSettings
from reconciler.states import ObservationStatus
from reconciler.testing import testapp
from tests.content.conftest import Fleet, Run, make_fleet

pytestmark = pytest.mark.ansible

V1, V2 = "1.0.0", "2.0.0"
HOSTS = ["obs1", "obs2"]
GONE = "gone"  # reached over SSH on a closed port: unreachable
FACT = "reconciler_shop"
INVENTORY = "observe-inventory.json"


def assert_ok(run: Run) -> None:
    assert run.rc == 0, run.output
    assert sorted(run.recap) == HOSTS, run.output
    assert all(stats["failed"] == stats["unreachable"] == 0 for stats in run.recap.values())


def changed(run: Run) -> dict[str, int]:
    return {host: stats["changed"] for host, stats in run.recap.items()}


def static_fact(fleet: Fleet, host: str, version: str) -> str:
    """The fact file the previous release of the role wrote (JSON, mode 0644)."""
    release_dir = fleet.hosts[host].app_root() / "releases" / version
    data = {"app": "shop", "version": version, "release_dir": str(release_dir)}
    return json.dumps(data, indent=4, sort_keys=True, separators=(",", ": ")) + "\n"


def switch(fleet: Fleet, host: str, target: str) -> None:
    """Point obs's current at target by hand, atomically (ln -s + mv -T)."""
    root = fleet.hosts[host].app_root()
    tmp = root / "current.by-hand"
    os.symlink(target, tmp)
    os.replace(tmp, root / "current")


def kill_and_wait(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM the app's process group; return once the process has exited (pidfd event)."""
    fd = os.pidfd_open(pid)
    try:
        os.killpg(pid, signal.SIGTERM)
        ready, _, _ = select.select([fd], [], [], timeout)
        assert ready, f"process {pid} still runs after {timeout}s"
    finally:
        os.close(fd)


# --- observation through the shipped playbook -----------------------------------------------


def write_observe_inventory(fleet: Fleet) -> Path:
    """The fleet's hosts plus ``gone`` (SSH to a closed port on loopback)."""
    hosts: dict[str, Mapping[str, object]] = dict(fleet.host_vars)
    hosts[GONE] = {
        "ansible_connection": "ssh",
        "ansible_host": "127.0.0.1",
        "ansible_port": 1,
        "ansible_python_interpreter": sys.executable,
        "deploy_app_fact_dir": str(fleet.root / GONE / "facts.d"),
    }
    path = fleet.root / INVENTORY
    path.write_text(json.dumps({"all": {"hosts": hosts}}, indent=2))
    return path


def runner(fleet: Fleet) -> PlaybookRunner:
    return PlaybookRunner(fleet.root / "runs", host_key_checking=False, poll_interval_s=0.2)


@dataclass
class Gathered:
    """What the observation read per host: its local facts and the warnings of the task."""

    outcome: RunOutcome
    status: dict[str, HostStatus]
    local: dict[str, Mapping[str, Any]]
    warnings: dict[str, list[str]]

    def fact(self, host: str) -> Mapping[str, Any]:
        fact = self.local[host][FACT]
        assert isinstance(fact, Mapping), fact  # a string: the output was no JSON
        return fact


def gather(fleet: Fleet) -> Gathered:
    """Run the shipped reconciler-observe.yml (mode fact) on obs1 and obs2."""
    answers = ansible_observe.Answers()
    warnings: dict[str, list[str]] = {}

    def on_event(event: dict[str, Any]) -> None:
        answers(event)
        data = event.get("event_data") or {}
        if event.get("event") == "runner_on_ok":
            warnings.setdefault(data["host"], []).extend(data["res"].get("warnings") or [])

    run = ansible_observe.observe_run(
        content.playbooks_dir(),
        write_observe_inventory(fleet),
        HOSTS,
        mode="fact",
        fact_names=[FACT],
        timeout_s=120,
        envvars={},
        label="test-observe",
    )
    result = runner(fleet).run(run, on_event=on_event)
    return Gathered(
        result.outcome,
        {host: outcome.status for host, outcome in result.hosts.items()},
        {host: dict(answer.facts or {}) for host, answer in answers.by_host.items()},
        warnings,
    )


def observe(fleet: Fleet, hosts: list[str], recorded: str = V2) -> dict[str, ObservedVersion]:
    """reconciler's Observer, as the daemon wires it, on ``hosts`` (the default fact probe)."""
    write_observe_inventory(fleet)
    members = tuple(
        Host(name, "127.0.0.1", {"shop": fleet.hosts[name].port} if name in fleet.hosts else {})
        for name in hosts
    )
    group = GroupDesired(
        name="web",
        apps={"shop": recorded},
        hosts=members,
        after=(),
        playbook="deploy-app.yml",
        rollout=Rollout(),
        health=(),
        timeout_s=60,
        observe=Observe(fact=FactProbe()),
    )
    environment = EnvironmentDesired("test", "environments/test.yaml", INVENTORY, {"web": group})
    observer = Observer(
        runner=runner(fleet),
        versions=None,
        execution=ExecutionSettings(host_key_checking=False),
        clock=time.time,
    )
    observed = observer.observe(environment, group, members, fleet.root)
    assert [(o.host, o.app) for o in observed] == [(name, "shop") for name in hosts]
    return {o.host: o for o in observed}


# --- the history ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def obs(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("observed")
    builds = root / "builds"
    artifacts = [testapp.build_artifact(builds, "shop", v) for v in (V1, V2)]
    with make_fleet(root) as fleet:
        for name in HOSTS:
            host = fleet.add_host(name, deploy_app_service_manager="pidfile")
            for artifact in artifacts:
                (host.artifact_dir / artifact.name).write_bytes(artifact.read_bytes())
        yield fleet


@pytest.fixture(scope="module")
def first(obs: Fleet) -> Run:
    return obs.run({"shop": V1})


@dataclass
class Legacy:
    check: Run
    after_check: tuple[str, int]  # obs2's fact file (content, mode) after the check run
    replace: Run
    after_replace: tuple[str, int]
    again: Run
    unchanged: bool  # every fact file kept its inode and mtime through the last run
    pids: tuple[dict[str, int | None], dict[str, int | None]]  # before and after the three runs


@pytest.fixture(scope="module")
def legacy(obs: Fleet, first: Run) -> Legacy:
    """obs2 gets the static fact of the previous release; then check, real, real runs of v1."""
    assert_ok(first)
    path = obs.hosts["obs2"].fact_file()
    path.write_text(static_fact(obs, "obs2", V1))
    path.chmod(0o644)

    def file_state() -> tuple[str, int]:
        return path.read_text(), path.stat().st_mode & 0o777

    def stamps() -> dict[str, tuple[int, int]]:
        files = {name: host.fact_file().stat() for name, host in obs.hosts.items()}
        return {name: (st.st_ino, st.st_mtime_ns) for name, st in files.items()}

    pids_before = {name: host.pid() for name, host in obs.hosts.items()}
    check = obs.run({"shop": V1}, check=True)
    after_check = file_state()
    replace = obs.run({"shop": V1})
    after_replace = file_state()
    before_again = stamps()
    again = obs.run({"shop": V1})
    pids_after = {name: host.pid() for name, host in obs.hosts.items()}
    return Legacy(
        check,
        after_check,
        replace,
        after_replace,
        again,
        stamps() == before_again,
        (pids_before, pids_after),
    )


@pytest.fixture(scope="module")
def upgraded(obs: Fleet, legacy: Legacy) -> tuple[Run, Gathered, dict[str, ObservedVersion]]:
    run = obs.run({"shop": V2})
    assert_ok(run)
    return run, gather(obs), observe(obs, [*HOSTS, GONE])


@pytest.fixture(scope="module")
def switched(obs: Fleet, upgraded: object) -> Gathered:
    """obs1's current switched back to the complete 1.0.0 by hand (the app not restarted)."""
    switch(obs, "obs1", f"releases/{V1}")
    return gather(obs)


@pytest.fixture(scope="module")
def weird(obs: Fleet, switched: object) -> Gathered:
    """obs1's current pointed outside releases/, gathered, then put back on 1.0.0."""
    switch(obs, "obs1", "/etc")
    try:
        return gather(obs)
    finally:
        switch(obs, "obs1", f"releases/{V1}")


@pytest.fixture(scope="module")
def stopped(obs: Fleet, weird: object) -> tuple[Gathered, dict[str, ObservedVersion]]:
    """obs2's app killed (not through the role)."""
    pid = obs.hosts["obs2"].pid()
    assert pid is not None
    kill_and_wait(pid)
    return gather(obs), observe(obs, [*HOSTS, GONE])


# --- the role: install, replace, idempotence ------------------------------------------------


def test_a_static_fact_of_the_previous_release_is_replaced(obs: Fleet, legacy: Legacy) -> None:
    static = (static_fact(obs, "obs2", V1), 0o644)
    # check mode reports the change on obs2 only, and changes nothing
    assert legacy.check.rc == 0, legacy.check.output
    assert changed(legacy.check) == {"obs1": 0, "obs2": 1}, legacy.check.output
    assert legacy.after_check == static
    # the next deploy replaces it with the executable fact, without restarting the app
    assert_ok(legacy.replace)
    assert changed(legacy.replace) == {"obs1": 0, "obs2": 1}, legacy.replace.output
    text, mode = legacy.after_replace
    assert mode == 0o755 and text.startswith("#!/bin/sh\n")
    assert text == obs.hosts["obs1"].fact_file().read_text().replace("obs1", "obs2")
    assert obs.hosts["obs2"].fact()["version"] == V1
    pids_before, pids_after = legacy.pids
    assert pids_after == pids_before


def test_the_role_run_twice_changes_nothing(legacy: Legacy) -> None:
    assert_ok(legacy.again)
    assert changed(legacy.again) == {"obs1": 0, "obs2": 0}, legacy.again.output
    assert legacy.unchanged


# --- the observation reads what runs now ------------------------------------------------


def test_the_observation_reads_the_deployed_version_and_running(
    obs: Fleet, upgraded: tuple[Run, Gathered, object]
) -> None:
    _, gathered, _ = upgraded
    assert gathered.outcome is RunOutcome.SUCCESSFUL
    for name, host in obs.hosts.items():
        fact = gathered.fact(name)
        assert fact["version"] == V2 and fact["current"] == V2
        assert fact["running"] is True and fact["state"] == "running"
        assert fact["pid"] == host.pid()
        assert fact["release_dir"] == str(host.app_root() / "releases" / V2)
        assert gathered.warnings[name] == []


def test_current_switched_by_hand_is_what_the_fact_reports(obs: Fleet, switched: Gathered) -> None:
    obs1, obs2 = switched.fact("obs1"), switched.fact("obs2")
    assert (obs1["version"], obs1["running"]) == (V1, True)
    assert obs1["running_version"] == V2  # still the process started from 2.0.0
    assert obs1["release_dir"] == str(obs.hosts["obs1"].app_root() / "releases" / V1)
    assert (obs2["version"], obs2["running"]) == (V2, True)


def test_a_weird_current_gives_no_version_and_does_not_fail_gathering(weird: Gathered) -> None:
    assert weird.outcome is RunOutcome.SUCCESSFUL
    assert weird.status == {"obs1": HostStatus.OK, "obs2": HostStatus.OK}
    fact = weird.fact("obs1")
    assert fact["version"] is None and fact["current"] is None
    assert fact["state"] == "bad_release"
    assert "'/etc'" in fact["error"] and fact["reason"]
    assert weird.warnings["obs1"] == []
    assert weird.fact("obs2")["version"] == V2


def test_a_stopped_app_reports_not_running_and_no_version(
    stopped: tuple[Gathered, object],
) -> None:
    gathered, _ = stopped
    fact = gathered.fact("obs2")
    assert fact["running"] is False and fact["version"] is None
    assert fact["state"] == "stopped" and "not running" in fact["reason"]
    assert fact["current"] == V2
    assert gathered.fact("obs1")["version"] == V1


# --- reconciler's Observer end to end ----------------------------------------------------------


def test_the_observer_reads_versions_and_tells_unreachable_hosts(
    upgraded: tuple[Run, Gathered, dict[str, ObservedVersion]],
) -> None:
    _, _, observed = upgraded
    for name in HOSTS:
        assert observed[name].status is ObservationStatus.OK, observed[name]
        assert observed[name].version == V2
    gone = observed[GONE]
    assert gone.status is ObservationStatus.UNREACHABLE and gone.version is None
    assert gone.detail


def test_the_observer_sees_a_stopped_app_as_stopped(
    stopped: tuple[Gathered, dict[str, ObservedVersion]],
) -> None:
    _, observed = stopped
    obs2 = observed["obs2"]
    assert obs2.status is ObservationStatus.STOPPED and obs2.version is None
    assert "stopped" in obs2.detail and "not running" in obs2.detail
    # obs1 was switched by hand: observed 1.0.0 where 2.0.0 is recorded
    assert (observed["obs1"].status, observed["obs1"].version) == (ObservationStatus.OK, V1)
    assert observed[GONE].status is ObservationStatus.UNREACHABLE


# --- the deploy run tells what the hosts run (last: it changes the fleet) ---------------


@dataclass
class Redeployed:
    """The deploy of 2.0.0 through the real PlaybookRunner, then a look at the hosts."""

    outcome: RunOutcome
    reports: dict[str, dict[str, Any]]
    gathered: Gathered
    observed: list[ObservedVersion]
    rest: list[str]


@pytest.fixture(scope="module")
def redeployed(obs: Fleet, stopped: object) -> Redeployed:
    """2.0.0 deployed again (obs1 back from 1.0.0, obs2 restarted), its helper's reports kept."""
    inventory = write_observe_inventory(obs)
    reports = ansible_observe.DeployReports()
    run = PlaybookRun(
        playbook=content.playbooks_dir() / "deploy-app.yml",
        inventory=inventory,
        hosts=tuple(HOSTS),
        extra_vars={"reconciler_apps": {"shop": V2}, "reconciler_environment": "test"},
        timeout_s=120,
        roles_path=(content.roles_dir(),),
        label="test-redeploy",
    )
    result = runner(obs).run(run, on_event=reports)
    members = tuple(Host(name, "127.0.0.1") for name in [*HOSTS, GONE])
    group = GroupDesired(
        name="web", apps={"shop": V2}, hosts=members, after=(), playbook="deploy-app.yml",
        rollout=Rollout(), health=(), timeout_s=60, observe=Observe(fact=FactProbe()),
    )  # fmt: skip
    environment = EnvironmentDesired("test", "environments/test.yaml", INVENTORY, {"web": group})
    seen = {host: (1.0, facts) for host, facts in reports.by_host.items()}
    found, rest = observation.reported(environment, group, members, seen)
    return Redeployed(
        result.outcome, dict(reports.by_host), gather(obs), found, [h.name for h in rest]
    )


def test_the_deploy_run_reports_what_a_look_would_read(redeployed: Redeployed) -> None:
    """What the role's helper reports at the end of the deploy is the fact a look reads."""
    assert redeployed.outcome is RunOutcome.SUCCESSFUL
    assert sorted(redeployed.reports) == HOSTS
    for name in HOSTS:
        assert redeployed.reports[name] == {FACT: redeployed.gathered.fact(name)}
        assert redeployed.reports[name][FACT]["version"] == V2
    assert [(o.host, o.version, o.status) for o in redeployed.observed] == [
        (name, V2, ObservationStatus.OK) for name in HOSTS
    ]
    assert redeployed.rest == [GONE], "a host that did not report is looked at"
