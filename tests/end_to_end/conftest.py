"""A desired-state repo on a real bare remote, a local fleet, and the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from reconciler.testing.fleet import LocalFleet, free_port, write_inventory
from tests.gitrepo import GitRemote

RECONCILER = str(Path(sys.executable).parent / "reconciler")


def environment_yaml(
    apps: dict[str, dict[str, str]], canary: str = "[100]", extra: str = ""
) -> str:
    lines = [
        "environment: prod",
        "inventory: inventories/prod.yml",
        "defaults:",
        "  timeout: 120s",
        f"  rollout: {{canary: {canary}, max_failed_hosts: 0}}",
        "groups:",
    ]
    for group, group_apps in apps.items():
        lines.append(f"  {group}:")
        if group == "worker":
            lines.append("    after: [web]")
        lines.append("    apps:")
        lines.extend(f'      {app}: "{version}"' for app, version in group_apps.items())
    return "\n".join(lines) + "\n" + extra


@dataclass
class Setup:
    remote: GitRemote
    fleet: LocalFleet
    config: Path
    ports: dict[str, dict[str, int]]
    groups: dict[str, list[str]]

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [RECONCILER, "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "250"},
            timeout=600,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{args} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    def commit_versions(
        self, apps: dict[str, dict[str, str]], message: str, canary: str = "[100]"
    ) -> str:
        return self.remote.commit(
            message, {"environments/prod.yaml": environment_yaml(apps, canary)}
        )

    def port(self, host: str) -> int:
        return next(iter(self.ports[host].values()))


@pytest.fixture
def fleet(tmp_path, monkeypatch):
    fleet = LocalFleet(tmp_path / "fleet").create()
    for key, value in fleet.environ().items():
        monkeypatch.setenv(key, value)
    yield fleet
    fleet.stop()
    assert fleet.running_pids() == []


def _setup(tmp_path: Path, fleet: LocalFleet, web_hosts: int) -> Setup:
    groups = {
        "web": [f"web-{i:02d}" for i in range(1, web_hosts + 1)],
        "worker": ["worker-01", "worker-02"],
    }
    ports = {
        host: {("shop" if group == "web" else "jobs"): free_port()}
        for group, hosts in groups.items()
        for host in hosts
    }
    remote = GitRemote(tmp_path / "git")
    write_inventory(remote.work / "inventories" / "prod.yml", groups, ports)
    for app, version in [
        ("shop", "1.0.0"),
        ("shop", "1.1.0"),
        ("jobs", "3.0.0"),
        ("jobs", "3.1.0"),
    ]:
        fleet.build(app, version)
    config = tmp_path / "reconciler.yaml"
    YAML().dump(
        {"state_dir": str(tmp_path / "state"), "source": {"url": remote.url, "branch": "main"}},
        config,
    )
    return Setup(remote, fleet, config, ports, groups)


@pytest.fixture
def setup(tmp_path, fleet) -> Setup:
    """4 web hosts and 2 workers."""
    return _setup(tmp_path, fleet, 4)


@pytest.fixture
def big_setup(tmp_path, fleet) -> Setup:
    """10 web hosts (canary steps of 1, 5, 10) and 2 workers."""
    return _setup(tmp_path, fleet, 10)
