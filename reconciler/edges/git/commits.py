"""Reading commits with GitPython, shared by the reader and the writer (no network, no writes).

Contract: ``info(commit)`` is the ``CommitInfo`` of a GitPython commit; ``changed_paths(commit)``
the sorted paths it changed relative to its first parent (every path for a root commit);
``file_text(commit, path)`` the UTF-8 text of a file in its tree, ``None`` when there is no file
at that path, ``NotText`` when it is not UTF-8.
"""

from __future__ import annotations

import git

from reconciler.edges.git import CommitInfo

__all__ = ["NotText", "changed_paths", "file_text", "info"]


class NotText(ValueError):
    """The file is not UTF-8 text."""


def info(commit: git.Commit) -> CommitInfo:
    return CommitInfo(
        sha=commit.hexsha,
        author=str(commit.author.name or ""),
        author_email=str(commit.author.email or ""),
        message=str(commit.message).strip(),
        committed_at=float(commit.committed_date),
    )


def changed_paths(commit: git.Commit) -> tuple[str, ...]:
    if not commit.parents:
        return tuple(sorted(str(p) for p in commit.stats.files))
    diff = commit.parents[0].diff(commit)
    return tuple(sorted({p for d in diff for p in (d.a_path or d.b_path,) if p is not None}))


def file_text(commit: git.Commit, path: str) -> str | None:
    try:
        blob = commit.tree / path
    except KeyError:
        return None
    if blob.type != "blob":
        return None
    try:
        return bytes(blob.data_stream.read()).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotText(f"{path} is not UTF-8 text") from exc
