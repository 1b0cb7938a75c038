"""The changes the writer commits, each applied on a clean checkout of the fetched tip.

Contract (local Git only: no fetch, no push; ``writer`` runs these between the two):

* ``reset_worktree(repo, branch, env)``: the private checkout, clean, at ``origin/<branch>``
  (``checkout -f -B``, ``reset --hard``, ``clean -fdx``; an unfinished revert is dropped).
* ``revert(request)`` returns the change that reverts a failed rollout. On its first use it
  walks back from ``request.offending_sha`` (the commit in force) to the commit that introduced
  the failed versions (``introducing_commit``); every ``Reverts:`` trailer names that commit.
  A true ``git revert`` when ``desired.messages.true_revert_possible`` (falling back to targeted
  on a revert conflict), otherwise a targeted edit of the group's versions that only touches
  apps still at the failed version. Nothing to change (already restored, or someone moved the
  app to another version) is an ``Applied`` without a sha: a noop.
* ``group_edit(...)`` returns the change that sets an operator's versions for one group.
* A change that cannot be applied on this tip (file or group gone, not UTF-8, a path leaving the
  repository) raises ``Conflict`` (or ``desired.edits.EditError``); nothing is committed then.
* Commits use ``--no-verify`` and the caller's ``env`` (identity, no signing, no hooks).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import git

from reconciler.desired.edits import EditError, group_versions, set_group_versions
from reconciler.desired.messages import RevertRequest, revert_message, true_revert_possible
from reconciler.edges.git import commits
from reconciler.states import ChangeKind

__all__ = [
    "Applied",
    "Apply",
    "Conflict",
    "group_edit",
    "introducing_commit",
    "reset_worktree",
    "revert",
]


class Conflict(Exception):
    """The change cannot be applied on the current tip (file gone, unsafe path...)."""


@dataclass(frozen=True)
class Applied:
    kind: ChangeKind
    sha: str | None  # None: nothing to change (noop)
    detail: str


Apply = Callable[[git.Repo, git.Commit, Mapping[str, str]], Applied]


def reset_worktree(repo: git.Repo, branch: str, env: Mapping[str, str]) -> None:
    """The private checkout, clean, at the fetched tip of the tracked branch."""
    remote_ref = f"refs/remotes/origin/{branch}"
    for operation in ("revert", "cherry_pick"):
        with contextlib.suppress(git.GitCommandError):
            getattr(repo.git, operation)("--quit", env=env)
    repo.git.checkout("-f", "--no-track", "-B", branch, remote_ref, env=env)
    repo.git.reset("--hard", remote_ref, env=env)
    repo.git.clean("-fdx", env=env)


def _text(commit: git.Commit, path: str) -> str | None:
    try:
        return commits.file_text(commit, path)
    except commits.NotText as exc:
        raise Conflict(str(exc)) from exc


def _worktree_file(repo: git.Repo, path: str) -> Path:
    parts = PurePosixPath(path).parts
    if not parts or PurePosixPath(path).is_absolute() or ".." in parts:
        raise Conflict(f"path {path!r} must be relative and stay inside the repository")
    return Path(str(repo.working_tree_dir)).joinpath(*parts)


def _commit(repo: git.Repo, message: str, env: Mapping[str, str]) -> str:
    repo.git.commit("--no-verify", "--cleanup=whitespace", "-m", message, env=env)
    return repo.head.commit.hexsha


def _write_and_commit(
    repo: git.Repo, path: str, text: str, message: str, env: Mapping[str, str]
) -> str:
    _worktree_file(repo, path).write_bytes(text.encode("utf-8"))
    repo.git.add("--", path, env=env)
    return _commit(repo, message, env)


def _pairs(versions: Mapping[str, str]) -> str:
    return ", ".join(f"{app} {version}" for app, version in sorted(versions.items())) or "-"


def introducing_commit(
    repo: git.Repo,
    env_file: str,
    group: str,
    failed: Mapping[str, str],
    commit: str,
    limit: int = 500,
) -> str:
    """The oldest first-parent commit up to ``commit`` since which the group holds ``failed``.

    Walks back the commits that changed ``env_file`` while the group's apps still hold the
    failed versions; the oldest of that run introduced them. Falls back to ``commit``.
    """
    if not failed:
        return commit
    try:
        found = commit
        for candidate in repo.iter_commits(
            commit, paths=env_file, first_parent=True, max_count=limit
        ):
            text = _text(candidate, env_file)
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
    except (git.GitCommandError, git.GitError, ValueError, OSError, Conflict):
        return commit


def revert(request: RevertRequest, branch: str) -> Apply:
    """The change that reverts a failed rollout (see the module docstring)."""
    resolved: list[RevertRequest] = []

    def apply(repo: git.Repo, tip: git.Commit, env: Mapping[str, str]) -> Applied:
        if not resolved:
            offending = introducing_commit(
                repo,
                request.env_file,
                request.group,
                request.failed_versions,
                request.offending_sha,
            )
            resolved.append(dataclasses.replace(request, offending_sha=offending))
        req = resolved[0]
        where, offending = f"{req.environment}/{req.group}", req.offending_sha[:12]
        text = _text(tip, req.env_file)
        if text is None:
            raise Conflict(f"{req.env_file} is not in the tip")
        current = group_versions(text, req.group)
        restore = dict(req.restore_versions)
        if all(current.get(app) == version for app, version in restore.items()):
            return Applied(
                ChangeKind.REVERT,
                None,
                f"{where} already at {_pairs(restore)} on {tip.hexsha[:12]}: nothing to revert "
                f"of {offending}",
            )
        reverted = _true_revert(repo, tip, req, branch, env)
        if reverted is not None:
            return reverted
        failed = req.failed_versions
        pending = {
            app: version
            for app, version in restore.items()
            if app in failed and current.get(app) == failed[app]
        }
        if not pending:
            moved = {app: current.get(app, "(removed)") for app in restore}
            return Applied(
                ChangeKind.TARGETED,
                None,
                f"{where} changed on {tip.hexsha[:12]} since the failed rollout "
                f"({_pairs(moved)}): left as is, {offending} not reverted",
            )
        new_text = set_group_versions(text, req.group, pending)
        sha = _write_and_commit(repo, req.env_file, new_text, revert_message(req, "targeted"), env)
        return Applied(
            ChangeKind.TARGETED,
            sha,
            f"restored {where} to {_pairs(pending)} (the change of {offending})",
        )

    return apply


def _true_revert(
    repo: git.Repo,
    tip: git.Commit,
    request: RevertRequest,
    branch: str,
    env: Mapping[str, str],
) -> Applied | None:
    """``git revert`` of the offending commit when that is exactly the change; else None."""
    try:
        offending = repo.commit(request.offending_sha)
    except (git.BadName, ValueError):
        return None
    if not offending.parents or not repo.is_ancestor(offending, tip):
        return None
    parent = offending.parents[0]
    if not true_revert_possible(
        request,
        commits.changed_paths(offending),
        _text(parent, request.env_file),
        _text(offending, request.env_file),
    ):
        return None
    mainline = ["-m", "1"] if len(offending.parents) > 1 else []
    try:
        repo.git.revert("--no-commit", *mainline, offending.hexsha, env=env)
    except git.GitCommandError:
        with contextlib.suppress(git.GitCommandError):
            repo.git.revert("--abort", env=env)
        reset_worktree(repo, branch, env)
        return None
    text = _worktree_file(repo, request.env_file).read_text(encoding="utf-8")
    try:
        restored = group_versions(text, request.group)
    except EditError:
        restored = {}
    if any(restored.get(a) != v for a, v in request.restore_versions.items()):
        reset_worktree(repo, branch, env)
        return None
    sha = _commit(repo, revert_message(request, "revert"), env)
    return Applied(
        ChangeKind.REVERT,
        sha,
        f"reverted {offending.hexsha[:12]} ({request.environment}/{request.group} back to "
        f"{_pairs(request.restore_versions)})",
    )


def group_edit(env_file: str, group: str, versions: Mapping[str, str], message: str) -> Apply:
    """The change that sets ``groups.<group>.apps`` versions in ``env_file``."""

    def apply(repo: git.Repo, tip: git.Commit, env: Mapping[str, str]) -> Applied:
        text = _text(tip, env_file)
        if text is None:
            raise Conflict(f"{env_file} is not in the tip")
        current = group_versions(text, group)
        if all(current.get(app) == version for app, version in versions.items()):
            return Applied(
                ChangeKind.EDIT, None, f"{group} already at {_pairs(versions)} on {tip.hexsha[:12]}"
            )
        new_text = set_group_versions(text, group, versions)
        sha = _write_and_commit(repo, env_file, new_text, message, env)
        return Applied(ChangeKind.EDIT, sha, f"set {group} in {env_file} to {_pairs(versions)}")

    return apply
