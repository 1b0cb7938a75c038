"""Wiring: the only module that knows the concrete adapters.

The CLI, the daemon, the demo and the benchmarks build everything through these functions;
tests that need fakes construct ``Reconciler`` / ``Adapters`` directly with their own
(``reconciler.testing.fakes``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from reconciler.desired import loading
from reconciler.edges.ansible import inventory
from reconciler.edges.ansible.runner import PlaybookRunner
from reconciler.edges.gates.checker import HealthChecker
from reconciler.edges.gates.versions import HttpVersions
from reconciler.edges.git.reader import GitSource
from reconciler.edges.git.writer import WriteBack
from reconciler.record import StateStore
from reconciler.record.sqlite import SqliteStateStore
from reconciler.report import api, server
from reconciler.rollout.observation import Observer
from reconciler.rollout.ports import Adapters, Reverter
from reconciler.rollout.reconciler import Reconciler
from reconciler.service.daemon import Daemon
from reconciler.settings import LimitsSettings, Settings
from reconciler.source.refresh import DesiredSource


def load_repository(
    root: Path, commit: str | None = None, limits: LimitsSettings | None = None
) -> loading.LoadResult:
    """Validate a desired-state work tree with the real (Ansible) inventory parser, within
    the operator's ``limits`` (the defaults when None)."""
    return loading.load_repository(root, inventories=inventory.load, commit=commit, limits=limits)


def open_store(settings: Settings, *, read_only: bool = False) -> StateStore:
    """The state store; ``read_only`` for reads, which never create, migrate or write."""
    return SqliteStateStore.open(settings.database_path, read_only=read_only)


def git_source(settings: Settings) -> GitSource:
    """The Git reader: fetches and snapshots of the tracked branch."""
    return GitSource(
        settings.source.url,
        settings.source.branch,
        settings.cache_dir,
        max_tree_bytes=settings.limits.max_repository_bytes,
    )


def git_writer(settings: Settings, *, cancel: threading.Event | None = None) -> WriteBack:
    """The Git write-back (revert and rollback commits), on its own clone: a write never
    blocks a fetch. ``cancel`` (the daemon's stop) ends its retry waits."""
    return WriteBack(
        settings.source.url,
        settings.source.branch,
        settings.cache_dir,
        push_enabled=settings.source.push,
        author_name=settings.source.author_name,
        author_email=settings.source.author_email,
        cancel=cancel,
    )


def desired_source(settings: Settings, store: StateStore, *, record: bool) -> DesiredSource:
    """The source stage; ``record=False`` for reads that must leave the store as it was."""
    return DesiredSource(
        git_source(settings),
        meta=store,
        load=lambda root, sha: load_repository(root, sha, settings.limits),
        record=record,
    )


def build(
    settings: Settings, *, record: bool = True, stopping: threading.Event | None = None
) -> Reconciler:
    """Everything a reconcile needs; ``record=False`` (reads): a read-only store, and a source
    stage that writes nothing."""
    store = open_store(settings, read_only=not record)
    source = desired_source(settings, store, record=record)
    runner = PlaybookRunner(
        settings.runs_dir,
        keep_runs=settings.execution.keep_runs,
        host_key_checking=settings.execution.host_key_checking,
        control_path_dir=settings.control_path_dir,
    )
    reverter: Reverter = git_writer(settings, cancel=stopping)
    observer = Observer(
        runner, HttpVersions(), settings.execution, time.time, forks=settings.observation.forks
    )
    return Reconciler(
        settings,
        source=source,
        adapters=Adapters(
            store=store,
            runner=runner,
            checker=HealthChecker(),
            reverter=reverter,
            observer=observer,
        ),
    )


def serve(settings: Settings) -> Callable[[Daemon], tuple[str, Callable[[], None]]]:
    """``Daemon.run``'s ``serve`` hook: the API on uvicorn, in a thread."""

    def start(daemon: Daemon) -> tuple[str, Callable[[], None]]:
        return server.serve(
            api.create_app(daemon, settings), settings.api.listen, settings.api.port
        )

    return start
