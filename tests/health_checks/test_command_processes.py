"""Command gates leave no process behind: real commands that fork, setsid and double-fork."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from reconciler.edges.gates.checker import HealthChecker

from .conftest import check, target

# The command's own process: runs the script argv[1] (below), writes the pid it printed to the
# file argv[2], then sleeps argv[3] seconds; with argv[4] it first writes "ready" to that FIFO.
TOP = """
import subprocess, sys, time
spawned = subprocess.run([sys.executable, '-c', sys.argv[1]], capture_output=True, text=True)
with open(sys.argv[2], 'w') as report:
    report.write(spawned.stdout.strip())
print('spawned', flush=True)
if len(sys.argv) > 4:
    with open(sys.argv[4], 'w') as ready:
        ready.write('ready')
time.sleep(float(sys.argv[3]))
"""
# Starts a sleeper in a session of its own (out of the command's group and session), prints its
# pid and exits: the sleeper outlives its parent, re-parented to init.
DOUBLE_FORK = (
    "import subprocess, sys; "
    "p = subprocess.Popen(['sleep', '600'], start_new_session=True, "
    "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(p.pid)"
)
# Starts a sleeper in the command's own session and group, prints its pid and exits.
BACKGROUND = (
    "import subprocess, sys; "
    "p = subprocess.Popen(['sleep', '600'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
    "print(p.pid)"
)
# A child in a session of its own that stays a child: the tree, not the group, finds it.
SETSID_CHILD = """
import os, subprocess, sys, time
p = subprocess.Popen(['sleep', '600'], start_new_session=True)
with open(sys.argv[1], 'w') as report:
    report.write(str(p.pid))
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def pids() -> Iterator[list[int]]:
    """Pids a test learned; whatever is still alive at the end is killed (safety net only)."""
    found: list[int] = []
    yield found
    for pid in found:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).send_signal(signal.SIGKILL)


def _top(spawn: str, report: Path, sleep: float) -> list[str]:
    return [sys.executable, "-c", TOP, spawn, str(report), str(sleep)]


def test_timeout_kills_a_grandchild_that_left_the_tree_and_the_session(tmp_path, pids):
    report = tmp_path / "pid"
    gate = check("command", argv=_top(DOUBLE_FORK, report, 600), timeout=3, request_timeout=3)
    started = time.monotonic()
    [result] = HealthChecker().evaluate([gate], [target()])
    pids.append(grandchild := int(report.read_text()))
    assert time.monotonic() - started < 10
    assert not result.passed
    assert "timed out after 3s (killed): spawned" in result.detail
    # Neither a descendant of the command nor in its session or group, yet gone.
    assert not _alive(grandchild)


def test_timeout_kills_a_child_in_another_session(tmp_path, pids):
    report = tmp_path / "pid"
    argv = [sys.executable, "-c", SETSID_CHILD, str(report)]
    gate = check("command", argv=argv, timeout=3, request_timeout=3)
    [result] = HealthChecker().evaluate([gate], [target()])
    pids.append(child := int(report.read_text()))
    assert "timed out after 3s (killed)" in result.detail
    assert not _alive(child)


def test_what_a_command_left_in_its_session_is_killed_after_it_exits(tmp_path, pids):
    report = tmp_path / "pid"
    gate = check("command", argv=_top(BACKGROUND, report, 0))
    [result] = HealthChecker().evaluate([gate], [target()])
    pids.append(sleeper := int(report.read_text()))
    assert result.passed, result.detail
    assert result.detail.endswith("-> exit 0: spawned")
    assert not _alive(sleeper)


def test_cancel_kills_the_running_command_and_its_tree(tmp_path, pids):
    report = tmp_path / "pid"
    ready = tmp_path / "ready"
    os.mkfifo(ready)
    argv = [*_top(DOUBLE_FORK, report, 600), str(ready)]
    gate = check("command", argv=argv, timeout=60, request_timeout=60)
    cancel = threading.Event()

    def cancel_when_ready() -> None:
        with open(ready) as fifo:  # blocks until the command opens it for writing
            fifo.read()
        cancel.set()

    waiter = threading.Thread(target=cancel_when_ready, daemon=True)
    waiter.start()
    try:
        [result] = HealthChecker().evaluate([gate], [target()], cancel=cancel)
    finally:
        with contextlib.suppress(OSError):  # unblock the waiter if the command never got there
            os.close(os.open(ready, os.O_WRONLY | os.O_NONBLOCK))
    assert cancel.is_set()
    assert (result.passed, result.detail) == (False, "canceled")
    pids.append(sleeper := int(report.read_text()))
    # evaluate() returns at once on cancel; the attempt kills the tree in its worker thread.
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(sleeper).wait(timeout=10)
    assert not _alive(sleeper)
