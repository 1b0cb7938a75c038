"""Wiring: the only module that knows the concrete adapters.

The CLI, the daemon, the demo and the benchmarks build everything through these functions;
tests that need fakes construct ``Reconciler`` / ``Adapters`` directly with their own
(``reconciler.testing.fakes``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from reconciler.desired import loading
from reconciler.desired.inventories import InventoryReader
from reconciler.edges.ansible import inventory
from reconciler.edges.ansible.runner import PlaybookRunner
from reconciler.edges.gates.checker import HealthChecker
from reconciler.edges.git.reader import GitSource
from reconciler.edges.git.writer import WriteBack
from reconciler.record import StateStore
from reconciler.record.sqlite import SqliteStateStore
from reconciler.report import api, server
from reconciler.rollout.ports import Adapters, Reverter
from reconciler.rollout.reconciler import Reconciler
from reconciler.service.daemon import Daemon
from reconciler.settings import Settings
from reconciler.source.refresh import DesiredSource


def inventory_reader(settings: Settings | None = None) -> InventoryReader:
    """The Ansible inventory parser (a bounded child process per parse). With ``settings``:
    the operator's dynamic-inventory opt-ins, vault password files, limits and the parsed
    inventory cache in the state dir; without: static inventories only, nothing decrypted,
    nothing cached (``reconciler validate`` without a configuration)."""
    if settings is None:
        return inventory.InventoryParser()
    execution = settings.execution
    return inventory.InventoryParser(
        cache_dir=settings.inventory_cache_dir,
        dynamic=execution.dynamic_inventories,
        vault=execution.vault_files,
        limits=inventory.Limits(
            timeout_s=execution.inventory_timeout,
            memory_bytes=execution.inventory_memory_mib << 20,
        ),
    )


def load_repository(
    root: Path,
    commit: str | None = None,
    *,
    settings: Settings | None = None,
    inventories: InventoryReader | None = None,
) -> loading.LoadResult:
    """Validate a desired-state work tree with the real (Ansible) inventory parser
    (``inventories``, else ``inventory_reader(settings)``)."""
    reader = inventories if inventories is not None else inventory_reader(settings)
    return loading.load_repository(root, inventories=reader, commit=commit)


def open_store(settings: Settings, *, read_only: bool = False) -> StateStore:
    """The state store; ``read_only`` for reads, which never create, migrate or write."""
    return SqliteStateStore.open(settings.database_path, read_only=read_only)


def git_source(settings: Settings) -> GitSource:
    """The Git reader: fetches and snapshots of the tracked branch."""
    return GitSource(settings.source.url, settings.source.branch, settings.cache_dir)


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
    reader = inventory_reader(settings)
    return DesiredSource(
        git_source(settings),
        meta=store,
        load=lambda root, sha: load_repository(root, sha, inventories=reader),
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
        vault=settings.execution.vault_files,
    )
    reverter: Reverter = git_writer(settings, cancel=stopping)
    return Reconciler(
        settings,
        source=source,
        adapters=Adapters(store=store, runner=runner, checker=HealthChecker(), reverter=reverter),
    )


def serve(settings: Settings) -> Callable[[Daemon], tuple[str, Callable[[], None]]]:
    """``Daemon.run``'s ``serve`` hook: the API on uvicorn, in a thread."""

    def start(daemon: Daemon) -> tuple[str, Callable[[], None]]:
        return server.serve(
            api.create_app(daemon, settings), settings.api.listen, settings.api.port
        )

    return start
