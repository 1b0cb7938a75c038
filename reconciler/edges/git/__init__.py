"""The Git edge: what the rest of reconciler may know about Git (no GitPython here).

Contract:

* ``GitReader`` reads the tracked branch: fetch its tip, read commits, materialise exact-commit
  snapshots. ``GitWriter`` writes back to it: the revert commit of a failed rollout and an
  operator's rollback commit. They are separate objects on separate clones with separate locks
  (``reader.GitSource`` and ``writer.WriteBack``, built only by ``service.wiring``), so a write
  stalled on a hung remote never blocks a fetch, and the reverse.
* Reading fails with ``SourceError`` (a ``TemporaryError``: keep the last known state, retry
  later) or ``UnsafeTreeError`` (a ``PermanentError``: this commit can never be used, a
  problem of that commit, never an outage). They are distinct classes: catch each for what it
  means.
* Writing never raises for Git or remote failures: it returns a ``PushResult`` whose ``status``
  says what happened (``PushStatus``) and whose ``detail`` never holds credentials.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from reconciler.desired.messages import RevertRequest
from reconciler.errors import PermanentError, TemporaryError
from reconciler.states import ChangeKind, PushStatus

__all__ = [
    "CommitInfo",
    "GitReader",
    "GitWriter",
    "PushResult",
    "SourceError",
    "UnsafeTreeError",
]


class SourceError(TemporaryError):
    """The Git remote or the local mirror cannot be read now (transient)."""


class UnsafeTreeError(PermanentError):
    """A commit's tree can never be used (permanent): links or paths pointing outside the
    repository, a path component ``.git`` (a repository nested in the snapshot), more bytes
    than allowed. ``path`` names the offending file (``"."``: the tree as a whole)."""

    def __init__(self, message: str, *, path: str = ".") -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class CommitInfo:
    """One commit as the rest of reconciler sees it."""

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

    status: PushStatus
    kind: ChangeKind
    sha: str | None  # the pushed commit (None unless status is PUSHED)
    attempts: int
    detail: str


class GitReader(Protocol):
    """The tracked branch of the desired-state repository, read-only."""

    def fetch(self) -> CommitInfo:
        """Fetch the tracked branch and return its tip (``SourceError`` when it cannot)."""
        ...

    def last_fetched(self) -> CommitInfo:
        """The tip as of the last successful fetch, without the network."""
        ...

    def commit_info(self, sha: str) -> CommitInfo:
        """One fetched commit (``SourceError`` when it is unknown)."""
        ...

    def changed_paths(self, sha: str) -> tuple[str, ...]:
        """Paths the commit changed relative to its first parent, sorted."""
        ...

    def snapshot(self, sha: str) -> Path:
        """The tree of exactly that commit as a directory (``UnsafeTreeError``, ``SourceError``)."""
        ...

    def prune_snapshots(self, keep: set[str]) -> None:
        """Delete old snapshots, keeping the newest few and every sha in ``keep``."""
        ...


class GitWriter(Protocol):
    """Commits pushed to the tracked branch by reconciler itself."""

    def revert_rollout(self, request: RevertRequest) -> PushResult:
        """Revert a failed rollout; ``request.offending_sha`` is the commit that was in force.

        The writer walks back from it to the commit that introduced the failed versions and
        reverts that one (a true ``git revert``, or a targeted commit of the group's versions).
        """
        ...

    def commit_group_versions(
        self, *, env_file: str, group: str, versions: Mapping[str, str], message: str
    ) -> PushResult:
        """Set ``groups.<group>.apps`` versions in ``env_file`` on the branch tip and push."""
        ...
