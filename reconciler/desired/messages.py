"""What the daemon writes to Git after a rollback, and the decision of how to write it.

Contract (pure: no I/O, no Git):

* ``RevertRequest`` describes one failed rollout of one group: the environment file, the
  offending commit, the failed versions and the last good versions to restore.
* ``revert_message(req, kind)`` is the commit message. ``kind`` is ``"revert"`` (a true
  ``git revert`` of the offending commit) or ``"targeted"`` (a commit that restores only the
  failed group's versions). Subject ``Revert <env>/<group> to <app> <version>, ... (rollout <id>
  failed)``; the body names the environment, group, each ``failed -> restored`` version, the
  reason and the rollout id; a true revert also carries git's ``This reverts commit <sha>.``
  line; the last paragraph holds the trailers ``Reverts: <full sha>`` and
  ``Reconciler-Rollout: <id>`` (parseable by ``git interpret-trailers``).
* ``operator_rollback_message(...)`` is the message of ``reconciler rollback``'s commit, with
  the trailers ``Reconciler-Rollback: <env>/<group>`` and ``Requested-By: <actor>``.
* ``true_revert_possible(...)`` decides whether the offending commit can be reverted as a whole:
  it changed only the environment file, only the group's app versions in it, it set exactly the
  failed versions, and its parent held exactly the versions being restored (so the revert
  reconciles to a no-op).

Credentials in the reason and the actor (URLs with userinfo, query-string tokens...) are masked
with ``support.redaction.redact``: commit messages are pushed and public to everyone who can read
the repository.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from reconciler.desired.edits import EditError, group_versions, only_group_versions_changed
from reconciler.support.redaction import redact

_NEWLINES = re.compile(r"\s*\n\s*")

RevertKind = Literal["revert", "targeted"]


@dataclass(frozen=True)
class RevertRequest:
    environment: str
    group: str
    env_file: str  # repository-relative, e.g. "environments/production.yaml"
    offending_sha: str
    failed_versions: Mapping[str, str] = field(hash=False)
    restore_versions: Mapping[str, str] = field(hash=False)
    reason: str
    rollout_id: str


def _clean(text: str) -> str:
    """One line, no credentials."""
    return redact(_NEWLINES.sub("; ", text.strip()))


def _versions(versions: Mapping[str, str]) -> str:
    return ", ".join(f"{app} {version}" for app, version in sorted(versions.items()))


def _changes(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    return [
        f"  {app}: {before.get(app, '(none)')} -> {version}"
        for app, version in sorted(after.items())
    ]


def revert_message(req: RevertRequest, kind: RevertKind) -> str:
    """The message of the daemon's revert commit."""
    if kind not in ("revert", "targeted"):
        raise ValueError(f"unknown revert kind {kind!r}")
    where = f"{req.environment}/{req.group}"
    subject = (
        f"Revert {where} to {_versions(req.restore_versions)} (rollout {req.rollout_id} failed)"
    )
    how = (
        "This commit reverts the offending commit as a whole."
        if kind == "revert"
        else "This commit restores only this group's versions; the offending commit's other "
        "changes stay."
    )
    lines = [
        subject,
        "",
        f"Rollout {req.rollout_id} of group {req.group} in environment {req.environment} "
        f"({req.env_file}) failed and was rolled back by the reconciler:",
        *_changes(req.failed_versions, req.restore_versions),
        "",
        f"Reason: {_clean(req.reason)}",
        "",
        how,
        "Commit a new version to try again: a failed version is not retried.",
    ]
    if kind == "revert":
        lines += ["", f"This reverts commit {req.offending_sha}."]
    lines += [
        "",
        f"Reverts: {req.offending_sha}",
        f"Reconciler-Rollout: {_clean(req.rollout_id)}",
    ]
    return "\n".join(lines) + "\n"


def operator_rollback_message(
    environment: str,
    group: str,
    from_versions: Mapping[str, str],
    to_versions: Mapping[str, str],
    actor: str,
) -> str:
    """The message of the commit made by ``reconciler rollback --env E --group G``."""
    where = f"{environment}/{group}"
    lines = [
        f"Roll back {where} to {_versions(to_versions)}",
        "",
        f"Requested by {_clean(actor)} with `reconciler rollback` for group {group} in "
        f"environment {environment}:",
        *_changes(from_versions, to_versions),
        "",
        f"Reconciler-Rollback: {where}",
        f"Requested-By: {_clean(actor)}",
    ]
    return "\n".join(lines) + "\n"


def true_revert_possible(
    req: RevertRequest,
    changed_paths: Sequence[str],
    parent_text: str | None,
    commit_text: str | None,
) -> bool:
    """Whether reverting the offending commit as a whole is exactly the wanted change."""
    if tuple(changed_paths) != (req.env_file,) or parent_text is None or commit_text is None:
        return False
    if not only_group_versions_changed(parent_text, commit_text, req.group):
        return False
    try:
        before = group_versions(parent_text, req.group)
        after = group_versions(commit_text, req.group)
    except EditError:
        return False
    failed = dict(req.failed_versions)
    restore = dict(req.restore_versions)
    return (
        all(after.get(app) == version for app, version in failed.items())
        and all(before.get(app) == version for app, version in restore.items())
        and all(before[app] == after[app] for app in after if app not in restore)
    )
