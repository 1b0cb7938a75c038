"""Where the CLI finds the running daemon: ``state_dir/daemon.json`` (pid, URL, start time).

Written atomically and 0600 (whatever the umask) by the daemon once its API listens, removed
when it stops (only if it is still ours). The URL is one a local client can use (an unspecified
listen address is written as loopback). Read by ``report.client``, which trusts it only when
it and the state dir are the user's own and writable by nobody else.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def write(path: Path, url: str, started_at: float) -> None:
    data = {"pid": os.getpid(), "url": url, "started_at": started_at}
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(data) + "\n")
    os.replace(tmp, path)


def remove(path: Path) -> None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass
