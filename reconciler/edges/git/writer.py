"""Write-back to the tracked branch: revert commits and operator rollbacks (``GitWriter``).

Contract:

* ``revert_rollout(request)`` commits the revert of a failed rollout and pushes it;
  ``request.offending_sha`` is the commit that was in force, and the writer itself walks back to
  the commit that introduced the failed versions (``changes.revert``). ``commit_group_versions``
  commits an operator's new versions for one group. Both return a ``PushResult`` and never
  raise for Git or remote failures.
* With ``push_enabled=False`` (read-only source) nothing is touched: status ``disabled``.
* The writer works on ITS OWN clone (``cache_dir/writer``) under its own lock (a thread lock and
  an ``flock`` on ``cache_dir/writer.lock``): a write never waits for the reader's fetch, and a
  fetch never waits for a write.
* Each attempt fetches, resets the private checkout to the fresh ``origin/<branch>`` tip and
  re-applies the change there (``changes``): the true ``git revert`` or the targeted commit, with
  the ``Reverts: <sha>`` trailer. Nothing to change is ``noop``.
* Push is a plain push (never forced). A push rejected because the branch moved (a
  non-fast-forward, or another push updated the ref while ours waited in the remote's hooks:
  "cannot lock ref") is retried on the new tip after a ``support.backoff`` wait, up to
  ``max_attempts``: the change is re-applied, which is the "rebase". If the change cannot be
  re-applied (file or group gone on the new tip) the result is ``conflict`` and nothing is
  pushed; an unreachable or refusing remote is ``error``. The waits end early when ``cancel``
  is set (shutdown): ``error``.
* A write has an overall deadline (``deadline_s``, default ``DEFAULT_DEADLINE_S``), the lock
  wait included: every clone/fetch/push is killed with its process group when the deadline (or
  its own timeout) passes, and the write returns ``error`` saying so. A stalled remote thus
  holds a rollout's revert for at most ``deadline_s`` plus a few seconds of cleanup.
* Author and committer are the configured identity (environment variables on the git command,
  independent of any user's git config); commits are never signed and hooks never run
  (``--no-verify`` and ``core.hooksPath=/dev/null``).
* ``detail`` never contains credentials (``support.redaction``); the clone's remote URL is
  ``auth.url`` (no userinfo) and git authenticates through ``auth`` (``edges.git.auth``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import git

from reconciler.desired.edits import EditError
from reconciler.desired.messages import RevertRequest
from reconciler.edges.git import PushResult, changes, commands
from reconciler.edges.git.auth import GitAuth
from reconciler.edges.git.locking import ExclusiveLock, LockTimeout
from reconciler.states import ChangeKind, PushStatus
from reconciler.support import backoff, files
from reconciler.support.redaction import redact

__all__ = ["DEFAULT_BACKOFF", "DEFAULT_DEADLINE_S", "WriteBack"]

DEFAULT_DEADLINE_S = 180.0
#: What git says when the branch moved under a push (retry on the new tip).
_MOVED_MARKERS = ("[rejected]", "cannot lock ref", "failed to update ref", "failed to lock")
DEFAULT_BACKOFF = backoff.Backoff(base=0.2, cap=5.0, jitter=0.5)
FETCH_TIMEOUT_S = 120.0
PUSH_TIMEOUT_S = 120.0

_GIT_ERRORS = (git.GitCommandError, git.GitError, git.BadName, ValueError, OSError)


class _Expired(Exception):
    """The write's deadline passed before or during ``action``."""

    def __init__(self, action: str) -> None:
        super().__init__(action)
        self.action = action


class _Failed(Exception):
    """``action`` failed: ``failure`` is the git error (not redacted yet)."""

    def __init__(self, action: str, failure: BaseException) -> None:
        super().__init__(action)
        self.action = action
        self.failure = failure


class WriteBack:
    """Commits pushed to the tracked branch, from a private clone under ``cache_dir/writer``."""

    def __init__(
        self,
        url: str,
        branch: str,
        cache_dir: Path,
        *,
        push_enabled: bool = True,
        author_name: str = "reconciler",
        author_email: str = "reconciler@localhost",
        deadline_s: float = DEFAULT_DEADLINE_S,
        max_attempts: int = 5,
        retry: backoff.Backoff = DEFAULT_BACKOFF,
        cancel: threading.Event | None = None,
        auth: GitAuth | None = None,
    ) -> None:
        self.auth = auth if auth is not None else GitAuth(url)
        self.url = self.auth.url  # never with credentials: this is what .git/config holds
        self.branch = branch
        self.cache_dir = cache_dir
        self.checkout_dir = cache_dir / "writer"
        self.push_enabled = push_enabled
        self.author_name = author_name
        self.author_email = author_email
        self.deadline_s = deadline_s
        self.max_attempts = max(1, max_attempts)
        self.retry = retry
        self.cancel = cancel if cancel is not None else threading.Event()
        self._lock = ExclusiveLock(cache_dir / "writer.lock")
        # Test hook: called with the attempt number right before each push.
        self._before_push: Callable[[int], None] | None = None

    @property
    def remote_ref(self) -> str:
        return f"refs/remotes/origin/{self.branch}"

    @property
    def _where(self) -> str:
        return f"{redact(self.url)} ({self.branch})"

    # -- the two writes --------------------------------------------------------------------

    def revert_rollout(self, request: RevertRequest) -> PushResult:
        """Commit and push the revert of a failed rollout (see the module docstring)."""
        return self._write(ChangeKind.REVERT, changes.revert(request, self.branch))

    def commit_group_versions(
        self, *, env_file: str, group: str, versions: Mapping[str, str], message: str
    ) -> PushResult:
        """Set ``groups.<group>.apps`` versions in ``env_file`` on the branch tip and push."""
        return self._write(ChangeKind.EDIT, changes.group_edit(env_file, group, versions, message))

    # -- the attempts ----------------------------------------------------------------------

    def _write(self, kind: ChangeKind, apply: changes.Apply) -> PushResult:
        if not self.push_enabled:
            return _result(
                PushStatus.DISABLED,
                kind,
                0,
                "pushing is disabled (read-only source): the commit is pending a human",
            )
        deadline = time.monotonic() + self.deadline_s
        try:
            with self._lock.hold(timeout=self.deadline_s, cancel=self.cancel):
                return self._attempts(kind, apply, deadline)
        except LockTimeout:
            if self.cancel.is_set():
                return _result(PushStatus.ERROR, kind, 0, "interrupted (shutting down)")
            return self._expired(kind, 0, "waiting for another write to")

    def _attempts(self, kind: ChangeKind, apply: changes.Apply, deadline: float) -> PushResult:
        rejected = ""
        waits = self.retry.waits()
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1:
                wait = next(waits)
                if wait >= deadline - time.monotonic():
                    return self._expired(
                        kind, attempt - 1, "retrying the rejected push to", f": {rejected}"
                    )
                if not backoff.sleep(wait, self.cancel):
                    return _result(
                        PushStatus.ERROR,
                        kind,
                        attempt - 1,
                        f"interrupted (shutting down) before retrying the push to {self._where}: "
                        f"{rejected}",
                    )
            outcome = self._attempt(kind, apply, attempt, deadline)
            if isinstance(outcome, PushResult):
                return outcome
            kind, rejected = outcome
        return _result(
            PushStatus.CONFLICT,
            kind,
            self.max_attempts,
            f"push to {self._where} still rejected after {self.max_attempts} attempts: "
            f"{rejected}; Git left alone",
        )

    def _attempt(
        self, kind: ChangeKind, apply: changes.Apply, attempt: int, deadline: float
    ) -> PushResult | tuple[ChangeKind, str]:
        """One fetch-apply-push; the result, or (kind, why the push was rejected)."""
        env = self._git_env()
        try:
            self._sync(deadline)
        except _Expired as exc:
            return self._expired(kind, attempt, exc.action)
        except _Failed as exc:
            return _result(PushStatus.ERROR, kind, attempt, self._error(exc.action, exc.failure))
        try:
            with git.Repo(self.checkout_dir) as repo:
                changes.reset_worktree(repo, self.branch, env)
                tip = repo.commit(self.remote_ref)
                try:
                    applied = apply(repo, tip, env)
                except (EditError, changes.Conflict) as exc:
                    changes.reset_worktree(repo, self.branch, env)
                    return _result(
                        PushStatus.CONFLICT,
                        kind,
                        attempt,
                        f"cannot apply the change on {tip.hexsha[:12]}: {exc}; Git left alone",
                    )
                if applied.sha is None:
                    return _result(PushStatus.NOOP, applied.kind, attempt, applied.detail)
                if self._before_push is not None:
                    self._before_push(attempt)
                rejection = self._push(deadline)
                if rejection is not None:
                    changes.reset_worktree(repo, self.branch, env)
                    return applied.kind, rejection
                return _result(
                    PushStatus.PUSHED,
                    applied.kind,
                    attempt,
                    f"{applied.detail}; pushed {applied.sha[:12]} to {self._where}",
                    sha=applied.sha,
                )
        except _Expired as exc:
            self._discard_local_commits(env)
            return self._expired(kind, attempt, exc.action)
        except _Failed as exc:
            self._discard_local_commits(env)
            return _result(PushStatus.ERROR, kind, attempt, self._error(exc.action, exc.failure))
        except _GIT_ERRORS as exc:
            self._discard_local_commits(env)
            return _result(PushStatus.ERROR, kind, attempt, self._error("push to", exc))

    # -- git -------------------------------------------------------------------------------

    def _git_env(self) -> dict[str, str]:
        """Identity and safety settings for commands that write (no user git config needed)."""
        return {
            "GIT_AUTHOR_NAME": self.author_name,
            "GIT_AUTHOR_EMAIL": self.author_email,
            "GIT_COMMITTER_NAME": self.author_name,
            "GIT_COMMITTER_EMAIL": self.author_email,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_COUNT": "2",
            "GIT_CONFIG_KEY_0": "commit.gpgsign",
            "GIT_CONFIG_VALUE_0": "false",
            "GIT_CONFIG_KEY_1": "core.hooksPath",
            "GIT_CONFIG_VALUE_1": os.devnull,
        }

    def _network(
        self, action: str, args: list[str], cwd: Path, timeout: float, deadline: float
    ) -> str:
        """A git command that talks to the remote, killed at its timeout or at the deadline."""
        limit = min(timeout, deadline - time.monotonic())
        if limit <= 0:
            raise _Expired(action)
        try:
            return commands.run(args, cwd=cwd, timeout=limit, env=self._git_env(), auth=self.auth)
        except commands.GitFailure as exc:
            if exc.timed_out and limit < timeout:
                raise _Expired(action) from exc
            raise _Failed(action, exc) from exc

    def _sync(self, deadline: float) -> None:
        """Clone on first use, else fetch: ``refs/remotes/origin/<branch>`` is the remote tip."""
        if not (self.checkout_dir / ".git").is_dir():
            try:
                commands.check_url(self.url)
            except commands.GitFailure as exc:
                raise _Failed("clone", exc) from exc
            files.private_dir(self.cache_dir)
            partial = Path(tempfile.mkdtemp(prefix=".writer-clone-", dir=self.cache_dir))
            try:
                self._network(
                    "clone",
                    commands.clone_args(self.url, self.branch, partial),
                    self.cache_dir,
                    FETCH_TIMEOUT_S,
                    deadline,
                )
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
            os.replace(partial, self.checkout_dir)
        try:
            with git.Repo(self.checkout_dir) as repo:
                if repo.remotes.origin.url != self.url:
                    repo.remotes.origin.set_url(self.url)
        except _GIT_ERRORS as exc:
            raise _Failed("fetch", exc) from exc
        self._network(
            "fetch",
            ["fetch", "--quiet", "--", "origin", f"+refs/heads/{self.branch}:{self.remote_ref}"],
            self.checkout_dir,
            FETCH_TIMEOUT_S,
            deadline,
        )

    def _push(self, deadline: float) -> str | None:
        """Plain push of HEAD; None when pushed, else why it was rejected because the branch
        moved meanwhile (non-fast-forward, or another push updated it while ours waited in the
        remote's hooks): retried on the new tip. Any other refusal raises."""
        try:
            self._network(
                "push to",
                ["push", "--porcelain", "--no-verify", "origin", f"HEAD:refs/heads/{self.branch}"],
                self.checkout_dir,
                PUSH_TIMEOUT_S,
                deadline,
            )
        except _Failed as exc:
            failure = exc.failure
            if isinstance(failure, commands.GitFailure) and not failure.timed_out:
                output = f"{failure.stdout}\n{failure.stderr}"
                if any(marker in output for marker in _MOVED_MARKERS):
                    return redact(" ".join(output.split()))[:300]
            raise
        return None

    def _discard_local_commits(self, env: Mapping[str, str]) -> None:
        try:
            with git.Repo(self.checkout_dir) as repo:
                changes.reset_worktree(repo, self.branch, env)
        except _GIT_ERRORS:
            pass

    # -- results ---------------------------------------------------------------------------

    def _error(self, action: str, exc: BaseException) -> str:
        detail = getattr(exc, "stderr", "") or str(exc)
        if getattr(exc, "timed_out", False):
            detail = f"no answer within its own time limit; {detail}"
        detail = redact(" ".join(str(detail).split()))[:500]
        return f"cannot {action} {self._where}: {detail}"

    def _expired(self, kind: ChangeKind, attempts: int, action: str, extra: str = "") -> PushResult:
        landed = (
            " and was killed: whether it landed shows at the next fetch"
            if action == "push to"
            else "; Git left alone"
        )
        return _result(
            PushStatus.ERROR,
            kind,
            attempts,
            f"gave up at the write deadline ({self.deadline_s:g} s): {action} {self._where} "
            f"did not finish in time{landed}{extra}",
        )


def _result(
    status: PushStatus, kind: ChangeKind, attempts: int, detail: str, *, sha: str | None = None
) -> PushResult:
    return PushResult(status=status, kind=kind, sha=sha, attempts=attempts, detail=redact(detail))
