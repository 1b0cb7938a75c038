"""PlaybookRunner against real ansible-runner / ansible-playbook processes (no mocks)."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest

from reconciler.edges.ansible import RUN_IDENT_ENV, HostStatus, PlaybookRun
from reconciler.edges.ansible.runner import PlaybookRunner

from .conftest import PLAYBOOKS, local_host, marked_processes, unreachable_host

pytestmark = pytest.mark.ansible

HANG_SETSID = [
    "python3",
    "-c",
    "import subprocess, time; subprocess.Popen(['setsid', 'sleep', '600']); time.sleep(600)",
]


def _run(playbook: str, inventory: Path, hosts: tuple[str, ...], **kw: Any) -> PlaybookRun:
    kw.setdefault("extra_vars", {})
    kw.setdefault("timeout_s", 60.0)
    return PlaybookRun(playbook=PLAYBOOKS / playbook, inventory=inventory, hosts=hosts, **kw)


# ------------------------------------------------------------------ results per host


def test_success_on_three_hosts(runner: PlaybookRunner, make_inventory: Any) -> None:
    inv = make_inventory(
        {
            "web1": local_host(make_change=True),
            "web2": local_host(),
            "web3": local_host(make_change=True),
        }
    )
    events: list[dict] = []

    def on_event(event: dict) -> None:
        events.append(event)
        if len(events) == 1:
            raise RuntimeError("a broken on_event must not break the run")

    result = runner.run(
        _run("basic.yml", inv, ("web1", "web2", "web3"), label="production-web-step1"),
        on_event=on_event,
    )

    assert result.outcome == "successful", result
    assert result.rc == 0
    assert result.succeeded() == ("web1", "web2", "web3")
    assert result.failed() == ()
    assert {h: r.changed for h, r in result.hosts.items()} == {
        "web1": True,
        "web2": False,
        "web3": True,
    }
    assert all(r.status is HostStatus.OK and r.message == "" for r in result.hosts.values())
    assert len(result.ident) == 32 and int(result.ident, 16) >= 0
    assert result.run_dir.parent == runner.runs_dir
    assert "-production-web-step1-" in result.run_dir.name
    assert result.run_dir.name.endswith(result.ident[:8])
    assert any(e.get("event") == "playbook_on_stats" for e in events)
    assert all(e.get("runner_ident") == result.ident for e in events)


def test_one_host_fails(runner: PlaybookRunner, make_inventory: Any) -> None:
    inv = make_inventory(
        {"web1": local_host(), "web2": local_host(must_fail=True), "web3": local_host()}
    )
    result = runner.run(_run("basic.yml", inv, ("web1", "web2", "web3")))

    assert result.outcome == "failed"
    assert result.rc == 2
    assert result.succeeded() == ("web1", "web3")
    web2 = result.hosts["web2"]
    assert web2.status is HostStatus.FAILED
    assert "boom on web2" in web2.message
    assert "Maybe fail" in web2.message


def test_unreachable_host(runs_dir: Path, make_inventory: Any) -> None:
    runner = PlaybookRunner(runs_dir, host_key_checking=False)
    inv = make_inventory({"web1": local_host(), "gone": unreachable_host()})
    result = runner.run(_run("basic.yml", inv, ("web1", "gone")))

    assert result.outcome == "failed"
    assert result.rc == 4
    assert result.hosts["web1"].status is HostStatus.OK
    gone = result.hosts["gone"]
    assert gone.status is HostStatus.UNREACHABLE
    assert "refused" in gone.message.lower() or "connect" in gone.message.lower(), gone
    assert len(gone.message) <= 500


def test_limit_host_missing_from_inventory(runner: PlaybookRunner, make_inventory: Any) -> None:
    inv = make_inventory({"web1": local_host()})
    result = runner.run(_run("basic.yml", inv, ("web1", "ghost")))

    assert result.rc == 0  # Ansible only warns...
    assert result.outcome == "failed"  # ...but not every requested host was deployed
    assert result.hosts["web1"].status is HostStatus.OK
    assert result.hosts["ghost"].status is HostStatus.NOT_RUN
    assert "not" in result.hosts["ghost"].message
    assert result.failed() == ("ghost",)


def test_limit_matching_no_host_is_a_clean_result(
    runner: PlaybookRunner, make_inventory: Any
) -> None:
    inv = make_inventory({"web1": local_host()})
    result = runner.run(_run("basic.yml", inv, ("ghost1", "ghost2")))

    assert result.outcome == "failed"
    assert set(result.hosts) == {"ghost1", "ghost2"}
    assert all(r.status is HostStatus.NOT_RUN for r in result.hosts.values())
    assert "no hosts to target" in result.message


def test_ansible_errors_become_outcome_error(
    runner: PlaybookRunner, make_inventory: Any, tmp_path: Path
) -> None:
    inv = make_inventory({"web1": local_host()})
    broken = runner.run(_run("broken.yml", inv, ("web1",)))
    assert broken.outcome == "error"
    assert broken.hosts["web1"].status is HostStatus.NOT_RUN
    assert "tasks" in broken.message.lower(), broken.message

    no_inventory = runner.run(_run("basic.yml", tmp_path / "nope.yml", ("web1",)))
    assert no_inventory.outcome == "error"
    assert "inventory not found" in no_inventory.message
    assert no_inventory.hosts["web1"].message == no_inventory.message


# ------------------------------------------------------------------ unsafe vars, env


def test_extra_vars_are_never_templated_and_env_is_set(
    runner: PlaybookRunner, make_inventory: Any, tmp_path: Path
) -> None:
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    canary = Path("/tmp") / f"reconciler-pwned-{uuid.uuid4().hex}"
    evil = "{{ lookup('pipe', 'touch " + str(canary) + "') }}"
    tricky = 'it\'s "quoted"\n{% raw %}line two'
    inv = make_inventory({"web1": local_host()})
    roles = (tmp_path / "roles-a", tmp_path / "roles-b")
    run = _run(
        "probe.yml",
        inv,
        ("web1",),
        extra_vars={
            "reconciler_apps": {"shop": evil},
            "reconciler_list": ["{{ 7 * 6 }}", tricky],
            "probe_dir": str(probe_dir),
        },
        roles_path=roles,
        envvars={"PROBE_SECRET": "s3cr3t-value"},
    )
    try:
        result = runner.run(run)
    finally:
        created = canary.exists()
        canary.unlink(missing_ok=True)

    assert result.outcome == "successful", result
    assert not created, "the extra var was templated: the lookup ran"
    assert (probe_dir / "shop.txt").read_text() == evil
    assert (probe_dir / "indirect.txt").read_text() == f"{evil}|{{{{ 7 * 6 }}}}|{tricky}"

    # The controller process got our environment.
    env = json.loads((probe_dir / "env.json").read_text())
    assert env["ANSIBLE_HOST_KEY_CHECKING"] == "True"
    assert env["ANSIBLE_RETRY_FILES_ENABLED"] == "False"
    assert env["ANSIBLE_NOCOLOR"] == "1"
    assert env["ANSIBLE_ROLES_PATH"] == os.pathsep.join(str(p) for p in roles)
    assert env["RECONCILER_RUN_IDENT"] == result.ident
    assert env["PROBE_SECRET"] == "s3cr3t-value"

    # The vars file is tagged, and what ansible-runner stored keeps no secret values.
    assert "!unsafe" in (result.run_dir / "reconciler-extravars.yml").read_text()
    command = json.loads((result.run_dir / "artifacts" / result.ident / "command").read_text())
    assert command["env"]["ANSIBLE_HOST_KEY_CHECKING"] == "True"
    assert command["env"][RUN_IDENT_ENV] == result.ident
    assert command["env"]["PROBE_SECRET"] == "<redacted>"
    assert "s3cr3t-value" not in json.dumps(command)
    assert not (result.run_dir / "env" / "envvars").exists()


def test_host_key_checking_can_be_disabled(runs_dir: Path, make_inventory: Any) -> None:
    runner = PlaybookRunner(runs_dir, host_key_checking=False)
    inv = make_inventory({"web1": local_host()})
    result = runner.run(_run("basic.yml", inv, ("web1",)))
    command = json.loads((result.run_dir / "artifacts" / result.ident / "command").read_text())
    assert command["env"]["ANSIBLE_HOST_KEY_CHECKING"] == "False"


# ------------------------------------------------------------------ run dirs


def test_rotation_keeps_newest_runs(runs_dir: Path, make_inventory: Any) -> None:
    runs_dir.mkdir()
    old = [runs_dir / f"2000010{i}T000000.000000Z-old-0000000{i}" for i in range(1, 4)]
    for path in old:
        (path / "artifacts").mkdir(parents=True)
    (runs_dir / "not-a-run-dir").mkdir()
    runner = PlaybookRunner(runs_dir, keep_runs=2)
    inv = make_inventory({"web1": local_host()})

    result = runner.run(_run("basic.yml", inv, ("web1",), label="rot"))

    assert result.outcome == "successful"
    assert sorted(p.name for p in runs_dir.iterdir()) == sorted(
        [old[2].name, result.run_dir.name, "not-a-run-dir"]
    )


# ------------------------------------------------------------------ timeout, cancel, orphans


class _Watcher(threading.Thread):
    """Records, every 0.1 s, the processes carrying the marker of the run it learns from events.

    ``ready`` is set once ``expect_sleeps`` ``sleep 600`` processes have been seen.
    """

    def __init__(self, expect_sleeps: int = 0) -> None:
        super().__init__(daemon=True)
        self.run_ident: str | None = None
        self.seen: dict[int, tuple[int, str]] = {}  # pid -> (session id, cmdline)
        self.expect_sleeps = expect_sleeps
        self.ready = threading.Event()
        self.done = threading.Event()

    def on_event(self, event: dict) -> None:
        self.run_ident = self.run_ident or event.get("runner_ident")

    def run(self) -> None:
        while not self.done.wait(0.1):
            if self.run_ident is None:
                continue
            for proc in marked_processes(self.run_ident):
                try:
                    self.seen[proc.pid] = (os.getsid(proc.pid), " ".join(proc.cmdline()))
                except (OSError, psutil.Error):
                    continue
            if self.expect_sleeps and len(self.sleeps()) >= self.expect_sleeps:
                self.ready.set()

    def sleeps(self) -> dict[int, int]:
        """pid -> session id of the ``sleep 600`` processes seen."""
        return {pid: sid for pid, (sid, cmd) in self.seen.items() if cmd == "sleep 600"}

    def survivors(self) -> list[int]:
        return [pid for pid in self.seen if _alive(pid)]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _hang_inventory(make_inventory: Any) -> Path:
    return make_inventory(
        {
            "web1": local_host(hang_argv=["sleep", "600"]),
            "web2": local_host(hang_argv=HANG_SETSID),
        }
    )


def test_timeout_returns_promptly_and_leaves_no_process(
    runner: PlaybookRunner, make_inventory: Any, idents: list[str]
) -> None:
    watcher = _Watcher()
    watcher.start()
    try:
        started = time.monotonic()
        result = runner.run(
            _run("hang.yml", _hang_inventory(make_inventory), ("web1", "web2"), timeout_s=3),
            on_event=watcher.on_event,
        )
        elapsed = time.monotonic() - started
    finally:
        watcher.done.set()
        watcher.join()
        if watcher.run_ident:
            idents.append(watcher.run_ident)

    assert result.outcome == "timeout"
    assert result.rc is not None
    assert elapsed < 3 + runner.poll_interval_s + 4, elapsed
    assert result.message == "timed out after 3s"
    for host in ("web1", "web2"):
        # FAILED once its task started; NOT_RUN if the machine was too slow to get there.
        assert result.hosts[host].status in (HostStatus.FAILED, HostStatus.NOT_RUN)
        assert result.hosts[host].message == "timed out after 3s"
    assert marked_processes(result.ident) == []
    assert watcher.survivors() == []


def test_cancel_kills_setsid_orphans_and_spares_a_parallel_run(
    runner: PlaybookRunner, make_inventory: Any, idents: list[str], tmp_path: Path
) -> None:
    gate_file = tmp_path / "gate"
    gate_inv = make_inventory({"g1": local_host(gate_file=str(gate_file)), "g2": local_host()})
    hang_watcher, gate_watcher = _Watcher(expect_sleeps=2), _Watcher()
    cancel = threading.Event()
    results: dict[str, Any] = {}

    def go(name: str, run: PlaybookRun, watcher: _Watcher, **kw: Any) -> None:
        results[name] = runner.run(run, on_event=watcher.on_event, **kw)

    threads = [
        threading.Thread(
            target=go,
            args=(
                "hang",
                _run("hang.yml", _hang_inventory(make_inventory), ("web1", "web2"), label="h"),
                hang_watcher,
            ),
            kwargs={"cancel": cancel},
        ),
        threading.Thread(
            target=go,
            args=(
                "gate",
                _run(
                    "gate.yml",
                    gate_inv,
                    ("g1", "g2"),
                    label="g",
                    extra_vars={"gate_file": str(gate_file)},
                ),
                gate_watcher,
            ),
        ),
    ]
    for watcher in (hang_watcher, gate_watcher):
        watcher.start()
    for thread in threads:
        thread.start()
    try:
        # Both sleeps of the hanging run exist (one of them setsid'ed by the task itself).
        assert hang_watcher.ready.wait(60), hang_watcher.seen
        # The other run is busy waiting for its gate file.
        deadline = time.monotonic() + 60
        while not any(
            "wait_for" in cmd or "AnsiballZ" in cmd for _, cmd in gate_watcher.seen.values()
        ):
            assert time.monotonic() < deadline, gate_watcher.seen
            time.sleep(0.1)
        gate_pids = [pid for pid in gate_watcher.seen if _alive(pid)]

        cancel.set()
        canceled_at = time.monotonic()
        threads[0].join(30)
        cancel_latency = time.monotonic() - canceled_at

        # The gate run was not touched by killing the other run's tree.
        assert "gate" not in results
        assert all(_alive(pid) for pid in gate_pids)
        gate_file.touch()
        threads[1].join(60)
    finally:
        cancel.set()
        gate_file.touch()
        for watcher in (hang_watcher, gate_watcher):
            watcher.done.set()
            watcher.join()
            if watcher.run_ident:
                idents.append(watcher.run_ident)

    hang, gate = results["hang"], results["gate"]
    assert hang.outcome == "canceled"
    assert cancel_latency < runner.poll_interval_s + 4, cancel_latency
    assert all(r.status is HostStatus.FAILED for r in hang.hosts.values())
    assert all(r.message == "canceled" for r in hang.hosts.values())

    # The scenario was real: each sleep ran outside ansible-playbook's session
    # (ansible-core >= 2.19 workers setsid; the task setsid'ed one sleep once more)...
    sleeps = hang_watcher.sleeps()
    assert len(sleeps) == 2 and len(set(sleeps.values())) == 2, hang_watcher.seen
    assert os.getsid(0) not in sleeps.values()
    # ...and nothing carrying the canceled run's marker survived.
    assert marked_processes(hang.ident) == []
    assert hang_watcher.survivors() == []

    assert gate.outcome == "successful", gate
    assert gate.succeeded() == ("g1", "g2")
    assert hang.ident != gate.ident
    assert hang.run_dir != gate.run_dir
    assert hang.run_dir.is_dir() and gate.run_dir.is_dir()
