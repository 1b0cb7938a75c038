"""Wiring: build a ``Reconciler`` from ``Settings`` with the real adapters.

The CLI and the daemon both call ``build``; tests that need fakes construct ``Reconciler``
directly with their own adapters.
"""

from __future__ import annotations

from reconciler.edges.ansible import runner as playbook_runner
from reconciler.edges.gates.checker import HealthChecker
from reconciler.edges.git import reader as git_source
from reconciler.edges.git import writer as git_writer
from reconciler.record import sqlite as state_store
from reconciler.rollout import reconciler as reconcile
from reconciler.settings import Settings


def build(settings: Settings) -> reconcile.Reconciler:
    store = state_store.SqliteStateStore(settings.database_path)
    source = git_source.GitSource(settings.source.url, settings.source.branch, settings.cache_dir)
    writer = git_writer.WriteBack(
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
        reverter=writer,
    )
