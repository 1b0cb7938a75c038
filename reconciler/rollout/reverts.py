"""The revert commit of a rolled back group: asked of the ``Reverter`` (the Git write-back).

Contract (``revert(reverter, environment, group, commit, restore, reason, rollout_id, lease)``):
without a reverter (nothing to push to) or without a version to restore, nothing is pushed and
the outcome says a human must revert; with replicas, ``lease`` is asked right before the push
(Git cannot be fenced like the database) and a lease no longer held pushes nothing (the new
owner resumes the rollout); otherwise the group's failed versions (those it restores)
are reverted in ``commit`` and the reverter's ``PushResult`` becomes a ``RevertOutcome``
(status, ``kind sha: detail``, sha). The reverter never raises for Git failures
(``edges.git``). Returns the outcome and the failed versions.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from reconciler.desired.messages import RevertRequest
from reconciler.desired.model import EnvironmentDesired, GroupDesired
from reconciler.plan.outcomes import RevertOutcome
from reconciler.rollout.ports import LeaseCheck, Reverter

log = structlog.get_logger(__name__)


def revert(
    reverter: Reverter | None,
    environment: EnvironmentDesired,
    group: GroupDesired,
    commit: str,
    restore: Mapping[str, str],
    reason: str,
    rollout_id: str,
    lease: LeaseCheck | None = None,
) -> tuple[RevertOutcome, dict[str, str]]:
    failed = {a: v for a, v in group.apps.items() if a in restore}
    if reverter is None:
        return RevertOutcome(None, "no Git source to push to; revert the commit by hand"), failed
    if not restore:
        message = "no last good version to restore; revert the commit by hand"
        return RevertOutcome(None, message), failed
    if lease is not None and not lease.confirm():
        log.warning("revert_withheld", reason="lease not held")
        message = "not pushed: this replica no longer holds the environment's lease"
        return RevertOutcome(None, message), failed
    result = reverter.revert_rollout(
        RevertRequest(
            environment=environment.name,
            group=group.name,
            env_file=environment.source_file,
            offending_sha=commit,
            failed_versions=failed,
            restore_versions=dict(restore),
            reason=reason,
            rollout_id=rollout_id,
        )
    )
    sha = f" {result.sha[:12]}" if result.sha else ""
    return RevertOutcome(result.status, f"{result.kind}{sha}: {result.detail}", result.sha), failed
