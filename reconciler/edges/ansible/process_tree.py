"""Kill every process that belongs to one playbook run.

Contract
--------
Every process started for a run inherits the environment variable
``RECONCILER_RUN_IDENT=<ident>`` (set by :mod:`reconciler.edges.ansible.runner`).
:func:`kill_run` kills exactly the processes that

* are descendants of the *current* process (``psutil.Process().children(recursive=True)``), and
* carry ``RECONCILER_RUN_IDENT=<ident>`` in their initial environment
  (``/proc/<pid>/environ``, read through :meth:`psutil.Process.environ`).

Nothing else is touched: not other runs (their marker differs), not unrelated processes, and
not processes that deliberately daemonized themselves away from our tree (e.g. an application
the playbook (re)started through a pidfile; such a process is re-parented to init, so it is
no longer a descendant).

Why not ``killpg``: ansible-runner kills the process group of ``ansible-playbook``, but since
ansible-core 2.19 every ``WorkerProcess`` calls ``setsid()``, so workers and the module
processes they spawn live in other sessions/groups and survive as orphans. Tasks can also
``setsid`` on their own.

Algorithm: scan, ``SIGSTOP`` everything found (a stopped process cannot fork any more), scan
again until no new process shows up (children forked in between are still descendants because
their stopped parents are alive), then ``SIGKILL`` them all and wait (bounded) until they are
gone or zombies. We never ``waitpid`` ourselves: our direct child (the ``ansible-playbook``
process spawned by pexpect) is reaped by its owner; reaping it here would break pexpect.
"""

from __future__ import annotations

import logging
import os
import signal
import time

import psutil

from reconciler.edges.ansible import RUN_IDENT_ENV, RUNS_DIR_ENV

__all__ = ["RUNS_DIR_ENV", "RUN_IDENT_ENV", "find_run_processes", "kill_orphans", "kill_run"]

log = logging.getLogger(__name__)

_MAX_SCAN_ROUNDS = 20


def _carries_marker(proc: psutil.Process, ident: str) -> bool:
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return proc.environ().get(RUN_IDENT_ENV) == ident
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
        return False


def find_run_processes(ident: str) -> list[psutil.Process]:
    """Return the live descendants of the current process that carry the marker of ``ident``."""
    if not ident:
        raise ValueError("ident must be non-empty")
    try:
        descendants = psutil.Process().children(recursive=True)
    except psutil.Error:  # pragma: no cover - our own process always exists
        return []
    return [p for p in descendants if _carries_marker(p, ident)]


def _signal(proc: psutil.Process, sig: int) -> bool:
    """Send ``sig``; psutil refuses to signal a pid that was reused meanwhile."""
    try:
        proc.send_signal(sig)
        return True
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        log.warning("process_tree: no permission to signal pid %s", proc.pid)
        return False


def _gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return True
    except psutil.AccessDenied:  # pragma: no cover
        return False


def kill_run(ident: str, *, timeout_s: float = 5.0) -> list[int]:
    """Stop, then kill, every live process of run ``ident`` in our process tree.

    Returns the pids that were signalled. Waits at most ``timeout_s`` for them to die (a
    process that is gone or a zombie counts as dead). Never raises for vanished processes.
    """
    found: dict[int, psutil.Process] = {}
    for _ in range(_MAX_SCAN_ROUNDS):
        new = [p for p in find_run_processes(ident) if p.pid not in found]
        if not new:
            break
        for proc in new:
            found[proc.pid] = proc
            _signal(proc, signal.SIGSTOP)
    else:
        log.warning("process_tree: run %s still forking after %d scans", ident, _MAX_SCAN_ROUNDS)

    if not found:
        return []

    for proc in found.values():
        _signal(proc, signal.SIGKILL)  # SIGKILL also ends a stopped process

    deadline = time.monotonic() + timeout_s
    pending = list(found.values())
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if not _gone(p)]
        if pending:
            time.sleep(0.02)
    if pending:
        log.warning(
            "process_tree: run %s: %d process(es) still alive after SIGKILL: %s",
            ident,
            len(pending),
            [p.pid for p in pending],
        )
    log.info(
        "process_tree: killed %d process(es) of run %s (self=%d)", len(found), ident, os.getpid()
    )
    return sorted(found)


def kill_orphans(runs_dir: str) -> list[int]:
    """Kill processes left by runs of ``runs_dir`` whose daemon died (e.g. ``kill -9``).

    Scans every process on the machine (orphans are re-parented to init, so they are no longer
    our descendants) for ``RECONCILER_RUNS_DIR=<runs_dir>``; our own live descendants are
    spared. Call it on start, before any run of ours exists.
    """
    own = {p.pid for p in psutil.Process().children(recursive=True)} | {os.getpid()}
    found: list[psutil.Process] = []
    for proc in psutil.process_iter():
        if proc.pid in own:
            continue
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and (
                proc.environ().get(RUNS_DIR_ENV) == runs_dir
            ):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    for proc in found:
        _signal(proc, signal.SIGSTOP)
    for proc in found:
        _signal(proc, signal.SIGKILL)
    if found:
        log.warning("process_tree: killed %d orphan(s) of %s", len(found), runs_dir)
    return sorted(p.pid for p in found)
