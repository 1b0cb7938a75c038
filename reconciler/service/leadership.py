"""Who may reconcile this state: one process per state dir (an exclusive ``flock``).

``StateDirLock`` is held for the life of the daemon (and by a foreground ``sync``); a second
process gets ``AlreadyRunning`` naming the holder's pid. The state dir (and missing parents) is
created 0700 and the lock file 0600, whatever the umask. (With a shared PostgreSQL store,
per-environment leases take this role.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO

from reconciler.support import files


class AlreadyRunning(RuntimeError):
    """Another daemon (or a foreground sync) holds the state dir's lock."""


class StateDirLock:
    """An exclusive ``flock`` on the state dir, held for the life of the process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        files.private_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        with contextlib.suppress(OSError):  # another owner's file: leave its mode alone
            os.fchmod(fd, 0o600)
        handle = os.fdopen(fd, "r+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise AlreadyRunning(
                f"{self.path.parent} is in use by another reconciler (pid {holder})"
            ) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> StateDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
