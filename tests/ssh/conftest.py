"""The SSH tier: a fleet of real sshd hosts on 127.0.1.N, a bare Git remote and the real CLI.

Host key checking is on everywhere: every connection checks the fleet's known_hosts with
``StrictHostKeyChecking=yes``. Without sshd the tier is skipped, except under ``CI`` where it
fails (CI must run it; ``.ci/run`` installs openssh-server).

Deploys over SSH cost CPU, so a module shares one fleet, remote and state dir, and every test
starts from :func:`baseline` (every host serving one good version, Git and the store agreeing,
every sshd up) and deploys versions of its own. Fleets start at :func:`ssh_address`, so SSH
modules running at once on parallel pytest-xdist workers never share an address.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from reconciler.testing.fleet import LocalFleet, served_version, xdist_worker
from reconciler.testing.ssh_fleet import SshFleet, find_sshd
from tests.end_to_end.conftest import Setup
from tests.gitrepo import GitRemote
from tests.tools import missing_tool

HOSTS = 10
WEB = [f"web-{i:02d}" for i in range(1, HOSTS + 1)]
_VERSIONS = (f"1.0.{n}" for n in itertools.count())
_WORKER_SPAN = 60  # addresses per pytest-xdist worker: 127.0.1.10-69 for gw0, 70-129 for gw1...


def ssh_address(first: int) -> int:
    """The first address (127.0.1.N) of a fleet this module's tests place at ``first`` (10..69)
    when running alone: ``first`` itself without pytest-xdist or on worker gw0, 60 further on
    each next worker (a module's fleets run one at a time, modules on other workers at once)."""
    return first + _WORKER_SPAN * (xdist_worker() or 0)


def new_version(fleet: LocalFleet, behaviour: str = "ok") -> str:
    """A version no test deployed before, with its artifact built."""
    version = next(_VERSIONS)
    fleet.build("shop", version, behaviour)
    return version


def env_text(
    version: str,
    canary: str = "[10, 50, 100]",
    max_failed_hosts: int = 0,
    extra_gates: str = "",
    retries: str = "",
) -> str:
    """prod.yaml: group web (every host) runs shop at ``version``, gated on its /healthz.

    The test app listens on 127.0.0.1 (the hosts share this machine), so the gate asks there
    rather than at ``{host}`` (127.0.1.N). ``retries``: the group's ``rollout.retries``.
    """
    return (
        "environment: prod\n"
        "inventory: inventories/prod.yml\n"
        "defaults:\n"
        "  timeout: 120s\n"
        f"  rollout: {{canary: {canary}, max_failed_hosts: {max_failed_hosts}"
        + (f", retries: {retries}" if retries else "")
        + "}\n"
        "  health:\n"
        "    - http:\n"
        '        url: "http://127.0.0.1:{port}/healthz"\n'
        '        expect_body: "{version}"\n'
        "        interval: 0.5s\n"
        "        timeout: 4s\n"
        f"{extra_gates}"
        "groups:\n"
        "  web:\n"
        f'    apps: {{shop: "{version}"}}\n'
    )


def ssh_fleet(setup: Setup) -> SshFleet:
    assert isinstance(setup.fleet, SshFleet)
    return setup.fleet


def commit(setup: Setup, message: str, version: str, **kwargs: object) -> str:
    """Commit and push prod.yaml on top of the remote (which may hold the daemon's reverts)."""
    setup.remote.git(setup.remote.work, "fetch", "--quiet", "origin")
    setup.remote.git(setup.remote.work, "reset", "--quiet", "--hard", "origin/main")
    text = env_text(version, **kwargs)  # type: ignore[arg-type]
    return setup.remote.commit(message, {"environments/prod.yaml": text})


@pytest.fixture(scope="session")
def sshd() -> str:
    found = find_sshd()
    if found is None:
        missing_tool("sshd is not installed (Debian package openssh-server)")
    return found


@pytest.fixture(scope="module")
def ssh_setup(sshd: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """Ten sshd hosts web-01..web-10 in group web of environment prod; checked at the end
    to leave no process, app or listening port behind."""
    base = tmp_path_factory.mktemp("ssh")
    fleet = SshFleet(base / "fleet", HOSTS, names=WEB, first_address=ssh_address(10))
    with fleet:
        yield fleet_setup(fleet, base)
    assert fleet.leftovers() == []


def fleet_setup(fleet: SshFleet, base: Path) -> Setup:
    """A bare remote with the inventory (every host of ``fleet`` in group web) and a config."""
    remote = GitRemote(base / "git")
    names = [host.name for host in fleet.hosts]
    fleet.write_inventory(remote.work / "inventories" / "prod.yml", {"web": names})
    remote.commit("inventory")
    config = base / "reconciler.yaml"
    YAML().dump(
        {
            "state_dir": str(base / "state"),
            "source": {"url": remote.url, "branch": "main"},
            "execution": {"extra_envvars": fleet.ansible_envvars()},
        },
        config,
    )
    ports = {host.name: {"shop": host.app_port} for host in fleet.hosts}
    return Setup(remote, fleet, config, ports, {"web": names})


@pytest.fixture
def baseline(ssh_setup: Setup) -> str:
    """The good version every host serves (deployed now if the hosts do not agree)."""
    setup = ssh_setup
    fleet = ssh_fleet(setup)
    for name in WEB:
        fleet.start_host(name)
    served = {served_version(setup.port(host)) for host in WEB}
    if len(served) == 1 and None not in served and setup.cli("diff").returncode == 0:
        return str(served.pop())
    version = new_version(fleet)
    commit(setup, f"baseline {version}", version, canary="[100]")
    setup.cli("sync", "--once", check=True)
    return version


@pytest.fixture
def small_fleet(sshd: str, tmp_path: Path) -> Iterator[SshFleet]:
    """Two sshd hosts on other addresses than the module fleet's."""
    with SshFleet(tmp_path / "fleet", 2, first_address=ssh_address(40)) as fleet:
        yield fleet
