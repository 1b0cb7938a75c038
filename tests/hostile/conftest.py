"""The hostile-repository suite: the daemon fixtures of tests/daemon, and an in-process loader
with a fake inventory reader (the limits are about reading the repository, not Ansible)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.desired import loading
from reconciler.desired.inventories import Inventory
from reconciler.desired.model import Host
from reconciler.settings import LimitsSettings
from tests.daemon.conftest import fleet, make_daemon, setup  # noqa: F401

HOSTS = {"web": ("web-01", "web-02"), "worker": ("worker-01",)}


def fake_inventory(path: Path, *, root: Path, environment: str) -> Inventory:
    """Every inventory has groups web and worker (the file is not read)."""
    names = [name for hosts in HOSTS.values() for name in hosts]
    return Inventory(groups=HOSTS, hosts={n: Host(n, "127.0.0.1") for n in names})


def load(root: Path, limits: LimitsSettings | None = None) -> loading.LoadResult:
    return loading.load_repository(root, inventories=fake_inventory, limits=limits)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "inventories").mkdir()
    (tmp_path / "inventories" / "prod.yml").write_text("all: {}\n")
    (tmp_path / "environments").mkdir()
    return tmp_path
