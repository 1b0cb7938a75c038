"""A fleet of test hosts on this machine, for the demo and the tests.

Each host is ``ansible_connection=local`` with its own deploy root ``<root>/hosts/<name>`` and its
own loopback port per app. Inventories written here use the same variables as
``desired-state-example``: the deploy roots and the artifact directory come from the
``RECONCILER_FLEET_ROOT`` and ``RECONCILER_ARTIFACT_DIR`` environment variables, which
``LocalFleet.environ()`` provides.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML

_FLEET_VARS = {
    "ansible_connection": "local",
    "ansible_python_interpreter": "{{ ansible_playbook_python }}",
    "deploy_app_base": "{{ lookup('ansible.builtin.env', 'RECONCILER_FLEET_ROOT', "
    "default='/srv/fleet') }}/{{ inventory_hostname }}",
    "deploy_app_artifact_dir": "{{ lookup('ansible.builtin.env', 'RECONCILER_ARTIFACT_DIR', "
    "default='/srv/artifacts') }}",
    "deploy_app_fact_dir": "{{ deploy_app_base }}/facts.d",
}


_ALL_PORTS = range(20000, 32768)  # below Linux's ephemeral range: no client socket takes these
_SLICES = 8  # pytest-xdist workers gw0..gw7 each get their own slice


def xdist_worker() -> int | None:
    """The index of the pytest-xdist worker this process is (``gw2`` -> 2), else None."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else None


def _port_range() -> range:
    """This process's ports: a pytest-xdist worker's own slice, else the whole range."""
    worker = xdist_worker()
    if worker is None:
        return _ALL_PORTS
    size = len(_ALL_PORTS) // _SLICES
    first = _ALL_PORTS.start + (worker % _SLICES) * size
    return range(first, first + size)


_PORTS = _port_range()
_handed_out: set[int] = set()
_next_port = [_PORTS.start + (os.getpid() * 7919) % len(_PORTS)]
_port_lock = threading.Lock()


def free_port() -> int:
    """A loopback TCP port nobody listens on that this process has not handed out before.

    Asking the kernel for port 0 twice can answer the same port twice once the first probe is
    closed, and its answers come from the ephemeral range, where a client connection can take
    the port before the test app binds it: two hosts of one fleet once got the same port. Ports
    come from below the ephemeral range instead, each at most once per process, and parallel
    test workers draw from disjoint slices.
    """
    with _port_lock:
        for _ in range(len(_PORTS)):
            port = _next_port[0]
            _next_port[0] = _PORTS.start + (port + 1 - _PORTS.start) % len(_PORTS)
            if port in _handed_out:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free loopback port left in {_PORTS.start}-{_PORTS.stop - 1}")


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def inventory_document(
    groups: Mapping[str, Iterable[str]],
    ports: Mapping[str, Mapping[str, int]],
    host_vars: Mapping[str, Mapping[str, object]] | None = None,
) -> dict[str, object]:
    """An Ansible YAML inventory: groups -> hosts, each host with its app ports."""
    extra = host_vars or {}
    children = {
        group: {
            "hosts": {
                host: {
                    "ansible_host": "127.0.0.1",
                    "deploy_app_ports": dict(ports.get(host, {})),
                    **extra.get(host, {}),
                }
                for host in hosts
            }
        }
        for group, hosts in groups.items()
    }
    return {"all": {"vars": dict(_FLEET_VARS), "children": children}}


def write_inventory(
    path: Path,
    groups: Mapping[str, Iterable[str]],
    ports: Mapping[str, Mapping[str, int]],
    host_vars: Mapping[str, Mapping[str, object]] | None = None,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        YAML().dump(inventory_document(groups, ports, host_vars), handle)
    return path


@dataclass
class LocalFleet:
    """Deploy roots and artifacts of the local test hosts below ``root``."""

    root: Path

    @property
    def hosts_dir(self) -> Path:
        return self.root / "hosts"

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    def create(self) -> LocalFleet:
        self.hosts_dir.mkdir(parents=True, exist_ok=True)
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        return self

    def environ(self) -> dict[str, str]:
        return {
            "RECONCILER_FLEET_ROOT": str(self.hosts_dir),
            "RECONCILER_ARTIFACT_DIR": str(self.artifacts_dir),
        }

    def build(self, app: str, version: str, behaviour: str = "ok") -> Path:
        from reconciler.testing import testapp

        return testapp.build_artifact(self.artifacts_dir, app, version, behaviour)

    def app_root(self, host: str, app: str) -> Path:
        return self.hosts_dir / host / app

    def current_release(self, host: str, app: str) -> str | None:
        link = self.app_root(host, app) / "current"
        return Path(os.readlink(link)).name if link.is_symlink() else None

    def fact_file(self, host: str, app: str) -> Path:
        return self.hosts_dir / host / "facts.d" / f"reconciler_{app.replace('-', '_')}.fact"

    def fact(self, host: str, app: str) -> dict[str, object] | None:
        """The local fact of ``app`` on ``host`` as Ansible's setup reads it, None when absent.

        The shipped role installs an executable fact (its output is the fact); a plain file is
        read as JSON.
        """
        return read_fact(self.fact_file(host, app))

    def pidfiles(self) -> list[Path]:
        return sorted(self.hosts_dir.glob("*/*/run/*.pid"))

    def running_pids(self) -> list[int]:
        pids = []
        for pidfile in self.pidfiles():
            with contextlib.suppress(ValueError, OSError):
                pid = int(pidfile.read_text().split()[0])
                if _alive(pid):
                    pids.append(pid)
        return pids

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every app process the fleet's pidfiles name."""
        pids = self.running_pids()
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p)]
            time.sleep(0.05)
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def read_fact(path: Path) -> dict[str, object] | None:
    """A local fact file as setup reads it: an executable's stdout, else the content (JSON)."""
    if not path.is_file():
        return None
    if os.access(path, os.X_OK):
        proc = subprocess.run([str(path)], capture_output=True, text=True, timeout=30, check=True)
        text = proc.stdout
    else:
        text = path.read_text()
    fact = json.loads(text)
    if not isinstance(fact, dict):
        raise ValueError(f"{path}: the fact is not a JSON object: {text[:200]!r}")
    return fact


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        if state == "Z":
            return False
    return True


def served_version(port: int, timeout: float = 2.0) -> str | None:
    """What the test app on ``port`` says its version is (None when nothing answers)."""
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/healthz", timeout=timeout
        ) as response:
            return str(json.loads(response.read())["version"])
    except urllib.error.HTTPError as exc:
        with contextlib.suppress(Exception):
            return str(json.loads(exc.read())["version"])
        return None
    except (OSError, ValueError, KeyError, http.client.HTTPException):
        return None  # also a response cut short by an app that is being restarted
