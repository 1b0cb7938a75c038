"""Killing sets of processes: the one process-killing helper of reconciler (built on psutil).

Contract of :func:`kill` (``find`` returns the processes to kill, and is called repeatedly):

* ``SIGSTOP`` every process ``find()`` returns, then call ``find()`` again, until a call brings
  no process not seen before (at most ``max_rounds`` calls). A stopped process cannot fork any
  more, and a child forked before its parent stopped is found in the next round (its stopped
  parent is still alive, so trees stay connected while we look).
* Then ``SIGKILL`` every process seen (``SIGKILL`` also ends a stopped process) and wait, at
  most ``timeout_s`` seconds in all, until each has exited: a pidfd (``os.pidfd_open``) per
  process, readable once it terminated. A zombie counts as exited: reaping it is its parent's
  business (init's, for orphans, which may take seconds; this machine's init reaps every ~2 s),
  and waiting for its pid to vanish only made a kill late.
* It never waits on a direct child of the current process: ``waitpid`` would reap it behind
  the back of its owner (``subprocess.Popen``, pexpect), which would then report a wrong exit
  status. A direct child is reaped by its owner; everything below it is waited for here.
* psutil identifies a process by pid *and* creation time, so a pid reused meanwhile is never
  signalled. Vanished processes are skipped; ``kill`` never raises for them, and logs (does
  not raise) when it lacks the permission to signal one.

The finders below build ``find`` callables: :func:`descendants` (a process tree),
:func:`in_session` (members of a session, wherever they were re-parented) and :func:`carrying`
(processes whose initial environment holds a marker variable: it survives ``setsid`` and
double forks, which leave the tree and the session).
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import time
from collections.abc import Callable, Iterable

import psutil

__all__ = ["alive", "carrying", "descendants", "in_session", "kill"]

log = logging.getLogger(__name__)

_MAX_ROUNDS = 20


def alive(proc: psutil.Process) -> bool:
    """The process runs (it is not gone, nor a zombie waiting to be reaped)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # ZombieProcess is a NoSuchProcess
        return False
    except psutil.AccessDenied:  # pragma: no cover - status of a process we may not read
        return True


def descendants(pid: int | None = None, *, include_self: bool = False) -> list[psutil.Process]:
    """Live processes below ``pid`` (default: the current process), optionally with ``pid``."""
    try:
        root = psutil.Process(pid)
        found = root.children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    if include_self:
        found.insert(0, root)
    return [p for p in found if alive(p)]


def in_session(sid: int) -> list[psutil.Process]:
    """Live processes whose session id is ``sid`` (orphans re-parented to init included)."""
    found = []
    for pid in psutil.pids():
        try:
            if os.getsid(pid) != sid:
                continue
            proc = psutil.Process(pid)
        except (OSError, psutil.NoSuchProcess):
            continue
        if alive(proc):
            found.append(proc)
    return found


def carrying(
    name: str, value: str, among: Iterable[psutil.Process] | None = None
) -> list[psutil.Process]:
    """Live processes (of ``among``, default all) whose initial environment has ``name=value``.

    It reads the environment of every candidate (about 0.1 ms each): over all processes, use
    it when a kill is due, not on every healthy path; ``among`` narrows it down cheaply.
    """
    if not value:
        raise ValueError(f"{name}: the marker value must be non-empty")
    found = []
    for proc in psutil.process_iter() if among is None else among:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get(name) == value:
                found.append(proc)
        except (psutil.Error, OSError):  # gone, a zombie, or not ours to read
            continue
    return found


def _signal(proc: psutil.Process, sig: int) -> None:
    try:
        proc.send_signal(sig)  # psutil refuses a pid that was reused meanwhile
    except psutil.NoSuchProcess:
        pass
    except psutil.AccessDenied:
        log.warning("processes: no permission to signal pid %s", proc.pid)


def kill(
    find: Callable[[], Iterable[psutil.Process]],
    *,
    timeout_s: float = 5.0,
    max_rounds: int = _MAX_ROUNDS,
) -> list[int]:
    """Stop, then kill, every process ``find()`` returns; return the pids signalled, sorted.

    Waits at most ``timeout_s`` for them to be gone (never for our own direct children, whose
    owner reaps them). See the module docstring for the whole contract.
    """
    me = os.getpid()
    seen: dict[int, psutil.Process] = {}
    for _ in range(max_rounds):
        new = [p for p in find() if p.pid not in seen and p.pid != me]
        if not new:
            break
        for proc in new:
            seen[proc.pid] = proc
            _signal(proc, signal.SIGSTOP)
    else:
        log.warning("processes: still finding new processes after %d rounds", max_rounds)
    if not seen:
        return []
    for proc in seen.values():
        _signal(proc, signal.SIGKILL)
    waitable = [p for p in seen.values() if _parent(p) != me]
    left = _wait_exited(waitable, timeout_s)
    if left:
        log.warning(
            "processes: %d process(es) still there %gs after SIGKILL: %s",
            len(left),
            timeout_s,
            sorted(p.pid for p in left),
        )
    return sorted(seen)


def _wait_exited(procs: Iterable[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait (events, not polling) until every process has exited; return those that have not."""
    pending: dict[int, psutil.Process] = {}
    with selectors.DefaultSelector() as selector:
        try:
            for proc in procs:
                try:
                    fd = os.pidfd_open(proc.pid)
                except ProcessLookupError:
                    continue  # gone already
                # The pid may have been reused between kill and open: only ours is waited for.
                if not alive(proc):
                    os.close(fd)
                    continue
                selector.register(fd, selectors.EVENT_READ)
                pending[fd] = proc
            deadline = time.monotonic() + timeout_s
            while pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                for key, _ in selector.select(remaining):
                    selector.unregister(key.fd)
                    os.close(key.fd)
                    del pending[key.fd]
        finally:
            for fd in list(pending):
                selector.unregister(fd)
                os.close(fd)
    return list(pending.values())


def _parent(proc: psutil.Process) -> int | None:
    try:
        return proc.ppid()
    except psutil.Error:
        return None
