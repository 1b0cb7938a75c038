"""The SSH fleet itself: host key checking is really on, and stopping leaves nothing behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psutil
import pytest

from reconciler import content
from reconciler.edges.ansible import HostStatus, PlaybookRun
from reconciler.edges.ansible.runner import PlaybookRunner
from reconciler.testing.fleet import served_version
from reconciler.testing.ssh_fleet import SshFleet
from tests.ssh.conftest import ssh_address

pytestmark = pytest.mark.ssh

PING = Path(__file__).with_name("ping.yml")


def run(
    fleet: SshFleet,
    tmp_path: Path,
    playbook: Path = PING,
    extra_vars: dict[str, object] | None = None,
    known_hosts: Path | None = None,
) -> dict[str, tuple[HostStatus, str]]:
    """Run ``playbook`` on every host of ``fleet``; per-host (status, message)."""
    names = [h.name for h in fleet.hosts]
    inventory = tmp_path / "inventory.yml"
    fleet.write_inventory(inventory, {"web": names}, known_hosts=known_hosts)
    result = PlaybookRunner(tmp_path / "runs").run(
        PlaybookRun(
            playbook=playbook,
            inventory=inventory,
            hosts=tuple(names),
            extra_vars=extra_vars or {},
            timeout_s=120,
            roles_path=(content.roles_dir(),),
            envvars=fleet.ansible_envvars(),
        )
    )
    return {h: (r.status, r.message) for h, r in result.hosts.items()}


def wrong_known_hosts(fleet: SshFleet, path: Path) -> Path:
    """known_hosts giving each host's address the key of the other host."""
    lines = fleet.known_hosts.read_text().splitlines()
    addresses = [line.split(" ", 1)[0] for line in lines]
    keys = [line.split(" ", 1)[1] for line in lines]
    path.write_text("".join(f"{a} {k}\n" for a, k in zip(addresses, keys[::-1], strict=True)))
    return path


def test_host_key_checking_is_on(small_fleet: SshFleet, tmp_path: Path) -> None:
    fleet = small_fleet
    name = fleet.hosts[0].name
    ok = subprocess.run(fleet.ssh_command(name, "echo", "in"), capture_output=True, text=True)
    assert (ok.returncode, ok.stdout) == (0, "in\n"), ok.stderr

    wrong = wrong_known_hosts(fleet, tmp_path / "wrong_known_hosts")
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    for known_hosts in (wrong, empty):
        cmd = fleet.ssh_command(name, "echo", "in", known_hosts=known_hosts)
        denied = subprocess.run(cmd, capture_output=True, text=True)
        assert denied.returncode == 255 and denied.stdout == ""
        assert "Host key verification failed" in denied.stderr
    assert empty.read_text() == "", "an unknown host key must not be learnt"

    # the same through Ansible, as the daemon runs it
    assert {s for s, _ in run(fleet, tmp_path / "ok").values()} == {HostStatus.OK}
    fleet.drop_connections()  # a live control master would skip the handshake
    results = run(fleet, tmp_path / "wrong", known_hosts=wrong)
    for status, message in results.values():
        assert status == HostStatus.UNREACHABLE
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in message


def fleet_traces(fleet: SshFleet) -> list[str]:
    """Processes and listening sockets of ``fleet``, found without the fleet's own bookkeeping:
    anything whose command line names the fleet's directories (sshd, apps, ssh masters) and
    anything listening on a host's SSH endpoint or app port."""
    markers = (str(fleet.root), str(fleet.control_dir))
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if proc.info["status"] != psutil.STATUS_ZOMBIE and any(m in cmdline for m in markers):
            found.append(f"{proc.info['pid']}: {cmdline}")
    endpoints = {(h.address, h.ssh_port) for h in fleet.hosts}
    endpoints |= {("127.0.0.1", h.app_port) for h in fleet.hosts}
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and (conn.laddr.ip, conn.laddr.port) in endpoints:
            found.append(f"listening: {conn.laddr.ip}:{conn.laddr.port}")
    return found


def test_stop_leaves_no_sshd_app_or_port_behind(sshd: str, tmp_path: Path) -> None:
    fleet = SshFleet(tmp_path / "fleet", 2, first_address=ssh_address(40)).start()
    try:
        fleet.build("shop", "1.0.0")
        deploy = content.playbooks_dir() / "deploy-app.yml"
        results = run(fleet, tmp_path, deploy, {"reconciler_apps": {"shop": "1.0.0"}})
        assert {s for s, _ in results.values()} == {HostStatus.OK}, results
        assert all(served_version(h.app_port) == "1.0.0" for h in fleet.hosts)
        before = fleet_traces(fleet)
        # what this check must see while the fleet runs: 2 sshd, 2 apps, ssh control
        # masters, and 2 SSH endpoints and 2 app ports listening
        assert sum("sshd_config" in t for t in before) == 2
        assert sum("/releases/1.0.0/start" in t for t in before) == 2
        assert any("[mux]" in t for t in before)
        assert sum(t.startswith("listening") for t in before) == 4
        control_dir = fleet.control_dir
    finally:
        fleet.stop()
    assert fleet_traces(fleet) == []
    assert fleet.leftovers() == []
    assert fleet.running_pids() == []
    assert not control_dir.exists()
    assert all(served_version(h.app_port) is None for h in fleet.hosts)
