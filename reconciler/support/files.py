"""Private files and directories: what reconciler creates under its state dir is 0700/0600,
whatever the umask.

``private_dir(path)`` creates ``path`` and every missing parent 0700 (an existing directory is
left as it is) and returns it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["private_dir"]


def private_dir(path: Path) -> Path:
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue
        directory.chmod(0o700)  # mkdir's mode is masked by the umask
    return path
