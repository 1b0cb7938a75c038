"""support.processes.kill against real process trees."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys

import psutil

from reconciler.support import processes

# Forks a child that forks a grandchild; each level prints its pid, then everything sleeps.
TREE = """
import os, subprocess, sys, time
depth = int(sys.argv[1])
print(os.getpid(), flush=True)
if depth:
    subprocess.Popen([sys.executable, '-c', sys.argv[2], str(depth - 1), sys.argv[2]])
time.sleep(600)
"""


def _tree(depth: int) -> tuple[subprocess.Popen[str], list[int]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", TREE, str(depth), TREE], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    pids = [int(proc.stdout.readline()) for _ in range(depth + 1)]  # every level is running
    return proc, pids


def test_kills_a_tree_and_leaves_our_child_to_its_owner() -> None:
    proc, pids = _tree(2)
    try:
        killed = processes.kill(lambda: processes.descendants(proc.pid, include_self=True))
        assert killed == sorted(pids)
        # Our direct child was not reaped behind Popen's back: Popen still gets its real status.
        assert proc.wait(timeout=5) == -signal.SIGKILL
        # The others were waited for until they exited (gone, or zombies init reaps later).
        assert not any(_running(pid) for pid in pids[1:])
    finally:
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
        proc.wait(timeout=5)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# Starts a sleeper it never waits for (a killed sleeper stays its zombie), prints its pid, sleeps.
NO_REAPER = """
import subprocess, sys, time
child = subprocess.Popen(['sleep', '600'])
print(child.pid, flush=True)
time.sleep(600)
"""


def test_a_killed_process_left_a_zombie_counts_as_exited(caplog) -> None:
    """Its parent does not reap it (as init may take seconds to): kill does not wait for the
    pid to vanish, so it neither runs into its timeout nor reports the zombie as still there."""
    parent = subprocess.Popen([sys.executable, "-c", NO_REAPER], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    sleeper = int(parent.stdout.readline())
    try:
        with caplog.at_level("WARNING", logger="reconciler.support.processes"):
            killed = processes.kill(lambda: [psutil.Process(sleeper)], timeout_s=3)
        assert killed == [sleeper]
        assert psutil.Process(sleeper).status() == psutil.STATUS_ZOMBIE, "its parent reaps it"
        assert "still there" not in caplog.text
    finally:
        parent.kill()
        parent.wait(timeout=10)


def test_nothing_found_nothing_done() -> None:
    assert processes.kill(lambda: []) == []


def test_a_process_gone_between_finding_and_killing_is_skipped() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    found = psutil.Process(proc.pid)
    proc.wait(timeout=10)
    processes.kill(lambda: [found], timeout_s=1)  # does not raise
    assert proc.returncode == 0


def test_never_signals_itself() -> None:
    assert processes.kill(lambda: [psutil.Process()]) == []
