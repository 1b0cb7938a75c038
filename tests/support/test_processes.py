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
        # The others were waited for until gone (re-parented to init and reaped).
        assert not any(psutil.pid_exists(pid) for pid in pids[1:])
    finally:
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
        proc.wait(timeout=5)


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
