"""Fixtures for the playbook runner tests: real ansible-runner, local connection hosts."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import psutil
import pytest

from reconciler.edges.ansible import RUN_IDENT_ENV
from reconciler.edges.ansible.runner import PlaybookRunner
from reconciler.testing.fleet import free_port

PLAYBOOKS = Path(__file__).parent / "playbooks"


def local_host(**hostvars: Any) -> dict[str, Any]:
    """Host vars of a host reached with the local connection and our interpreter."""
    return {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        **hostvars,
    }


def closed_port() -> int:
    return free_port()


def unreachable_host() -> dict[str, Any]:
    """An ssh host on a closed local port: fails fast, never prompts."""
    return {
        "ansible_connection": "ssh",
        "ansible_host": "127.0.0.1",
        "ansible_port": closed_port(),
        "ansible_user": "nobody",
        "ansible_ssh_common_args": (
            "-o BatchMode=yes -o ConnectTimeout=3 -o StrictHostKeyChecking=no "
            "-o UserKnownHostsFile=/dev/null -o PasswordAuthentication=no"
        ),
        "ansible_python_interpreter": sys.executable,
    }


def marked_processes(ident: str) -> list[psutil.Process]:
    """Every live (non-zombie) process on the machine carrying the run's marker."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(RUN_IDENT_ENV) == ident:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def kill_marked(ident: str) -> None:
    """Test safety net: kill whatever a run left behind (anywhere, not only our tree)."""
    for proc in marked_processes(ident):
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGKILL)


@pytest.fixture
def make_inventory(tmp_path: Path) -> Callable[[Mapping[str, Mapping[str, Any]]], Path]:
    """Write a YAML inventory (all.hosts = the given host -> vars mapping)."""
    counter = iter(range(1000))

    def _make(hosts: Mapping[str, Mapping[str, Any]]) -> Path:
        path = tmp_path / f"inventory-{next(counter)}.yml"
        # JSON is YAML; the yaml inventory plugin wants a .yml name.
        path.write_text(json.dumps({"all": {"hosts": dict(hosts)}}), encoding="utf-8")
        return path

    return _make


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def runner(runs_dir: Path) -> PlaybookRunner:
    return PlaybookRunner(runs_dir, keep_runs=10)


@pytest.fixture
def idents() -> Iterator[list[str]]:
    """Collect idents of runs that may leave processes; they are killed at teardown."""
    collected: list[str] = []
    yield collected
    for ident in collected:
        kill_marked(ident)
