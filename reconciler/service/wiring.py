"""Wiring: build a ``Reconciler`` from ``Settings`` with the real adapters.

The CLI and the daemon both call ``build``; tests that need fakes construct ``Reconciler``
directly with their own adapters.
"""

from __future__ import annotations

from collections.abc import Mapping

from reconciler.desired import messages as revert_commits
from reconciler.desired.model import EnvironmentDesired, GroupDesired
from reconciler.edges.ansible import runner as playbook_runner
from reconciler.edges.gates.checker import HealthChecker
from reconciler.edges.git import reader as git_source
from reconciler.record import sqlite as state_store
from reconciler.rollout import reconciler as reconcile
from reconciler.settings import Settings


class GitReverter:
    """``rollout.Reverter`` that pushes revert commits through the Git source."""

    def __init__(self, source: git_source.GitSource) -> None:
        self.source = source

    def revert(
        self,
        *,
        environment: EnvironmentDesired,
        group: GroupDesired,
        commit: str,
        failed: Mapping[str, str],
        restore: Mapping[str, str],
        reason: str,
        rollout_id: str,
    ) -> tuple[str, str]:
        offending = self.source.introducing_commit(
            environment.source_file, group.name, dict(failed), commit
        )
        request = revert_commits.RevertRequest(
            environment=environment.name,
            group=group.name,
            env_file=environment.source_file,
            offending_sha=offending,
            failed_versions=dict(failed),
            restore_versions=dict(restore),
            reason=reason,
            rollout_id=rollout_id,
        )
        result = self.source.revert_rollout(request)
        sha = f" {result.sha[:12]}" if result.sha else ""
        return result.status, f"{result.kind}{sha} of {offending[:12]}: {result.detail}"


def build(settings: Settings) -> reconcile.Reconciler:
    store = state_store.SqliteStateStore(settings.database_path)
    source = git_source.GitSource(
        settings.source.url,
        settings.source.branch,
        settings.cache_dir,
        push_enabled=settings.source.push,
        author_name=settings.source.author_name,
        author_email=settings.source.author_email,
    )
    runner = playbook_runner.PlaybookRunner(
        settings.runs_dir,
        keep_runs=settings.execution.keep_runs,
        host_key_checking=settings.execution.host_key_checking,
    )
    return reconcile.Reconciler(
        settings,
        source=source,
        store=store,
        runner=runner,
        checker=HealthChecker(),
        reverter=GitReverter(source),
    )
