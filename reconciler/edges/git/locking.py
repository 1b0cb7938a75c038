"""One exclusive lock across threads AND processes: a thread lock plus ``fcntl.flock`` on a file.

Contract:

* ``ExclusiveLock(path).hold()`` is a context manager: while it is held, no other thread of this
  process and no other process holding the same ``path`` is inside. The lock file (created with
  its parent directory on first use) is never deleted; the kernel drops a ``flock`` when its
  holder dies, so a killed process never leaves the lock taken.
* ``hold()`` without a timeout waits as long as it takes (holders are bounded by their own git
  timeouts); ``hold(timeout=, cancel=)`` gives up with ``LockTimeout`` after ``timeout`` seconds
  or as soon as ``cancel`` is set.
* Not re-entrant: a holder must not take the same lock again.
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from reconciler.support import backoff, files

__all__ = ["ExclusiveLock", "LockTimeout"]

_POLL_S = 0.05


class LockTimeout(Exception):
    """The lock could not be taken in time (or the wait was cancelled)."""


class ExclusiveLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread_lock = threading.Lock()

    @contextlib.contextmanager
    def hold(
        self, *, timeout: float | None = None, cancel: threading.Event | None = None
    ) -> Iterator[None]:
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        if not self._thread_lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            raise LockTimeout(f"{self.path} is held by another thread")
        try:
            handle = self._flock(deadline, cancel)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
        finally:
            self._thread_lock.release()

    def _flock(self, deadline: float | None, cancel: threading.Event | None) -> IO[str]:
        files.private_dir(self.path.parent)
        handle = self.path.open("a", encoding="utf-8")
        try:
            if deadline is None:
                fcntl.flock(handle, fcntl.LOCK_EX)
                return handle
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return handle
                except BlockingIOError:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise LockTimeout(f"{self.path} is held by another process") from None
                    if not backoff.sleep(min(_POLL_S, remaining), cancel):
                        raise LockTimeout(f"gave up waiting for {self.path}") from None
        except BaseException:
            handle.close()
            raise
