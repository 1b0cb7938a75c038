"""Wiring: the only module that knows the concrete adapters.

The CLI, the daemon, the demo and the benchmarks build everything through these functions;
tests that need fakes construct ``Reconciler`` / ``Adapters`` directly with their own
(``reconciler.testing.fakes``). A recording build (the daemon, a foreground ``sync``) records
events in the store's event log (``report.events.EventLog``, retention from ``events``); the
daemon also gets the event consumers: one notification worker per route (apprise channels
from the route's URL file) and the commit-status worker of the configured provider.
"""

from __future__ import annotations

import functools
import os
import resource
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from reconciler.desired import loading
from reconciler.desired.inventories import InventoryReader
from reconciler.edges.ansible import inventory
from reconciler.edges.ansible.runner import PlaybookRunner
from reconciler.edges.commit_status.client import HttpPoster
from reconciler.edges.gates.checker import HealthChecker
from reconciler.edges.gates.versions import HttpVersions
from reconciler.edges.git.auth import GitAuth
from reconciler.edges.git.reader import GitSource
from reconciler.edges.git.writer import WriteBack
from reconciler.record import EventSink, LeaseHolders, SilentSink, StateStore, migrations
from reconciler.record.sqlite import SqliteStateStore
from reconciler.report.commit_status import StatusWorker
from reconciler.report.delivery import EventWorker
from reconciler.report.events import EventLog
from reconciler.report.notifications import RouteWorker
from reconciler.rollout.observation import Observer
from reconciler.rollout.ports import Adapters, Reverter
from reconciler.rollout.reconciler import Reconciler
from reconciler.service import resources
from reconciler.service.daemon import Daemon
from reconciler.service.ownership import Ownership
from reconciler.service.replication import Replication
from reconciler.settings import LimitsSettings, Settings
from reconciler.source.refresh import DesiredSource
from reconciler.support.redaction import redact

if TYPE_CHECKING:
    from reconciler.record.postgresql import PostgresStateStore

log = structlog.get_logger(__name__)
#: Connections of a read-only store (the CLI's reads: one command, one thread).
READ_ONLY_POOL = 2


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
    limits: LimitsSettings | None = None,
    *,
    settings: Settings | None = None,
    inventories: InventoryReader | None = None,
) -> loading.LoadResult:
    """Validate a desired-state work tree with the real (Ansible) inventory parser
    (``inventories``, else ``inventory_reader(settings)``), within the operator's ``limits``
    (the defaults when None)."""
    reader = inventories if inventories is not None else inventory_reader(settings)
    return loading.load_repository(root, inventories=reader, commit=commit, limits=limits)


def open_store(settings: Settings, *, read_only: bool = False) -> StateStore:
    """The state store of ``state.url``: PostgreSQL when set, else SQLite at
    ``state_dir/state.db``. Read-write, it is migrated to this code's schema; ``read_only``
    for reads, which never create, migrate or write. ``StoreError`` when it refuses (an
    unknown schema, a bad URL or password file), ``StoreUnavailable`` when it cannot be
    reached now."""
    return _open_store(settings, read_only=read_only)


def _open_store(
    settings: Settings, *, read_only: bool = False
) -> SqliteStateStore | PostgresStateStore:
    state = settings.state
    if not state.url:
        return SqliteStateStore.open(settings.database_path, read_only=read_only)
    from reconciler.record.postgresql import PostgresStateStore  # psycopg: only when used

    return PostgresStateStore.open(
        state.url,
        read_only=read_only,
        password_file=state.password_file,
        pool_size=min(state.pool_size, READ_ONLY_POOL) if read_only else state.pool_size,
        connect_timeout=state.connect_timeout,
    )


def store_location(settings: Settings) -> str:
    """Where the state store is, for people (a PostgreSQL URL without its query)."""
    return settings.state.url.split("?")[0] if settings.state.url else str(settings.database_path)


def migrate_store(settings: Settings) -> migrations.Outcome:
    """``reconciler migrate``: bring the configured store to this code's schema (concurrent
    replicas wait for each other); what was done."""
    store = _open_store(settings)
    try:
        assert store.migrated is not None  # a read-write open migrates
        return store.migrated
    finally:
        store.close()


def replication(settings: Settings, store: StateStore, api: str = "") -> Replication | None:
    """Leases and sync requests between replicas when the store is PostgreSQL; else None
    (SQLite: one daemon, the state-dir lock)."""
    from reconciler.record.postgresql import PostgresLeases, PostgresStateStore, PostgresTriggers

    if not isinstance(store, PostgresStateStore):
        return None
    name = settings.state.replica or f"{socket.gethostname()}-{os.getpid()}"
    leases = Ownership(PostgresLeases(store.connections), name, api, settings.state.lease_ttl)
    return Replication(leases, PostgresTriggers(store.connections), store.fenced)


def lease_holders(store: StateStore) -> LeaseHolders | None:
    """The leases table when the store is PostgreSQL (who owns what, read without a daemon);
    else None."""
    from reconciler.record.postgresql import PostgresLeases, PostgresStateStore

    return PostgresLeases(store.connections) if isinstance(store, PostgresStateStore) else None


def git_auth(settings: Settings) -> GitAuth:
    """How git authenticates to ``source.url`` (one per configuration and process; see
    ``edges.git.auth``). ``ValueError``/``OSError`` for an unusable configuration; a URL with
    embedded credentials works but is warned about once."""
    source = settings.source
    return _git_auth(
        source.url,
        source.username,
        source.password_file,
        source.ssh_key_file,
        source.known_hosts_file,
    )


@functools.cache
def _git_auth(
    url: str,
    username: str | None,
    password_file: Path | None,
    ssh_key_file: Path | None,
    known_hosts_file: Path | None,
) -> GitAuth:
    for path in (password_file, ssh_key_file, known_hosts_file):
        if path is not None:
            path.open("rb").close()  # readable now, or a clear error at start
    auth = GitAuth(
        url,
        username=username,
        password_file=password_file,
        ssh_key_file=ssh_key_file,
        known_hosts_file=known_hosts_file,
    )
    if auth.embedded:
        log.warning(
            "source_url_has_credentials",
            url=redact(url),
            hint="they are used, never stored in the clone; move the secret to "
            "source.password_file (HTTPS) or source.ssh_key_file (SSH)",
        )
    return auth


def git_source(settings: Settings) -> GitSource:
    """The Git reader: fetches and snapshots of the tracked branch."""
    return GitSource(
        settings.source.url,
        settings.source.branch,
        settings.cache_dir,
        max_tree_bytes=settings.limits.max_repository_bytes,
        auth=git_auth(settings),
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
        auth=git_auth(settings),
    )


def desired_source(
    settings: Settings, store: StateStore, *, record: bool, events: EventSink | None = None
) -> DesiredSource:
    """The source stage; ``record=False`` for reads that must leave the store as it was."""
    reader = inventory_reader(settings)
    return DesiredSource(
        git_source(settings),
        meta=store,
        load=lambda root, sha: load_repository(root, sha, settings.limits, inventories=reader),
        record=record,
        events=events,
    )


def event_log(settings: Settings, store: StateStore) -> EventLog:
    """The event log on ``store``, with the retention of ``events``."""
    config = settings.events
    return EventLog(
        store,
        keep=config.keep or None,
        max_age=config.max_age or None,
        max_streams=config.max_streams,
    )


def event_consumers(
    settings: Settings, store: StateStore, replica: str | None = None
) -> list[EventWorker]:
    """Notification workers (one per route) and the commit-status worker, not started.
    ``ValueError``/``OSError`` for a URL file or token file that cannot be used (the message
    names the file and line, never a secret).

    With several replicas (``replica``: this one's name) each replica delivers the events it
    emits itself, live: its cursors are its own (``...delivered@<replica>``) and it catches up
    nothing at start, since the stored events after its cursor include other replicas' (sent
    by them). What a crashed replica had not delivered yet is not sent by another."""
    from reconciler.edges.notify import apprise_channels  # apprise: only with routes

    workers: list[EventWorker] = []
    for route in settings.notifications.routes:
        try:
            channels = apprise_channels.load(route.urls_file)
        except (OSError, ValueError) as exc:
            raise ValueError(f"notifications route {route.name!r}: {exc}") from None
        workers.append(RouteWorker(route, channels, store, settings.notifications))
    config = settings.commit_status
    if config.provider is not None and config.token_file is not None:
        poster = HttpPoster(
            config.provider,
            config.api_url,
            config.repository,
            config.token_file,
            timeout=config.timeout,
        )
        workers.append(
            StatusWorker(poster, store, config, catch_up=settings.notifications.catch_up)
        )
    if replica is not None:
        for worker in workers:
            worker.cursor_key = f"{worker.cursor_key}@{replica}"
            worker.catch_up = 0.0
    return workers


def build(
    settings: Settings,
    *,
    record: bool = True,
    stopping: threading.Event | None = None,
    store: StateStore | None = None,
    events: EventSink | None = None,
) -> Reconciler:
    """Everything a reconcile needs; ``record=False`` (reads): a read-only store, and a source
    stage that writes nothing and tells nothing. A recording build records events (``events``,
    by default an event log on the store)."""
    if store is None:
        store = open_store(settings, read_only=not record)
    if events is None:
        events = event_log(settings, store) if record else SilentSink()
    source = desired_source(settings, store, record=record, events=events)
    runner = PlaybookRunner(
        settings.runs_dir,
        keep_runs=settings.execution.keep_runs,
        host_key_checking=settings.execution.host_key_checking,
        control_path_dir=settings.control_path_dir,
        vault=settings.execution.vault_files,
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
            events=events,
        ),
    )


def daemon(settings: Settings, *, stopping: threading.Event) -> Daemon:
    """The daemon with its event log, its event consumers and, with PostgreSQL, its
    replication (leases, sync requests between replicas; see ``build``)."""
    store = open_store(settings)
    events = event_log(settings, store)
    replicas = replication(settings, store)
    consumers = event_consumers(settings, store, replicas.replica if replicas else None)
    reconciler = build(settings, stopping=stopping, store=store, events=events)
    return Daemon(
        settings,
        reconciler,
        stopping=stopping,
        events=events,
        consumers=consumers,
        replication=replicas,
    )


def serve(settings: Settings) -> Callable[[Daemon], tuple[str, Callable[[], None]]]:
    """``Daemon.run``'s ``serve`` hook: the API on uvicorn, in a thread, within the limits of
    ``api`` (connections capped to what the open-files limit leaves), warning when it listens
    beyond loopback."""

    def start(daemon: Daemon) -> tuple[str, Callable[[], None]]:
        from reconciler.report import api, client, server  # the HTTP stack: daemons only

        config = settings.api
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        connections = resources.api_connection_budget(config.max_connections, soft)
        if connections < config.max_connections:
            log.warning(
                "api_connections_capped",
                max_connections=config.max_connections,
                capped_to=connections,
                open_files_limit=soft,
            )
        limits = server.Limits(connections, config.read_timeout, config.keep_alive)
        app = api.create_app(daemon, settings)
        url, stop = server.serve(app, config.listen, config.port, limits)
        if not client.is_loopback(config.listen):
            log.warning(
                "api_listens_beyond_loopback",
                listen=config.listen,
                port=config.port,
                reads=(
                    "need api.read_token_file's bearer token"
                    if config.read_token_file
                    else "open to anyone who can connect: set api.read_token_file"
                ),
                hint="serve it behind a TLS reverse proxy; webhooks and mutations are "
                "authenticated, the bearer tokens travel in clear text without TLS",
            )
        return url, stop

    return start
