"""``app-service fact`` and the executable fact file it backs (roles/deploy_app/files/app-service).

Run directly, without Ansible: what the fact says about ``current`` (valid, switched by hand,
weird) and about the process (pidfile: alive and started by app-service; systemd: a stand-in
``systemctl`` on PATH, as this machine has no systemd), the wrapper's quoting and its answer
when the helper is gone. Every answer is one JSON object and exit status 0.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.content.conftest import pid_alive
from tests.content.test_app_service import HELPER, release

APP = "shop"


def helper(*args: str, env: dict[str, str] | None = None, app_root: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, str(HELPER), *args, f"--name={APP}", f"--app-root={app_root}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def fact(root: Path, manager: str = "pidfile", env: dict[str, str] | None = None) -> dict:
    return helper("fact", f"--manager={manager}", app_root=root, env=env)


def switch(root: Path, target: str) -> None:
    """Point current at target atomically, as an operator's `ln -sfn` + `mv -T` would."""
    tmp = root / "current.by-hand"
    os.symlink(target, tmp)
    os.replace(tmp, root / "current")


def wait_exit(pid: int, timeout: float = 10.0) -> None:
    """Block until pid has exited (a pidfd becomes readable then: no polling)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        assert ready, f"process {pid} still runs after {timeout}s"
    finally:
        os.close(fd)


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """An app root with two complete releases (1.0 and 2.0), current -> releases/2.0."""
    root = tmp_path / "shop"
    release(root, "1.0", mtime=1_000)
    release(root, "2.0", mtime=2_000)
    os.symlink("releases/2.0", root / "current")
    yield root
    # stop whatever a test started
    subprocess.run(
        [
            sys.executable,
            str(HELPER),
            "stop",
            f"--name={APP}",
            "--version=2.0",
            f"--app-root={root}",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )


def start(root: Path) -> int:
    """Start the release current points to, as the role does on pidfile hosts."""
    answer = helper("restart", "--version=2.0", "--start-timeout=0.2", app_root=root)
    assert answer["action"] == "started"
    return int(answer["pid"])


def test_a_port_another_program_holds_is_refused_before_the_start(root: Path) -> None:
    """Another program answers on the app's port: the start is refused (it would answer the
    start check for an app that died on EADDRINUSE), and nothing is left running."""
    with socket.create_server(("127.0.0.1", 0)) as other:
        port = other.getsockname()[1]
        proc = subprocess.run(
            [
                sys.executable,
                str(HELPER),
                "restart",
                "--version=2.0",
                f"--port={port}",
                f"--name={APP}",
                f"--app-root={root}",
                "--start-timeout=5",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert proc.returncode == 1, proc.stdout
    assert f"127.0.0.1:{port} already accepts TCP connections" in proc.stderr
    assert fact(root)["running"] is False


def test_a_running_app_reports_the_version_current_points_to(root: Path) -> None:
    pid = start(root)
    assert fact(root) == {
        "app": APP,
        "manager": "pidfile",
        "version": "2.0",
        "current": "2.0",
        "release_dir": f"{root}/releases/2.0",
        "running": True,
        "pid": pid,
        "running_version": "2.0",
        "state": "running",
    }


def test_current_switched_by_hand_is_reported_at_once(root: Path) -> None:
    pid = start(root)
    switch(root, "releases/1.0")
    answer = fact(root)
    assert (answer["version"], answer["current"], answer["running"]) == ("1.0", "1.0", True)
    # the process was started from 2.0 and was not restarted: the fact says so
    assert answer["running_version"] == "2.0"
    assert answer["release_dir"] == f"{root}/releases/1.0"
    assert answer["pid"] == pid
    # an absolute target inside releases/ is the same release
    switch(root, f"{root}/releases/1.0")
    assert fact(root)["version"] == "1.0"


def test_a_stopped_app_has_no_version(root: Path) -> None:
    pid = start(root)
    os.killpg(pid, signal.SIGKILL)
    wait_exit(pid)
    answer = fact(root)
    assert answer["running"] is False
    assert answer["version"] is None
    assert answer["state"] == "stopped"
    assert "not running" in answer["reason"]
    assert answer["current"] == "2.0"  # what would run, for the operator


def test_a_live_pid_that_app_service_did_not_start_is_not_the_app(root: Path) -> None:
    """A recycled pid: alive, but its start time is not the one app-service recorded."""
    run = root / "run"
    run.mkdir()
    (run / f"{APP}.pid").write_text(f"{os.getpid()}\n")
    (run / f"{APP}.state.json").write_text(
        json.dumps({"pid": os.getpid(), "start_time": 1, "release": str(root / "releases/2.0")})
    )
    assert pid_alive(os.getpid())
    answer = fact(root)
    assert (answer["running"], answer["version"], answer["state"]) == (False, None, "stopped")


@pytest.mark.parametrize(
    "target",
    [
        "/etc",  # outside releases/
        "releases/3.0",  # no such release (dangling)
        "releases/..",  # the releases directory itself
        "releases/2.0/..",
        "releases/.hidden",  # not a version
        "releases/bad version",
        "releases/{{ 7 * 7 }}",
        "releases/" + "9" * 129,  # too long for a version
        "",
    ],
)
def test_a_weird_current_gives_no_version_and_an_error(root: Path, target: str) -> None:
    for odd in (".hidden", "bad version", "{{ 7 * 7 }}", "9" * 129):
        release(root, odd)
    pid = start(root)
    (root / "current").unlink()
    if target:
        switch(root, target)
    else:
        (root / "current").mkdir()  # a directory, not a link
    answer = fact(root)
    assert answer["running"] is True and answer["pid"] == pid
    assert answer["version"] is None
    assert answer["current"] is None and answer["release_dir"] is None
    assert answer["state"] == "bad_release"
    assert answer["error"] and answer["reason"]


def test_nothing_deployed_yet(tmp_path: Path) -> None:
    answer = fact(tmp_path / "shop")
    assert answer["version"] is None and answer["current"] is None
    assert answer["state"] == "stopped" and answer["running"] is False
    assert "error" not in answer


def fake_systemctl(tmp_path: Path, script: str) -> dict[str, str]:
    """An environment whose PATH starts with a stand-in systemctl running ``script``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    systemctl = bin_dir / "systemctl"
    systemctl.write_text("#!/bin/sh\n" + script)
    systemctl.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}


def test_systemd_active_unit_reports_the_version(root: Path, tmp_path: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "60"], cwd=root / "current")
    try:
        env = fake_systemctl(
            tmp_path,
            'test "$*" = "show --property=ActiveState,SubState,MainPID -- '
            'reconciler-app-shop.service" || exit 3\n'
            f"printf 'MainPID={sleeper.pid}\\nActiveState=active\\nSubState=running\\n'\n",
        )
        answer = fact(root, "systemd", env)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert answer["manager"] == "systemd"
    assert (answer["version"], answer["running"], answer["state"]) == ("2.0", True, "running")
    assert answer["pid"] == sleeper.pid
    assert answer["running_version"] == "2.0"  # from the process's working directory


@pytest.mark.parametrize(
    ("active", "state"), [("inactive", "stopped"), ("failed", "failed"), ("activating", "stopped")]
)
def test_systemd_inactive_unit_has_no_version(
    root: Path, tmp_path: Path, active: str, state: str
) -> None:
    env = fake_systemctl(
        tmp_path, f"printf 'MainPID=0\\nActiveState={active}\\nSubState=dead\\n'\n"
    )
    answer = fact(root, "systemd", env)
    assert (answer["version"], answer["running"], answer["state"]) == (None, False, state)
    assert f"is {active}" in answer["reason"]


def test_a_failing_check_still_answers_json(root: Path, tmp_path: Path) -> None:
    env = fake_systemctl(tmp_path, "echo 'Failed to connect to bus' >&2\nexit 1\n")
    answer = fact(root, "systemd", env)
    assert answer["version"] is None and answer["state"] == "error"
    assert "Failed to connect to bus" in answer["error"]


def record(helper_path: Path, app_root: Path, fact_file: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            str(helper_path),
            "record",
            f"--name={APP}",
            f"--app-root={app_root}",
            "--manager=pidfile",
            f"--fact-file={fact_file}",
        ],
        capture_output=True,
        timeout=30,
        check=True,
    )


def test_the_wrapper_quotes_what_it_runs(tmp_path: Path) -> None:
    canary = tmp_path / "injected"
    odd = tmp_path / f'it\'s $(touch {canary}) `touch {canary}` "x" \\ ; a b'
    root = odd / "shop"
    release(root, "2.0")
    os.symlink("releases/2.0", root / "current")
    fact_file = tmp_path / "facts.d" / "reconciler_shop.fact"
    record(HELPER, root, fact_file)
    run = subprocess.run([str(fact_file)], capture_output=True, text=True, timeout=30, check=True)
    answer = json.loads(run.stdout)
    assert answer["current"] == "2.0"
    assert answer["release_dir"] == f"{root}/releases/2.0"
    assert not canary.exists()


def test_the_wrapper_answers_when_the_helper_is_gone(tmp_path: Path) -> None:
    installed = tmp_path / "bin" / "app-service"
    installed.parent.mkdir()
    shutil.copy(HELPER, installed)
    fact_file = tmp_path / "facts.d" / "reconciler_shop.fact"
    record(installed, tmp_path / "shop", fact_file)
    installed.unlink()
    run = subprocess.run([str(fact_file)], capture_output=True, text=True, timeout=30, check=False)
    assert run.returncode == 0
    assert json.loads(run.stdout) == {
        "app": APP,
        "version": None,
        "running": None,
        "state": "error",
        "reason": "the check failed",
        "error": f"cannot run {installed} fact",
    }
