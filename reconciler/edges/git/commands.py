"""Git commands that talk to the remote (clone, fetch, push), each under a hard time limit.

Contract:

* ``run(args, cwd=, timeout=, env=, auth=)`` runs ``git <args>`` and returns its stdout. stdin
  is ``/dev/null``, ``GIT_TERMINAL_PROMPT=0`` and a session of its own (no controlling
  terminal): git never waits for a human to type a password or accept a host key. ``auth``
  (``auth.GitAuth``) adds the credential helper / ssh command and the descriptors git inherits.
* A non-zero exit raises ``GitFailure`` (its ``stdout``/``stderr`` as git printed them, NOT
  redacted: callers redact before the text goes anywhere).
* At ``timeout`` seconds the whole process group is killed with SIGKILL: git, its transport
  (ssh, git-remote-https) and, for a remote on a local path, the receive-pack/upload-pack on the
  other side with its hooks. ``GitFailure.timed_out`` is then true. Nothing is left running.
* ``clone_args(url, branch, destination)``: how both clones (reader's, writer's) are made.
* ``check_url(url)`` refuses the protocols GitPython refuses (``ext::``...) before any clone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import git

from reconciler.edges.git.auth import GitAuth

__all__ = ["GitFailure", "check_url", "clone_args", "run"]

# After the kill, how long the pipes may take to close (a descendant that left the group).
_REAP_S = 5.0


class GitFailure(Exception):
    """A git command failed or ran out of time."""

    def __init__(
        self, args: Sequence[str], status: int | None, stdout: str, stderr: str, timed_out: bool
    ) -> None:
        self.args_ = tuple(args)
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
        self.timed_out = timed_out
        what = "timed out" if timed_out else f"exited {status}"
        super().__init__(
            f"git {' '.join(self.args_[:1])} {what}: {stderr.strip() or stdout.strip()}"
        )


def check_url(url: str) -> None:
    """Raise ``GitFailure`` for a URL whose protocol could run commands (``ext::``)."""
    try:
        git.Git.check_unsafe_protocols(url)
    except git.UnsafeProtocolError as exc:
        raise GitFailure(("clone",), None, "", str(exc), timed_out=False) from exc


def clone_args(url: str, branch: str, destination: Path) -> list[str]:
    """Arguments of a clone of one branch without a checkout (the callers check out or not)."""
    return ["clone", "--quiet", "--no-checkout", f"--branch={branch}", "--", url, str(destination)]


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def run(
    args: Sequence[str],
    *,
    cwd: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
    auth: GitAuth | None = None,
) -> str:
    """``git <args>`` in ``cwd``; its stdout, or ``GitFailure`` (see the module docstring)."""
    environment = {**os.environ, **(env or {}), "GIT_TERMINAL_PROMPT": "0"}
    if auth is not None:
        environment = auth.environment(environment)
    process = subprocess.Popen(
        ["git", *args],
        cwd=cwd,
        env=environment,
        pass_fds=auth.pass_fds if auth is not None else (),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=max(timeout, 0.001))
    except subprocess.TimeoutExpired:
        _kill_group(process.pid)
        try:
            stdout, stderr = process.communicate(timeout=_REAP_S)
        except subprocess.TimeoutExpired:
            for pipe in (process.stdout, process.stderr):
                if pipe is not None:
                    pipe.close()
            process.wait()
            stdout, stderr = "", ""
        raise GitFailure(args, None, stdout, stderr, timed_out=True) from None
    except BaseException:
        _kill_group(process.pid)
        process.wait()
        raise
    if process.returncode != 0:
        raise GitFailure(args, process.returncode, stdout, stderr, timed_out=False)
    return stdout
