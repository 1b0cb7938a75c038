"""What the daemon claims of the machine at start: open files and a private umask.

* ``raise_open_files()`` raises the soft ``RLIMIT_NOFILE`` to the hard limit (systemd's
  ``LimitNOFILE=`` sets both; outside systemd the soft limit is often 1024) and returns the
  new soft limit.
* ``api_connection_budget(wanted, soft)``: how many API connections fit, keeping
  ``RESERVED_FDS`` descriptors for Git, Ansible, SQLite and the rest, and for connections the
  server accepted but has not counted yet (it accepts up to ``report.server.ACCEPT_BACKLOG``
  per turn of its loop, and closes an evicted connection a few turns later); never below 8.
* ``private_umask()``: adds 077 to the umask, so every file the process and its children
  (git, ansible-runner) create is private to its user (0700/0600).
"""

from __future__ import annotations

import os
import resource

__all__ = ["RESERVED_FDS", "api_connection_budget", "private_umask", "raise_open_files"]

#: Descriptors kept for everything but the API's counted connections: 256 for Git, playbook
#: runs, the store and logs, 256 for accepted connections not yet counted or closed.
RESERVED_FDS = 512


def raise_open_files() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    elif hard == resource.RLIM_INFINITY and soft != resource.RLIM_INFINITY:
        soft = max(soft, 65536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        except (ValueError, OSError):
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft


def api_connection_budget(wanted: int, soft_limit: int) -> int:
    if soft_limit == resource.RLIM_INFINITY:
        return wanted
    return max(8, min(wanted, soft_limit - RESERVED_FDS))


def private_umask() -> None:
    current = os.umask(0o077)
    os.umask(current | 0o077)
