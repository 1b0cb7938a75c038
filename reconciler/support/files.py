"""Private files and directories: what reconciler creates under its state dir is 0700/0600,
whatever the umask.

``private_dir(path)`` creates ``path`` and every missing parent 0700 (an existing directory is
left as it is) and returns it. ``private_file(path)`` creates the file 0600 when it is missing
(an existing one is left as it is). ``exclusive_lock(path)`` holds an ``flock`` on ``path``
(created 0600, never deleted) for the ``with`` block, across threads and processes.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["exclusive_lock", "private_dir", "private_file"]


def private_dir(path: Path) -> Path:
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue
        directory.chmod(0o700)  # mkdir's mode is masked by the umask
    return path


def private_file(path: Path) -> Path:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    try:
        os.fchmod(fd, 0o600)  # the mode of os.open is masked by the umask
    finally:
        os.close(fd)
    return path


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
