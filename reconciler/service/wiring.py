"""Wiring: the only module that knows the concrete adapters.

The CLI, the daemon, the demo and the benchmarks build everything through these functions;
tests that need fakes construct ``Reconciler`` / ``Adapters`` directly with their own
(``reconciler.testing.fakes``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from reconciler.desired import loading
from reconciler.desired.messages import RevertRequest
from reconciler.edges.ansible import inventory
from reconciler.edges.ansible.runner import PlaybookRunner
from reconciler.edges.gates.checker import HealthChecker
from reconciler.edges.git.reader import GitSource, PushResult
from reconciler.record import StateStore
from reconciler.record.sqlite import SqliteStateStore
from reconciler.report import api, server
from reconciler.rollout.ports import Adapters, Reverter
from reconciler.rollout.reconciler import Reconciler
from reconciler.service.daemon import Daemon
from reconciler.settings import Settings
from reconciler.source.refresh import DesiredSource


def load_repository(root: Path, commit: str | None = None) -> loading.LoadResult:
    """Validate a desired-state work tree with the real (Ansible) inventory parser."""
    return loading.load_repository(root, inventories=inventory.load, commit=commit)


def open_store(settings: Settings, *, read_only: bool = False) -> StateStore:
    """The state store; ``read_only`` for reads, which never create, migrate or write."""
    return SqliteStateStore.open(settings.database_path, read_only=read_only)


def git_source(settings: Settings) -> GitSource:
    return GitSource(
        settings.source.url,
        settings.source.branch,
        settings.cache_dir,
        push_enabled=settings.source.push,
        author_name=settings.source.author_name,
        author_email=settings.source.author_email,
    )


def git_writer(settings: Settings) -> GitSource:
    """The Git write-back (revert and rollback commits)."""
    return git_source(settings)


def desired_source(settings: Settings, store: StateStore, *, record: bool) -> DesiredSource:
    """The source stage; ``record=False`` for reads that must leave the store as it was."""
    return DesiredSource(
        git_source(settings),
        meta=store,
        load=lambda root, sha: load_repository(root, sha),
        record=record,
    )


def build(settings: Settings, *, record: bool = True) -> Reconciler:
    """Everything a reconcile needs; ``record=False`` (reads): a read-only store, and a source
    stage that writes nothing."""
    store = open_store(settings, read_only=not record)
    source = desired_source(settings, store, record=record)
    runner = PlaybookRunner(
        settings.runs_dir,
        keep_runs=settings.execution.keep_runs,
        host_key_checking=settings.execution.host_key_checking,
    )
    reverter: Reverter = _TemporaryReverter(source.reader)  # type: ignore[arg-type]
    return Reconciler(
        settings,
        source=source,
        adapters=Adapters(store=store, runner=runner, checker=HealthChecker(), reverter=reverter),
    )


class _TemporaryReverter:
    """TEMPORARY until the git writer lands: finds the offending commit, then reverts."""

    def __init__(self, source: GitSource) -> None:
        self.source = source

    def revert_rollout(self, request: RevertRequest) -> PushResult:
        offending = self.source.introducing_commit(
            request.env_file, request.group, dict(request.failed_versions), request.offending_sha
        )
        result = self.source.revert_rollout(dataclasses.replace(request, offending_sha=offending))
        sha = f" {result.sha[:12]}" if result.sha else ""
        return dataclasses.replace(
            result, detail=f"{result.kind}{sha} of {offending[:12]}: {result.detail}"
        )


def serve(settings: Settings) -> Callable[[Daemon], tuple[str, Callable[[], None]]]:
    """``Daemon.run``'s ``serve`` hook: the API on uvicorn, in a thread."""

    def start(daemon: Daemon) -> tuple[str, Callable[[], None]]:
        return server.serve(
            api.create_app(daemon, settings), settings.api.listen, settings.api.port
        )

    return start
