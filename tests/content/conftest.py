"""A fleet of local-connection test hosts for the shipped playbook and role.

Every host has its own ``deploy_app_base``, fact dir, artifact dir and loopback port; the
playbook runs for real through ``ansible-playbook``. Every process a fleet starts is killed
at teardown, and the teardown fails when one survives.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reconciler.testing.fleet import free_port, read_fact

REPO_ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO_ROOT / "playbooks" / "deploy-app.yml"
ROLES = REPO_ROOT / "roles"
BIN = Path(sys.executable).parent

_RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)\s+"
    r"rescued=(?P<rescued>\d+)\s+ignored=(?P<ignored>\d+)",
    re.MULTILINE,
)


def unsafe(value: object) -> object:
    """Mark every string value unsafe, as the daemon does (JSON form of ``!unsafe``)."""
    if isinstance(value, str):
        return {"__ansible_unsafe": value}
    if isinstance(value, Mapping):
        return {key: unsafe(item) for key, item in value.items()}
    return value


def http_get(port: int, path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :][:1] not in ("Z", "X")


@dataclass(frozen=True)
class Host:
    name: str
    base: Path
    fact_dir: Path
    artifact_dir: Path
    port: int

    def app_root(self, app: str = "shop") -> Path:
        return self.base / app

    def pid(self, app: str = "shop") -> int | None:
        pidfile = self.app_root(app) / "run" / f"{app}.pid"
        return int(pidfile.read_text()) if pidfile.exists() else None

    def link(self, name: str, app: str = "shop") -> str | None:
        path = self.app_root(app) / name
        return os.readlink(path) if path.is_symlink() else None

    def releases(self, app: str = "shop") -> set[str]:
        return {p.name for p in (self.app_root(app) / "releases").iterdir()}

    def fact_file(self, app: str = "shop") -> Path:
        return self.fact_dir / f"reconciler_{app.replace('-', '_')}.fact"

    def fact(self, app: str = "shop") -> dict[str, object]:
        """The app's local fact as setup reads it (the role installs an executable)."""
        fact = read_fact(self.fact_file(app))
        assert fact is not None, f"no fact file {self.fact_file(app)}"
        return fact


@dataclass
class Run:
    rc: int
    output: str
    recap: dict[str, dict[str, int]]


@dataclass
class Fleet:
    root: Path
    hosts: dict[str, Host] = field(default_factory=dict)
    host_vars: dict[str, dict[str, object]] = field(default_factory=dict)
    runs: int = 0

    def add_host(
        self, name: str, apps_with_port: tuple[str, ...] = ("shop",), **hostvars: object
    ) -> Host:
        host = Host(
            name=name,
            base=self.root / name / "srv",
            fact_dir=self.root / name / "facts.d",
            artifact_dir=self.root / name / "artifacts",
            port=free_port(),
        )
        host.artifact_dir.mkdir(parents=True)
        self.hosts[name] = host
        manager = "pidfile" if Path("/run/systemd/system").is_dir() else "auto"
        self.host_vars[name] = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "deploy_app_base": str(host.base),
            "deploy_app_fact_dir": str(host.fact_dir),
            "deploy_app_artifact_dir": str(host.artifact_dir),
            "deploy_app_ports": {app: host.port for app in apps_with_port},
            "deploy_app_service_manager": manager,
            "deploy_app_start_timeout": 10,
            **hostvars,
        }
        return host

    def run(self, apps: Mapping[str, str], *, check: bool = False, **extra_vars: object) -> Run:
        """Run the shipped playbook on every host; extra vars go in a JSON file, unsafe.

        ``check`` runs it in check mode (``--check``).
        """
        self.runs += 1
        inventory = self.root / "inventory.json"
        inventory.write_text(json.dumps({"all": {"hosts": self.host_vars}}, indent=2))
        extra = {
            "reconciler_apps": dict(apps),
            "reconciler_environment": "test",
            "reconciler_group": "web",
            "reconciler_commit": f"{self.runs:040x}",
            "reconciler_rollout_id": f"rollout-{self.runs}",
            **extra_vars,
        }
        extra_file = self.root / f"extra-{self.runs}.json"
        extra_file.write_text(json.dumps(unsafe(extra)))
        tmp = self.root / "ansible-tmp"
        env = {
            **os.environ,
            "ANSIBLE_ROLES_PATH": str(ROLES),
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_LOCAL_TEMP": str(tmp / "local"),
            "ANSIBLE_REMOTE_TEMP": str(tmp / "remote"),
            "ANSIBLE_STDOUT_CALLBACK": "default",
            "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
        }
        proc = subprocess.run(
            [
                str(BIN / "ansible-playbook"),
                "-i",
                str(inventory),
                "-e",
                f"@{extra_file}",
                *(["--check"] if check else []),
                str(PLAYBOOK),
            ],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        output = proc.stdout + proc.stderr
        recap = {
            m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"}
            for m in _RECAP.finditer(proc.stdout)
        }
        return Run(rc=proc.returncode, output=output, recap=recap)

    def processes(self) -> set[int]:
        """Pids of live processes started from (or recorded under) this fleet's root."""
        pids = set()
        for pidfile in self.root.glob("*/srv/*/run/*.pid"):
            with contextlib.suppress(ValueError, OSError):
                pids.add(int(pidfile.read_text()))
        root = str(self.root)
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                if os.readlink(proc / "cwd").startswith(root):
                    pids.add(int(proc.name))
        return {pid for pid in pids if pid != os.getpid() and pid_alive(pid)}

    def stop_all(self) -> set[int]:
        """Kill every app process; return the pids that survived."""
        pids = self.processes()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    if os.getpgid(pid) == pid:
                        os.killpg(pid, sig)
                    else:
                        os.kill(pid, sig)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
                time.sleep(0.05)
            pids = {pid for pid in pids if pid_alive(pid)}
            if not pids:
                break
        return pids | self.processes()


@contextlib.contextmanager
def make_fleet(root: Path) -> Iterator[Fleet]:
    """A fleet rooted at ``root``; on exit every app process is killed, and none may survive."""
    fleet = Fleet(root)
    try:
        yield fleet
    finally:
        survivors = fleet.stop_all()
        assert not survivors, f"app processes survived teardown: {sorted(survivors)}"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """An empty fleet shared by the tests of a module; every process is stopped at the end."""
    with make_fleet(tmp_path_factory.mktemp("fleet")) as fleet:
        yield fleet
