"""Reading the Git source: clone, fetch, commits and exact-commit snapshots (``GitReader``).

Contract:

* ``fetch()`` clones the remote (URL or local path) into ``cache_dir/checkout`` on first use,
  then fetches the tracked branch and returns the ``CommitInfo`` of its tip. Any Git failure
  becomes ``SourceError`` (transient: the caller keeps the last known state and retries later).
  A fetch (or the first clone) takes at most ``FETCH_TIMEOUT_S`` in all, waiting for another
  process's fetch included: git is killed with every process it started when time is up.
* ``snapshot(sha)`` materialises the tree of that exact commit (never a work tree) into
  ``snapshots/<sha>/`` and returns the directory; it is complete or absent, never partial. A tree
  with links or paths escaping the repository raises ``UnsafeTreeError`` (permanent), and so,
  checked from the tree listing before anything is written, does a tree with a path component
  ``.git`` (any case, NTFS aliases too: ``x/.git/config`` would be a repository inside the
  snapshot, which ``git archive`` refuses) or whose files add up to more than
  ``max_tree_bytes`` (``limits.max_repository_bytes``). Like everything under the cache, its
  files are private (0600, 0700 if executable).
* ``last_fetched()``, ``commit_info()`` and ``changed_paths()`` read the mirror, no network.
* Several processes may share one ``cache_dir`` (the daemon and ``reconciler diff``...): clone,
  fetch and snapshot creation hold an exclusive ``flock`` on ``cache_dir/reader.lock`` (and a
  thread lock), so concurrent fetches queue instead of failing on git's ref locks.
* This module never writes to the remote: write-back lives in ``writer`` on its own clone and
  lock, so a stalled push never delays a fetch.
* Credentials never reach errors (``support.redaction``), argv or ``.git/config``: the remote
  URL is ``auth.url`` (userinfo taken out); git authenticates through ``auth`` (``edges.git.auth``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import git

from reconciler.edges.git import CommitInfo, SourceError, UnsafeTreeError, commands, commits
from reconciler.edges.git.auth import GitAuth
from reconciler.edges.git.locking import ExclusiveLock, LockTimeout
from reconciler.support import files
from reconciler.support.redaction import redact

__all__ = ["FETCH_TIMEOUT_S", "GitSource"]

FETCH_TIMEOUT_S = 120.0

_READ_ERRORS = (git.GitError, git.BadName, git.BadObject, ValueError, OSError)


def _private_data(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
    """tarfile's ``data`` filter (nothing escapes the tree), and private modes: 0700/0600."""
    safe = tarfile.data_filter(member, path)
    return safe.replace(mode=(safe.mode or 0) & 0o700, deep=False)


class GitSource:
    """A tracked branch of a remote repository, mirrored under ``cache_dir`` (read-only)."""

    def __init__(
        self,
        url: str,
        branch: str,
        cache_dir: Path,
        keep_snapshots: int = 5,
        *,
        auth: GitAuth | None = None,
        max_tree_bytes: int | None = None,
    ) -> None:
        self.auth = auth if auth is not None else GitAuth(url)
        self.url = self.auth.url  # never with credentials: this is what .git/config holds
        self.max_tree_bytes = max_tree_bytes
        self.branch = branch
        self.cache_dir = cache_dir
        self.checkout_dir = cache_dir / "checkout"
        self.snapshots_dir = cache_dir / "snapshots"
        self.keep_snapshots = keep_snapshots
        self._lock = ExclusiveLock(cache_dir / "reader.lock")

    @property
    def remote_ref(self) -> str:
        return f"refs/remotes/origin/{self.branch}"

    def _error(self, action: str, exc: BaseException | str) -> SourceError:
        detail = getattr(exc, "stderr", "") or str(exc)
        if getattr(exc, "timed_out", False):
            detail = f"no answer within {FETCH_TIMEOUT_S:g} s; {detail}"
        detail = redact(" ".join(str(detail).split()))[:500]
        return SourceError(f"cannot {action} {redact(self.url)} ({self.branch}): {detail}")

    def _clone(self, timeout: float) -> None:
        """Clone into ``checkout`` unless it is there (the caller holds the lock)."""
        if (self.checkout_dir / ".git").is_dir():
            return
        files.private_dir(self.cache_dir)
        partial = Path(tempfile.mkdtemp(prefix="clone-", dir=self.cache_dir))
        try:
            commands.check_url(self.url)
            commands.run(
                commands.clone_args(self.url, self.branch, partial),
                cwd=self.cache_dir,
                timeout=timeout,
                auth=self.auth,
            )
        except commands.GitFailure as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise self._error("clone", exc) from exc
        os.replace(partial, self.checkout_dir)

    @contextlib.contextmanager
    def _locked(self, action: str) -> Iterator[Callable[[], float]]:
        """Hold the cache's lock; yields the seconds left of ``FETCH_TIMEOUT_S`` (wait included).

        The daemon's main loop fetches: waiting for another process's fetch must not add up to
        more than one fetch's time, or the systemd watchdog would take a busy cache for a hang.
        """
        deadline = time.monotonic() + FETCH_TIMEOUT_S
        try:
            with self._lock.hold(timeout=FETCH_TIMEOUT_S):
                yield lambda: deadline - time.monotonic()
        except LockTimeout as exc:
            raise self._error(
                action,
                f"the cache {self.cache_dir} stayed locked by another "
                f"process for {FETCH_TIMEOUT_S:g} s",
            ) from exc

    def fetch(self) -> CommitInfo:
        """Fetch the tracked branch; return its tip."""
        with self._locked("fetch") as remaining:
            self._clone(remaining())
            try:
                with git.Repo(self.checkout_dir) as repo:
                    if repo.remotes.origin.url != self.url:
                        repo.remotes.origin.set_url(self.url)
                commands.run(
                    [
                        "fetch",
                        "--quiet",
                        "--",
                        "origin",
                        f"+refs/heads/{self.branch}:{self.remote_ref}",
                    ],
                    cwd=self.checkout_dir,
                    timeout=remaining(),
                    auth=self.auth,
                )
                with git.Repo(self.checkout_dir) as repo:
                    return commits.info(repo.commit(self.remote_ref))
            except (commands.GitFailure, *_READ_ERRORS) as exc:
                raise self._error("fetch", exc) from exc

    def last_fetched(self) -> CommitInfo:
        """The tip as of the last successful fetch (no network)."""
        if not (self.checkout_dir / ".git").is_dir():
            raise SourceError(f"{redact(self.url)} ({self.branch}) was never fetched")
        try:
            with git.Repo(self.checkout_dir) as repo:
                return commits.info(repo.commit(self.remote_ref))
        except _READ_ERRORS as exc:
            raise self._error("read the last fetch of", exc) from exc

    def commit_info(self, sha: str) -> CommitInfo:
        try:
            with git.Repo(self.checkout_dir) as repo:
                return commits.info(repo.commit(sha))
        except _READ_ERRORS as exc:
            raise self._error(f"read commit {sha[:12]} of", exc) from exc

    def changed_paths(self, sha: str) -> tuple[str, ...]:
        """Paths the commit changed relative to its first parent."""
        try:
            with git.Repo(self.checkout_dir) as repo:
                return commits.changed_paths(repo.commit(sha))
        except _READ_ERRORS as exc:
            raise self._error(f"read commit {sha[:12]} of", exc) from exc

    def snapshot(self, sha: str) -> Path:
        """The tree of commit ``sha`` as a read-only directory."""
        target = self.snapshots_dir / sha
        if (target / ".reconciler-snapshot").is_file():
            return target
        with self._locked(f"read commit {sha[:12]} of"):
            if (target / ".reconciler-snapshot").is_file():  # another process made it meanwhile
                return target
            self._extract(sha, target)
        return target

    def _extract(self, sha: str, target: Path) -> None:
        files.private_dir(self.snapshots_dir)
        work = Path(tempfile.mkdtemp(prefix=f".{sha[:12]}-", dir=self.snapshots_dir))
        try:
            archive = work / "tree.tar"
            with git.Repo(self.checkout_dir) as repo:
                listing = repo.git.ls_tree(
                    "-r", "-l", "-z", "--full-tree", sha, stdout_as_string=False
                )
                self._check_tree(sha, bytes(listing).decode("utf-8", "surrogateescape"))
                with archive.open("wb") as handle:
                    repo.archive(handle, treeish=sha, format="tar")
            tree = work / "tree"
            with tarfile.open(archive) as tar:
                try:
                    tar.extractall(tree, filter=_private_data)  # noqa: S202 - the data filter
                except tarfile.FilterError as exc:
                    raise UnsafeTreeError(
                        f"commit {sha[:12]} is unsafe: {exc} (links and paths must stay inside "
                        "the repository)",
                        path=exc.tarinfo.name,
                    ) from exc
            (tree / ".reconciler-snapshot").write_text(sha + "\n")
            if target.exists():
                shutil.rmtree(target)
            os.replace(tree, target)
        except (git.GitCommandError, git.GitError, tarfile.TarError, OSError) as exc:
            raise self._error(f"read commit {sha[:12]} of", exc) from exc
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _check_tree(self, sha: str, listing: str) -> None:
        """``UnsafeTreeError`` for a ``.git`` path component or too many bytes in all."""
        total, sizes = 0, []
        for entry in listing.split("\0"):
            info, _, path = entry.partition("\t")
            if not path:
                continue
            if any(_is_dot_git(part) for part in path.split("/")):
                raise UnsafeTreeError(
                    f"commit {sha[:12]} is unsafe: {path!r} has a path component '.git' (a "
                    "repository inside the repository is never used)",
                    path=path,
                )
            size = info.split()[-1]
            if size.isdigit():
                total += int(size)
                sizes.append((int(size), path))
        if self.max_tree_bytes is not None and total > self.max_tree_bytes:
            largest = ", ".join(f"{p} ({n} bytes)" for n, p in sorted(sizes, reverse=True)[:3])
            raise UnsafeTreeError(
                f"commit {sha[:12]} is too large: its files add up to {total} bytes, more than "
                f"the {self.max_tree_bytes} bytes allowed (limits.max_repository_bytes); the "
                f"largest: {largest}"
            )

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


def _is_dot_git(part: str) -> bool:
    """``.git`` as git itself refuses it in a path: any case, NTFS trailing dots or spaces, and
    its 8.3 short name ``git~1``."""
    lowered = part.lower()
    return lowered.rstrip(". ") == ".git" or lowered == "git~1"
