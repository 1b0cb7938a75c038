"""The Git source: the only module that talks to Git (through GitPython).

Contract:
* ``fetch()`` clones the remote (URL or local path) into the cache on first use, then fetches the
  tracked branch and returns the ``CommitInfo`` of its tip. Any Git failure becomes
  ``SourceError`` (transient: the caller keeps the last known state and retries later).
* ``snapshot(sha)`` materialises the tree of that exact commit (never a work tree) into
  ``snapshots/<sha>/`` and returns the directory; it is complete or absent, never partial.
* Credentials in URLs never reach logs or errors (``redact``).

Writing (after a rollback, and for ``reconciler rollback``):

* ``revert_rollout(request)`` commits the revert of a failed rollout to the tracked branch and
  pushes it; ``commit_group_versions(...)`` commits an operator's new versions for one group.
  Both return a ``PushResult`` and never raise for Git or remote failures.
* With ``push_enabled=False`` (read-only source) nothing is touched: status ``disabled``.
* Each attempt fetches, resets the private checkout to the fresh ``origin/<branch>`` tip
  (``checkout -f -B``, ``reset --hard``, ``clean -fdx``) and re-applies the change there:
  a true ``git revert`` when ``revert_commits.true_revert_possible`` (falling back to targeted on
  a revert conflict), otherwise a targeted edit of the group's versions that only touches apps
  still at the failed version. Nothing to change (already restored, or someone moved the app to
  another version) is ``noop``.
* Push is a plain push (never forced). A rejected non-fast-forward push (someone pushed
  meanwhile) is retried on the new tip after an exponential, capped backoff, up to
  ``max_attempts``: the change is re-applied, which is the "rebase". If the change cannot be
  re-applied (file or group gone on the new tip) the result is ``conflict`` and nothing is
  pushed; an unreachable or refusing remote is ``error``.
* Author and committer are the configured identity (environment variables on the git command,
  independent of any user's git config); commits are never signed and hooks never run.
* A lock serialises fetches and writes of one ``GitSource`` within the process.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import git

from reconciler.desired.edits import EditError, group_versions, set_group_versions
from reconciler.desired.messages import RevertRequest, revert_message, true_revert_possible

_USERINFO = re.compile(r"(?<=://)[^/@]+@")


def redact(url: str) -> str:
    """Hide credentials in ``https://user:token@host/...`` URLs."""
    return _USERINFO.sub("***@", url)


FETCH_TIMEOUT_S = 120.0


class SourceError(Exception):
    """The Git remote could not be read (transient)."""


class UnsafeTreeError(SourceError):
    """The commit's tree holds links or paths pointing outside the repository (permanent)."""


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    author: str
    author_email: str
    message: str
    committed_at: float

    @property
    def short(self) -> str:
        return self.sha[:12]

    @property
    def subject(self) -> str:
        return self.message.splitlines()[0] if self.message else ""


@dataclass(frozen=True)
class PushResult:
    """Outcome of a write to the tracked branch; ``detail`` never contains credentials."""

    status: str  # "pushed" | "noop" | "conflict" | "disabled" | "error"
    sha: str | None  # the pushed commit
    kind: str  # "revert" | "targeted" | "edit"
    attempts: int
    detail: str


class _Conflict(Exception):
    """The change cannot be applied on the current tip (file gone, unsafe path...)."""


@dataclass(frozen=True)
class _Applied:
    kind: str
    sha: str | None  # None: nothing to change (noop)
    detail: str


_Apply = Callable[[git.Repo, git.Commit, Mapping[str, str]], _Applied]

PUSH_TIMEOUT_S = 120.0
BACKOFF_CAP_S = 5.0


def _info(commit: git.Commit) -> CommitInfo:
    return CommitInfo(
        sha=commit.hexsha,
        author=str(commit.author.name or ""),
        author_email=str(commit.author.email or ""),
        message=str(commit.message).strip(),
        committed_at=float(commit.committed_date),
    )


class GitSource:
    """A tracked branch of a remote repository, mirrored under ``cache_dir``."""

    def __init__(
        self,
        url: str,
        branch: str,
        cache_dir: Path,
        keep_snapshots: int = 5,
        push_enabled: bool = True,
        author_name: str = "reconciler",
        author_email: str = "reconciler@localhost",
    ) -> None:
        self.url = url
        self.branch = branch
        self.cache_dir = cache_dir
        self.checkout_dir = cache_dir / "checkout"
        self.snapshots_dir = cache_dir / "snapshots"
        self.keep_snapshots = keep_snapshots
        self.push_enabled = push_enabled
        self.author_name = author_name
        self.author_email = author_email
        self._lock = threading.RLock()
        # Test hook: called with the attempt number right before each push.
        self._before_push: Callable[[int], None] | None = None

    @property
    def remote_ref(self) -> str:
        return f"refs/remotes/origin/{self.branch}"

    def _error(self, action: str, exc: Exception) -> SourceError:
        detail = getattr(exc, "stderr", "") or str(exc)
        detail = redact(" ".join(str(detail).split()))[:500]
        return SourceError(f"cannot {action} {redact(self.url)} ({self.branch}): {detail}")

    def _repo(self) -> git.Repo:
        if (self.checkout_dir / ".git").is_dir():
            return git.Repo(self.checkout_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix="clone-", dir=self.cache_dir))
        try:
            repo = git.Repo.clone_from(self.url, partial, branch=self.branch, no_checkout=True)
        except (git.GitCommandError, git.GitError) as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise self._error("clone", exc) from exc
        repo.close()
        os.replace(partial, self.checkout_dir)
        return git.Repo(self.checkout_dir)

    def fetch(self) -> CommitInfo:
        """Fetch the tracked branch; return its tip."""
        with self._lock:
            return self._fetch()

    def _fetch(self) -> CommitInfo:
        repo = self._repo()
        try:
            repo.remotes.origin.set_url(self.url)
            repo.remotes.origin.fetch(
                refspec=f"+refs/heads/{self.branch}:{self.remote_ref}",
                prune=False,
                kill_after_timeout=FETCH_TIMEOUT_S,
            )
            return _info(repo.commit(self.remote_ref))
        except (git.GitCommandError, git.GitError, ValueError) as exc:
            raise self._error("fetch", exc) from exc
        finally:
            repo.close()

    def last_fetched(self) -> CommitInfo:
        """The tip as of the last successful fetch (no network)."""
        if not (self.checkout_dir / ".git").is_dir():
            raise SourceError(f"{redact(self.url)} ({self.branch}) was never fetched")
        with self._lock, git.Repo(self.checkout_dir) as repo:
            try:
                return _info(repo.commit(self.remote_ref))
            except (git.GitError, ValueError) as exc:
                raise self._error("read the last fetch of", exc) from exc

    def commit_info(self, sha: str) -> CommitInfo:
        with git.Repo(self.checkout_dir) as repo:
            return _info(repo.commit(sha))

    def changed_paths(self, sha: str) -> tuple[str, ...]:
        """Paths the commit changed relative to its first parent."""
        with git.Repo(self.checkout_dir) as repo:
            commit = repo.commit(sha)
            if not commit.parents:
                return tuple(sorted(str(p) for p in commit.stats.files))
            diff = commit.parents[0].diff(commit)
            return tuple(sorted({d.a_path or d.b_path for d in diff} - {None}))

    def snapshot(self, sha: str) -> Path:
        """The tree of commit ``sha`` as a read-only directory."""
        target = self.snapshots_dir / sha
        if (target / ".reconciler-snapshot").is_file():
            return target
        self.snapshots_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=self.snapshots_dir))
        try:
            archive = work / "tree.tar"
            with git.Repo(self.checkout_dir) as repo, archive.open("wb") as handle:
                repo.archive(handle, treeish=sha, format="tar")
            tree = work / "tree"
            with tarfile.open(archive) as tar:
                try:
                    tar.extractall(tree, filter="data")
                except tarfile.FilterError as exc:
                    raise UnsafeTreeError(
                        f"commit {sha[:12]} is unsafe: {exc} (links and paths must stay inside "
                        "the repository)"
                    ) from exc
            (tree / ".reconciler-snapshot").write_text(sha + "\n")
            if target.exists():
                shutil.rmtree(target)
            os.replace(tree, target)
        except (git.GitCommandError, git.GitError, tarfile.TarError, OSError) as exc:
            raise self._error(f"read commit {sha[:12]} of", exc) from exc
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return target

    def prune_snapshots(self, keep: set[str]) -> None:
        """Delete old snapshots, keeping the newest few and every sha in ``keep``."""
        if not self.snapshots_dir.is_dir():
            return
        snapshots = sorted(
            (p for p in self.snapshots_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        for old in snapshots[self.keep_snapshots :]:
            if old.name not in keep:
                shutil.rmtree(old, ignore_errors=True)

    # -- writing -------------------------------------------------------------------------------

    def _git_env(self) -> dict[str, str]:
        """Identity and safety settings for commands that write (no user git config needed)."""
        return {
            "GIT_AUTHOR_NAME": self.author_name,
            "GIT_AUTHOR_EMAIL": self.author_email,
            "GIT_COMMITTER_NAME": self.author_name,
            "GIT_COMMITTER_EMAIL": self.author_email,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "commit.gpgsign",
            "GIT_CONFIG_VALUE_0": "false",
        }

    def _reset_worktree(self, repo: git.Repo, env: Mapping[str, str]) -> None:
        """The private checkout, clean, at the fetched tip of the tracked branch."""
        for operation in ("revert", "cherry-pick"):
            with contextlib.suppress(git.GitCommandError):
                getattr(repo.git, operation.replace("-", "_"))("--quit", env=env)
        repo.git.checkout("-f", "--no-track", "-B", self.branch, self.remote_ref, env=env)
        repo.git.reset("--hard", self.remote_ref, env=env)
        repo.git.clean("-fdx", env=env)

    @staticmethod
    def _text(commit: git.Commit, path: str) -> str | None:
        """The file's text in the commit, or None when it is not a file there."""
        try:
            blob = commit.tree / path
        except KeyError:
            return None
        if blob.type != "blob":
            return None
        try:
            return blob.data_stream.read().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Conflict(f"{path} is not UTF-8 text") from exc

    def _worktree_file(self, path: str) -> Path:
        parts = PurePosixPath(path).parts
        if not parts or PurePosixPath(path).is_absolute() or ".." in parts:
            raise _Conflict(f"path {path!r} must be relative and stay inside the repository")
        return self.checkout_dir.joinpath(*parts)

    def _commit(self, repo: git.Repo, message: str, env: Mapping[str, str]) -> str:
        repo.git.commit("--no-verify", "--cleanup=whitespace", "-m", message, env=env)
        return repo.head.commit.hexsha

    def _write_and_commit(
        self, repo: git.Repo, path: str, text: str, message: str, env: Mapping[str, str]
    ) -> str:
        target = self._worktree_file(path)
        target.write_bytes(text.encode("utf-8"))
        repo.git.add("--", path, env=env)
        return self._commit(repo, message, env)

    def _push(self, repo: git.Repo, env: Mapping[str, str]) -> str | None:
        """Plain push of HEAD; None when pushed, else why it was rejected as non-fast-forward."""
        try:
            repo.git.push(
                "--porcelain",
                "--no-verify",
                "origin",
                f"HEAD:refs/heads/{self.branch}",
                env=env,
                kill_after_timeout=PUSH_TIMEOUT_S,
            )
        except git.GitCommandError as exc:
            output = f"{exc.stdout or ''}\n{exc.stderr or ''}"
            if "[rejected]" in output:
                return redact(" ".join(output.replace("stdout:", "").split()))[:300]
            raise
        return None

    def _push_change(
        self, kind: str, apply: _Apply, max_attempts: int, backoff_s: float
    ) -> PushResult:
        if not self.push_enabled:
            return PushResult(
                "disabled",
                None,
                kind,
                0,
                "pushing is disabled (read-only source): the commit is pending a human",
            )
        env = self._git_env()
        attempts = max(1, max_attempts)
        rejected = ""
        with self._lock:
            for attempt in range(1, attempts + 1):
                if attempt > 1:
                    delay = min(backoff_s * 2 ** (attempt - 2), BACKOFF_CAP_S)
                    time.sleep(delay * random.uniform(0.5, 1.0))
                try:
                    self._fetch()
                except SourceError as exc:
                    return PushResult("error", None, kind, attempt, str(exc))
                try:
                    with git.Repo(self.checkout_dir) as repo:
                        self._reset_worktree(repo, env)
                        tip = repo.commit(self.remote_ref)
                        try:
                            applied = apply(repo, tip, env)
                        except (EditError, _Conflict) as exc:
                            self._reset_worktree(repo, env)
                            return PushResult(
                                "conflict",
                                None,
                                kind,
                                attempt,
                                f"cannot apply the change on {tip.hexsha[:12]}: {exc}; "
                                "Git left alone",
                            )
                        kind = applied.kind
                        if applied.sha is None:
                            return PushResult("noop", None, kind, attempt, applied.detail)
                        if self._before_push is not None:
                            self._before_push(attempt)
                        rejection = self._push(repo, env)
                        if rejection is None:
                            return PushResult(
                                "pushed",
                                applied.sha,
                                kind,
                                attempt,
                                f"{applied.detail}; pushed {applied.sha[:12]} to "
                                f"{redact(self.url)} ({self.branch})",
                            )
                        rejected = rejection
                        self._reset_worktree(repo, env)
                except (git.GitCommandError, git.GitError, ValueError, OSError) as exc:
                    self._discard_local_commits(env)
                    return PushResult(
                        "error", None, kind, attempt, str(self._error("push to", exc))
                    )
        return PushResult(
            "conflict",
            None,
            kind,
            attempts,
            f"push to {redact(self.url)} ({self.branch}) still rejected after {attempts} "
            f"attempts: {rejected}; Git left alone",
        )

    def _discard_local_commits(self, env: Mapping[str, str]) -> None:
        try:
            with git.Repo(self.checkout_dir) as repo:
                self._reset_worktree(repo, env)
        except (git.GitCommandError, git.GitError, ValueError, OSError):
            pass

    def revert_rollout(
        self, request: RevertRequest, *, max_attempts: int = 5, backoff_s: float = 0.2
    ) -> PushResult:
        """Commit and push the revert of a failed rollout (see the module docstring)."""

        def apply(repo: git.Repo, tip: git.Commit, env: Mapping[str, str]) -> _Applied:
            text = self._text(tip, request.env_file)
            if text is None:
                raise _Conflict(f"{request.env_file} is not in the tip")
            current = group_versions(text, request.group)
            restore = dict(request.restore_versions)
            if all(current.get(app) == version for app, version in restore.items()):
                return _Applied(
                    "revert",
                    None,
                    f"{request.environment}/{request.group} already at "
                    f"{_pairs(restore)} on {tip.hexsha[:12]}: nothing to revert",
                )
            reverted = self._true_revert(repo, tip, request, env)
            if reverted is not None:
                return reverted
            failed = request.failed_versions
            pending = {
                app: version
                for app, version in restore.items()
                if app in failed and current.get(app) == failed[app]
            }
            if not pending:
                moved = {app: current.get(app, "(removed)") for app in restore}
                return _Applied(
                    "targeted",
                    None,
                    f"{request.environment}/{request.group} changed on {tip.hexsha[:12]} "
                    f"since the failed rollout ({_pairs(moved)}): left as is",
                )
            new_text = set_group_versions(text, request.group, pending)
            sha = self._write_and_commit(
                repo, request.env_file, new_text, revert_message(request, "targeted"), env
            )
            return _Applied(
                "targeted",
                sha,
                f"restored {request.environment}/{request.group} to {_pairs(pending)}",
            )

        return self._push_change("revert", apply, max_attempts, backoff_s)

    def _true_revert(
        self, repo: git.Repo, tip: git.Commit, request: RevertRequest, env: Mapping[str, str]
    ) -> _Applied | None:
        """``git revert`` of the offending commit when that is exactly the change; else None."""
        try:
            offending = repo.commit(request.offending_sha)
        except (git.BadName, ValueError):
            return None
        if not offending.parents or not repo.is_ancestor(offending, tip):
            return None
        parent = offending.parents[0]
        paths = self.changed_paths(offending.hexsha)
        if not true_revert_possible(
            request,
            paths,
            self._text(parent, request.env_file),
            self._text(offending, request.env_file),
        ):
            return None
        mainline = ["-m", "1"] if len(offending.parents) > 1 else []
        try:
            repo.git.revert("--no-commit", *mainline, offending.hexsha, env=env)
        except git.GitCommandError:
            with contextlib.suppress(git.GitCommandError):
                repo.git.revert("--abort", env=env)
            self._reset_worktree(repo, env)
            return None
        text = self._worktree_file(request.env_file).read_text(encoding="utf-8")
        try:
            restored = group_versions(text, request.group)
        except EditError:
            restored = {}
        if any(restored.get(a) != v for a, v in request.restore_versions.items()):
            self._reset_worktree(repo, env)
            return None
        sha = self._commit(repo, revert_message(request, "revert"), env)
        return _Applied(
            "revert",
            sha,
            f"reverted {offending.hexsha[:12]} ({request.environment}/{request.group} back to "
            f"{_pairs(request.restore_versions)})",
        )

    def commit_group_versions(
        self,
        *,
        env_file: str,
        group: str,
        versions: Mapping[str, str],
        message: str,
        max_attempts: int = 5,
        backoff_s: float = 0.2,
    ) -> PushResult:
        """Set ``groups.<group>.apps`` versions in ``env_file`` on the branch tip and push."""

        def apply(repo: git.Repo, tip: git.Commit, env: Mapping[str, str]) -> _Applied:
            text = self._text(tip, env_file)
            if text is None:
                raise _Conflict(f"{env_file} is not in the tip")
            current = group_versions(text, group)
            if all(current.get(app) == version for app, version in versions.items()):
                return _Applied(
                    "edit", None, f"{group} already at {_pairs(versions)} on {tip.hexsha[:12]}"
                )
            new_text = set_group_versions(text, group, versions)
            sha = self._write_and_commit(repo, env_file, new_text, message, env)
            return _Applied("edit", sha, f"set {group} in {env_file} to {_pairs(versions)}")

        return self._push_change("edit", apply, max_attempts, backoff_s)

    def introducing_commit(
        self, env_file: str, group: str, failed: Mapping[str, str], commit: str, limit: int = 500
    ) -> str:
        """The newest first-parent commit up to ``commit`` that set the group to ``failed``.

        Walks back the commits that changed ``env_file`` while the group's apps still hold the
        failed versions; the oldest of that run introduced them. Falls back to ``commit``.
        """
        if not failed:
            return commit
        try:
            with self._lock, git.Repo(self.checkout_dir) as repo:
                found = commit
                for candidate in repo.iter_commits(
                    commit, paths=env_file, first_parent=True, max_count=limit
                ):
                    text = self._text(candidate, env_file)
                    if text is None:
                        break
                    try:
                        versions = group_versions(text, group)
                    except EditError:
                        break
                    if any(versions.get(app) != v for app, v in failed.items()):
                        break
                    found = candidate.hexsha
                return found
        except (git.GitCommandError, git.GitError, ValueError, OSError, _Conflict):
            return commit


def _pairs(versions: Mapping[str, str]) -> str:
    return ", ".join(f"{app} {version}" for app, version in sorted(versions.items())) or "-"
