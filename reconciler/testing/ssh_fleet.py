"""A fleet of test hosts reached over real SSH: one ``sshd`` per host on 127.0.1.N.

Each host is an ``sshd -D -f <its own config>`` listening on its own loopback address
(``127.0.1.<first_address + i>``, port 22 when that is free there, else a port the kernel
chooses), with its own ed25519 host key, deploy root ``<root>/hosts/<name>`` and app port (the
apps themselves listen on 127.0.0.1, like on the local fleet). Clients log in as the current
user (root) with a generated ed25519 key, and host key checking stays on: ``known_hosts`` lists
every host key, and the inventory asks ssh for ``StrictHostKeyChecking=yes`` against it.

The inventory (:meth:`SshFleet.write_inventory`) carries how to reach each host; the tuning
(pipelining, ControlPersist) comes from :meth:`SshFleet.ansible_envvars`, which a reconciler
config passes as ``execution.extra_envvars``. Artifacts, deploy roots and the apps' pidfiles are
laid out as on :class:`~reconciler.demo.fleet.LocalFleet`, whose helpers this class inherits.

Size: over 400 lines: test support that generates keys, configures and supervises one sshd per
host, and writes their inventories; it is not part of the product's runtime.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import psutil
from ruamel.yaml import YAML

from reconciler.testing.fleet import LocalFleet, free_port, port_in_use

__all__ = ["SSHD", "SshFleet", "SshHost", "find_sshd"]

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
PRIVSEP_DIR = Path("/run/sshd")  # Debian's sshd refuses to start without it
_CONTROL_PATH_MAX = 100  # unix socket paths are limited to 108 bytes; %C expands to 40


def find_sshd() -> str | None:
    """Path of the sshd binary, or None when openssh-server is not installed."""
    if os.access(SSHD, os.X_OK):
        return SSHD
    return shutil.which("sshd")


@dataclass(frozen=True)
class SshHost:
    name: str
    address: str
    ssh_port: int
    app_port: int
    deploy_root: Path


def _ssh_port(address: str) -> int:
    """22 when it can be bound on ``address``, else a free port there."""
    for port in (22, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as sshd does
            try:
                sock.bind((address, port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError(f"no free TCP port on {address}")


def _listening(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((address, port)) == 0


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _kill(processes: Iterable[psutil.Process], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL what is still running after ``timeout``."""
    alive = list(processes)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    deadline = time.monotonic() + timeout
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if _running(p)]
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()


class SshFleet(LocalFleet):
    """``count`` sshd hosts below ``root``; a context manager that starts and stops them."""

    def __init__(
        self,
        root: Path,
        count: int,
        *,
        first_address: int = 10,
        names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(Path(root).absolute())
        names = list(names) if names is not None else [f"host-{i:02d}" for i in range(1, count + 1)]
        if len(names) != count or len(set(names)) != count or count < 1:
            raise ValueError("count must be >= 1 and names must be that many distinct names")
        if first_address < 1 or first_address + count - 1 > 254:
            raise ValueError("addresses 127.0.1.<first_address..first_address+count-1> must fit")
        self.names = names
        self.first_address = first_address
        self.hosts: list[SshHost] = []
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._control_dir: Path | None = None

    # ------------------------------------------------------------------ paths
    @property
    def ssh_dir(self) -> Path:
        return self.root / "ssh"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"

    @property
    def client_key(self) -> Path:
        return self.ssh_dir / "client_ed25519"

    @property
    def control_dir(self) -> Path:
        """Where ssh keeps the ControlPersist sockets (short: socket paths are limited)."""
        if self._control_dir is None:
            raise RuntimeError("the fleet is not started")
        return self._control_dir

    def host(self, name: str) -> SshHost:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(f"no started host named {name!r}")

    def _host_dir(self, name: str) -> Path:
        return self.ssh_dir / name

    def sshd_log(self, name: str) -> Path:
        return self._host_dir(name) / "sshd.log"

    # --------------------------------------------------------------- lifecycle
    def __enter__(self) -> SshFleet:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> SshFleet:
        """Generate the keys and configs, start every sshd and wait until each listens."""
        sshd = find_sshd()
        if sshd is None:
            raise RuntimeError("sshd is not installed (apt-get install openssh-server)")
        if self._procs:
            raise RuntimeError("the fleet is already started")
        self.create()
        self.ssh_dir.mkdir(mode=0o700, exist_ok=True)
        if os.geteuid() == 0:
            PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        self._control_dir = Path(tempfile.mkdtemp(prefix="rcssh-"))
        if len(str(self._control_dir)) + 41 > _CONTROL_PATH_MAX:
            raise RuntimeError(f"temp dir {self._control_dir} too long for ssh control sockets")
        if not self.client_key.exists():
            _keygen(self.client_key, "reconciler-ssh-fleet-client")
        authorized = self.ssh_dir / "authorized_keys"
        authorized.write_text(self.client_key.with_suffix(".pub").read_text())
        authorized.chmod(0o600)

        self.hosts = []
        known: list[str] = []
        for index, name in enumerate(self.names):
            address = f"127.0.1.{self.first_address + index}"
            host_dir = self._host_dir(name)
            host_dir.mkdir(mode=0o700, exist_ok=True)
            key = host_dir / "ssh_host_ed25519_key"
            if not key.exists():
                _keygen(key, f"{name}-host-key")
            host = SshHost(name, address, _ssh_port(address), free_port(), self.hosts_dir / name)
            host.deploy_root.mkdir(parents=True, exist_ok=True)
            self.hosts.append(host)
            public = key.with_suffix(".pub").read_text().split()
            where = address if host.ssh_port == 22 else f"[{address}]:{host.ssh_port}"
            known.append(f"{where} {public[0]} {public[1]}\n")
            self._write_sshd_config(host, key, authorized)
        self.known_hosts.write_text("".join(known))
        for host in self.hosts:
            self._spawn(sshd, host)
        self._wait_listening(self.hosts, timeout)
        return self

    def _write_sshd_config(self, host: SshHost, key: Path, authorized: Path) -> None:
        host_dir = self._host_dir(host.name)
        lines = [
            f"ListenAddress {host.address}:{host.ssh_port}",
            f'HostKey "{key}"',
            f'PidFile "{host_dir / "sshd.pid"}"',
            f'AuthorizedKeysFile "{authorized}"',
            f"AllowUsers {_user()}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            # the keys live in temp dirs below /tmp (mode 1777), which StrictModes rejects
            "StrictModes no",
            "UseDNS no",
            "X11Forwarding no",
            "AllowTcpForwarding no",
            "AllowAgentForwarding no",
            "PermitTunnel no",
            "PrintMotd no",
            "PrintLastLog no",
            "LogLevel VERBOSE",
            f"Subsystem sftp {SFTP_SERVER}",
        ]
        (host_dir / "sshd_config").write_text("\n".join(lines) + "\n")

    def _spawn(self, sshd: str, host: SshHost) -> None:
        host_dir = self._host_dir(host.name)
        self._procs[host.name] = subprocess.Popen(
            [sshd, "-D", "-f", str(host_dir / "sshd_config"), "-E", str(self.sshd_log(host.name))],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _wait_listening(self, hosts: Sequence[SshHost], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        waiting = list(hosts)
        while waiting:
            for host in list(waiting):
                proc = self._procs[host.name]
                if proc.poll() is not None:
                    log = self.sshd_log(host.name)
                    text = log.read_text()[-2000:] if log.exists() else ""
                    self.stop()
                    raise RuntimeError(f"sshd of {host.name} exited {proc.returncode}:\n{text}")
                if _listening(host.address, host.ssh_port):
                    waiting.remove(host)
            if waiting and time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"sshd did not listen in {timeout}s on {waiting}")
            if waiting:
                time.sleep(0.05)

    def start_host(self, name: str, timeout: float = 10.0) -> None:
        """Start again the sshd of a host that :meth:`stop_host` stopped."""
        sshd = find_sshd()
        if sshd is None or self._control_dir is None:
            raise RuntimeError("the fleet is not started")
        proc = self._procs.get(name)
        if proc is not None and proc.poll() is None:
            return
        self._spawn(sshd, self.host(name))
        self._wait_listening([self.host(name)], timeout)

    def stop_host(self, name: str) -> None:
        """Make a host unreachable: stop its sshd and every SSH session it serves."""
        proc = self._procs.get(name)
        victims = self._processes([self.host(name)])
        if proc is not None:
            with contextlib.suppress(psutil.Error):
                listener = psutil.Process(proc.pid)
                victims |= {listener, *listener.children(recursive=True)}
        _kill(victims)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        (self._host_dir(name) / "sshd.pid").unlink(missing_ok=True)

    def drop_connections(self) -> None:
        """Close every ssh control master of the fleet: the next run connects afresh."""
        if self._control_dir is not None:
            marker = str(self._control_dir)
            _kill(p for p in psutil.process_iter() if marker in _cmdline(p))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every sshd, session, ssh control master and app of the fleet. Idempotent."""
        for host in self.hosts:
            self.stop_host(host.name)
        _kill(self._processes(self.hosts), timeout)
        super().stop(timeout)
        self._procs.clear()
        if self._control_dir is not None:
            shutil.rmtree(self._control_dir, ignore_errors=True)

    # ---------------------------------------------------------------- checks
    def _processes(self, hosts: Sequence[SshHost]) -> set[psutil.Process]:
        """Processes of ``hosts``: their sshd (by config path) and whatever has a TCP socket
        to or from their SSH endpoints (sessions, ssh clients and control masters)."""
        endpoints = {(h.address, h.ssh_port) for h in hosts}
        pids = {
            conn.pid
            for conn in psutil.net_connections(kind="tcp")
            if conn.pid
            and any(addr and (addr.ip, addr.port) in endpoints for addr in (conn.laddr, conn.raddr))
        }
        configs = [str(self._host_dir(h.name) / "sshd_config") for h in hosts]
        found = set()
        for proc in psutil.process_iter():
            if (proc.pid in pids or any(c in _cmdline(proc) for c in configs)) and _running(proc):
                found.add(proc)
        found.discard(psutil.Process())
        return found

    def leftovers(self) -> list[str]:
        """What still runs or listens: sshd processes, ssh masters, apps, ports (empty: none)."""
        found = [f"process {p.pid}: {_cmdline(p)}" for p in self._processes(self.hosts)]
        found += [f"app pid {pid}" for pid in self.running_pids()]
        for host in self.hosts:
            if _listening(host.address, host.ssh_port):
                found.append(f"{host.name}: {host.address}:{host.ssh_port} listens")
            if port_in_use(host.app_port):
                found.append(f"{host.name}: app port {host.app_port} listens")
        return found

    # -------------------------------------------------------------- Ansible
    def inventory_vars(
        self, name: str, app: str = "shop", *, known_hosts: Path | None = None
    ) -> dict[str, object]:
        """Host vars reaching ``name`` over SSH, with its deploy root and ``app``'s port.

        ssh checks the host key against ``known_hosts`` (default: the fleet's) strictly.
        """
        host = self.host(name)
        options = [
            f"UserKnownHostsFile={known_hosts or self.known_hosts}",
            "GlobalKnownHostsFile=/dev/null",
            "StrictHostKeyChecking=yes",
            "IdentitiesOnly=yes",
        ]
        return {
            "ansible_connection": "ssh",
            "ansible_host": host.address,
            "ansible_port": host.ssh_port,
            "ansible_user": _user(),
            "ansible_ssh_private_key_file": str(self.client_key),
            "ansible_ssh_common_args": " ".join(f"-o {shlex.quote(o)}" for o in options),
            "ansible_python_interpreter": _remote_python(),
            "deploy_app_base": str(host.deploy_root),
            "deploy_app_artifact_dir": str(self.artifacts_dir),
            "deploy_app_fact_dir": str(host.deploy_root / "facts.d"),
            "deploy_app_ports": {str(app): host.app_port},
        }

    def write_inventory(
        self,
        path: Path,
        groups: Mapping[str, Sequence[str]],
        apps: Mapping[str, str] | None = None,
        *,
        known_hosts: Path | None = None,
    ) -> Path:
        """An Ansible YAML inventory of ``groups``; ``apps`` maps a host to its app (shop)."""
        apps = apps or {}
        document = {
            "all": {
                "children": {
                    str(group): {
                        "hosts": {
                            str(host): self.inventory_vars(
                                host, apps.get(host, "shop"), known_hosts=known_hosts
                            )
                            for host in hosts
                        }
                    }
                    for group, hosts in groups.items()
                }
            }
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        yaml = YAML()
        yaml.width = 4096  # one line per ssh argument string
        with path.open("w", encoding="utf-8") as handle:
            yaml.dump(document, handle)
        return path

    def ansible_envvars(
        self, *, pipelining: bool = True, control_persist: bool = True
    ) -> dict[str, str]:
        """ANSIBLE_* tuning for runs against this fleet (pass as ``execution.extra_envvars``)."""
        if control_persist:
            ssh_args = "-o ControlMaster=auto -o ControlPersist=60s"
        else:
            ssh_args = "-o ControlMaster=no -o ControlPath=none"
        return {
            "ANSIBLE_SSH_ARGS": ssh_args,
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.control_dir),
            "ANSIBLE_PIPELINING": str(pipelining),
            "ANSIBLE_HOST_KEY_CHECKING": "True",
        }

    def ssh_command(self, name: str, *argv: str, known_hosts: Path | None = None) -> list[str]:
        """argv of a one-off ``ssh`` to ``name`` (host key checking on) running ``argv``."""
        host = self.host(name)
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(self.client_key),
            "-p",
            str(host.ssh_port),
            "-o",
            f"UserKnownHostsFile={known_hosts or self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            f"{_user()}@{host.address}",
            *argv,
        ]


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(arg for arg in proc.cmdline() if arg)
    except psutil.Error:
        return ""


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def _remote_python() -> str:
    """The hosts' python: the system one when there is one, else ours (same machine)."""
    return "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
