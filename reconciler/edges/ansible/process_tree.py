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

The killing itself is :func:`reconciler.support.processes.kill`: ``SIGSTOP`` everything found
(a stopped process cannot fork any more), scan again until no new process shows up (children
forked in between are still descendants because their stopped parents are alive), then
``SIGKILL`` them all and wait (bounded, on pidfds) until they have exited. It never
calls ``waitpid`` on our direct child (the ``ansible-playbook`` process spawned by pexpect):
its owner reaps it; reaping it here would break pexpect.
"""

from __future__ import annotations

import logging

import psutil

from reconciler.edges.ansible import RUN_IDENT_ENV, RUNS_DIR_ENV
from reconciler.support import processes

__all__ = ["RUNS_DIR_ENV", "RUN_IDENT_ENV", "find_run_processes", "kill_orphans", "kill_run"]

log = logging.getLogger(__name__)


def find_run_processes(ident: str) -> list[psutil.Process]:
    """Return the live descendants of the current process that carry the marker of ``ident``."""
    if not ident:
        raise ValueError("ident must be non-empty")
    return processes.carrying(RUN_IDENT_ENV, ident, among=processes.descendants())


def kill_run(ident: str, *, timeout_s: float = 5.0) -> list[int]:
    """Stop, then kill, every live process of run ``ident`` in our process tree.

    Returns the pids that were signalled. Waits at most ``timeout_s`` for them to be gone.
    Never raises for vanished processes.
    """
    killed = processes.kill(lambda: find_run_processes(ident), timeout_s=timeout_s)
    if killed:
        log.info("process_tree: killed %d process(es) of run %s", len(killed), ident)
    return killed


def _orphans(runs_dir: str) -> list[psutil.Process]:
    own = processes.descendants()
    spared = {p.pid for p in own}
    marked = processes.carrying(RUNS_DIR_ENV, runs_dir)
    return [p for p in marked if p.pid not in spared]


def kill_orphans(runs_dir: str, *, timeout_s: float = 5.0) -> list[int]:
    """Kill processes left by runs of ``runs_dir`` whose daemon died (e.g. ``kill -9``).

    Scans every process on the machine (orphans are re-parented to init, so they are no longer
    our descendants) for ``RECONCILER_RUNS_DIR=<runs_dir>``; our own live descendants are
    spared. Call it on start, before any run of ours exists.
    """
    if not runs_dir:
        raise ValueError("runs_dir must be non-empty")
    killed = processes.kill(lambda: _orphans(runs_dir), timeout_s=timeout_s)
    if killed:
        log.warning("process_tree: killed %d orphan(s) of %s", len(killed), runs_dir)
    return killed
