"""systemd/reconciler.service: systemd-analyze verify and security, and what the daemon needs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.edges.git.reader import FETCH_TIMEOUT_S
from reconciler.service.resources import RESERVED_FDS
from reconciler.settings import Settings
from tests.tools import require_tool

REPO_ROOT = Path(__file__).resolve().parents[2]
UNIT = REPO_ROOT / "systemd" / "reconciler.service"
CONFIG = REPO_ROOT / "systemd" / "reconciler.yaml"
EXEC_BINARY = "/usr/local/bin/reconciler"
CREDENTIALS_DIR = "/run/credentials/reconciler.service"

#: The requirement: `systemd-analyze security` rates the unit at most this (lower is better).
MAX_EXPOSURE = 2.5
#: Checks allowed to cost exposure, each for a reason the daemon cannot avoid.
ACCEPTED_EXPOSURE = {
    "PrivateNetwork=",  # Git remote, SSH to hosts, health checks, Prometheus
    "IPAddressDeny=",  # the hosts and remotes are site-specific; a drop-in can add a list
    "RestrictAddressFamilies=~AF_(INET|INET6)",  # same
    "RestrictAddressFamilies=~AF_UNIX",  # sd_notify, journald, SSH ControlMaster sockets
    "ProcSubset=",  # psutil needs /proc/stat (boot time) to kill a run's process tree
    "RootDirectory=/RootImage=",  # runs the installed Python, git, ssh, ansible
    "DeviceAllow=",  # char-rtc:r, added by ProtectClock=yes itself
}


def _parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values in order (systemd units repeat keys)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path}: assignment outside a section: {line}"
        assert not line.endswith("\\"), f"{path}: keep assignments on one line: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"{path}: not an assignment: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _seconds(span: str) -> float:
    """A systemd time span such as ``150s``, ``2min 30s`` or ``5min`` in seconds."""
    units = {"": 1, "ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    assert re.fullmatch(r"(\s*\d+(\.\d+)?\s*[a-z]*)+", span), span
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span)
    return sum(float(number) * units[unit] for number, unit in parts)


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return _parse_unit(UNIT)["Service"]


def _single(service: dict[str, list[str]], key: str) -> str:
    values = service.get(key, [])
    assert len(values) == 1, f"{key}= must be set exactly once, got {values}"
    return values[0]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LC_ALL": "C.UTF-8", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)


# --------------------------------------------------------------------- systemd-analyze verify


def test_verify_is_clean(tmp_path: Path) -> None:
    """verify needs ExecStart's binary to exist: check a copy pointing at one that does."""
    analyze = require_tool("systemd-analyze", "systemd")
    binary = EXEC_BINARY
    if not Path(binary).exists():
        venv_script = Path(sys.executable).parent / "reconciler"
        binary = str(venv_script) if venv_script.exists() else shutil.which("true") or "/bin/true"
    text = UNIT.read_text(encoding="utf-8")
    assert text.count(f"ExecStart={EXEC_BINARY} ") == 1
    copy = tmp_path / "reconciler.service"  # same name: %n, credentials dir, ...
    copy.write_text(text.replace(f"ExecStart={EXEC_BINARY} ", f"ExecStart={binary} "))
    result = _run([analyze, "verify", "--man=no", str(copy)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""
    assert result.stderr.strip() == ""


def test_verify_of_the_shipped_unit_only_misses_the_binary() -> None:
    analyze = require_tool("systemd-analyze", "systemd")
    result = _run([analyze, "verify", "--man=no", str(UNIT)])
    output = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    if Path(EXEC_BINARY).exists():
        assert result.returncode == 0, output
        assert output == []
    else:
        assert output, "verify should report the missing ExecStart binary"
        for line in output:
            assert EXEC_BINARY in line, line


# ------------------------------------------------------------------- systemd-analyze security


def test_security_exposure_is_at_most_2_5() -> None:
    analyze = require_tool("systemd-analyze", "systemd")
    result = _run([analyze, "security", "--offline=true", "--no-pager", str(UNIT)])
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(
        r"Overall exposure level for reconciler\.service: (\d+(?:\.\d+)?)\b", result.stdout
    )
    assert match, result.stdout
    assert 0.0 <= float(match.group(1)) <= MAX_EXPOSURE, match.group(0)


def test_only_accepted_checks_cost_exposure() -> None:
    analyze = require_tool("systemd-analyze", "systemd")
    result = _run([analyze, "security", "--offline=true", "--json=short", str(UNIT)])
    assert result.returncode == 0, result.stdout + result.stderr
    checks = json.loads(result.stdout)
    assert len(checks) > 50  # the whole table, not an error object
    exposed = {c["name"] for c in checks if c["exposure"] and float(c["exposure"]) > 0}
    assert exposed <= ACCEPTED_EXPOSURE, sorted(exposed - ACCEPTED_EXPOSURE)
    by_name = {c["name"]: c for c in checks}
    for name in ("NotifyAccess=", "User=/DynamicUser=", "MemoryDenyWriteExecute=", "UMask="):
        assert not by_name[name]["exposure"], by_name[name]


# ----------------------------------------------------------------------- the daemon contract


def test_notify_and_watchdog(service: dict[str, list[str]]) -> None:
    assert _single(service, "Type") == "notify"
    assert _single(service, "NotifyAccess") == "main"
    watchdog = _seconds(_single(service, "WatchdogSec"))
    # The main loop pings every second but runs `git fetch` itself: a fetch hanging until its
    # timeout must not look like a hung daemon (a Git outage would become a restart loop).
    assert FETCH_TIMEOUT_S + 30 <= watchdog <= 600
    assert _single(service, "Restart") == "on-failure"


def test_exec_start_runs_the_daemon_with_the_shipped_config_path(
    service: dict[str, list[str]],
) -> None:
    argv = _single(service, "ExecStart").split()
    assert argv == [EXEC_BINARY, "run", "--config", "/etc/reconciler/reconciler.yaml"]


def test_stop_timeout_covers_the_shutdown_grace(service: dict[str, list[str]]) -> None:
    assert _single(service, "KillMode") == "mixed"
    assert _single(service, "KillSignal") == "SIGTERM"
    stop = _seconds(_single(service, "TimeoutStopSec"))
    configured = Settings.load(CONFIG).daemon.shutdown_grace
    default = Settings().daemon.shutdown_grace
    for grace in (configured, default):
        assert grace + 15 <= stop <= grace + 120, (grace, stop)


def test_writable_paths_are_the_state_and_runtime_dirs(service: dict[str, list[str]]) -> None:
    assert _single(service, "ProtectSystem") == "strict"
    assert _single(service, "StateDirectory") == "reconciler"
    assert _single(service, "RuntimeDirectory") == "reconciler"
    assert "ReadWritePaths" not in service
    state_dir = "%S/" + _single(service, "StateDirectory")
    # Ansible and ssh write under HOME: it must be the state dir
    assert f"HOME={state_dir}" in service.get("Environment", [])
    assert Settings.load(CONFIG).state_dir == Path("/var/lib/reconciler")


def test_network_is_outbound_inet_and_unix_only(service: dict[str, list[str]]) -> None:
    families = " ".join(service.get("RestrictAddressFamilies", [])).split()
    assert sorted(families) == ["AF_INET", "AF_INET6", "AF_UNIX"]
    assert service.get("PrivateNetwork", ["no"]) == ["no"]


def test_credentials_match_the_config_example(service: dict[str, list[str]]) -> None:
    loaded = {}
    for value in service.get("LoadCredential", []):
        name, _, source = value.partition(":")
        assert source.startswith("/etc/reconciler/credentials/"), value
        loaded[name] = source
    assert set(loaded) == {"api-token", "ssh-key", "github-secret", "gitlab-token", "gitea-secret"}
    settings = Settings.load(CONFIG)
    referenced = [
        settings.api.token_file,
        settings.execution.private_key_file,
        settings.webhooks.github_secret_file,
        settings.webhooks.gitlab_token_file,
        settings.webhooks.gitea_secret_file,
    ]
    names = set()
    for path in referenced:
        assert path is not None
        assert path.parent == Path(CREDENTIALS_DIR), path
        names.add(path.name)
    assert names == set(loaded)


def _bytes(size: str) -> int:
    units = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    match = re.fullmatch(r"(\d+)([KMGT]?)", size)
    assert match, f"a size such as 4G, not {size!r}"
    return int(match.group(1)) * units[match.group(2)]


def test_open_files_and_memory_are_bounded(service: dict[str, list[str]]) -> None:
    """Enough descriptors for every API connection the daemon allows plus what Git and Ansible
    need (the daemon raises its soft limit to this); memory bounded for the whole cgroup."""
    nofile = int(_single(service, "LimitNOFILE"))
    for settings in (Settings.load(CONFIG), Settings()):
        assert nofile >= settings.api.max_connections + RESERVED_FDS + 1024
    high = _bytes(_single(service, "MemoryHigh"))
    limit = _bytes(_single(service, "MemoryMax"))
    assert 1024**3 <= high < limit <= 64 * 1024**3
