"""Commands that change things: ``sync``, ``rollback``, ``suspend``, ``resume``, ``run``,
``migrate``, ``demo``.

``sync``, ``suspend`` and ``resume`` go through the running daemon when there is one; otherwise
``sync`` reconciles here, in the foreground, holding the state dir's lock.
"""

from __future__ import annotations

import dataclasses
import functools
import getpass
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from reconciler.cli.app import (
    MESSAGE_LIMIT,
    ConfigOption,
    EnvOption,
    OutputOption,
    app,
    console,
    errors,
    fail,
    settings,
    source_settings,
)
from reconciler.cli.daemon_calls import daemon_call, discover
from reconciler.desired import messages
from reconciler.desired.schema import VERSION_RE
from reconciler.plan.observed import HostAppState
from reconciler.record import StoreError, StoreUnavailable
from reconciler.report import terminal
from reconciler.report.progress import ProgressReporter
from reconciler.report.status import HostApp
from reconciler.report.terminal import Output
from reconciler.service.leadership import AlreadyRunning, StateDirLock
from reconciler.states import DriftClass, EnvironmentResult, EventKind, RolloutState
from reconciler.support import logs
from reconciler.support.text import safe

if TYPE_CHECKING:
    from reconciler.report.client import DaemonClient


def _sync_through_daemon(client: DaemonClient, env: list[str] | None, timeout: float) -> None:
    failed = False
    table = Table("environment", "result", "groups", title=f"sync through {client.url}")
    targets: list[str | None] = list(env) if env else [None]
    for environment in targets:
        with console.status(f"daemon reconciling {environment or 'every environment'}"):
            answer = daemon_call(functools.partial(client.sync, environment, timeout))
        for name, outcome in answer["finished"].items():
            if outcome is None:
                failed = True
                table.add_row(name, Text("still running", style="yellow"), "")
                continue
            failed = failed or not EnvironmentResult(outcome["result"]).ok
            groups = ", ".join(f"{g}={o['state']}" for g, o in outcome["groups"].items())
            table.add_row(name, outcome["result"], groups)
    console.print(table)
    if failed:
        raise typer.Exit(1)


@app.command()
def sync(
    config: ConfigOption = None,
    env: EnvOption = None,
    once: Annotated[bool, typer.Option("--once", help="Reconcile now, in the foreground.")] = True,
    timeout: Annotated[float, typer.Option(help="Through a daemon: longest wait, s.")] = 3600,
) -> None:
    """Reconcile now; exit 1 when a commit was rejected or any host or group failed.

    With a running daemon the reconcile runs there (this waits for it); otherwise here,
    holding the state dir's lock. Results ``applied``, ``in_sync``, ``degraded`` (host failures
    within max_failed_hosts), ``deferred`` and ``suspended`` exit 0.
    """
    from reconciler.service import wiring  # the adapters: when needed

    loaded = source_settings(config)
    client = discover(loaded)
    if client is not None:
        _sync_through_daemon(client, env, timeout)
        return
    reconciler = wiring.build(loaded)
    reconciler.adapters = dataclasses.replace(
        reconciler.adapters, reporter=ProgressReporter(console)
    )
    try:
        with StateDirLock(loaded.lock_path):
            for record in reconciler.resume_interrupted(reconciler.refresh()):
                errors.print(
                    Text("resumed", style="yellow")
                    + Text(
                        f" interrupted rollout {record.id} ({record.environment}/{record.group})"
                    )
                )
            result = reconciler.reconcile_once(set(env) if env else None)
    except AlreadyRunning as exc:
        fail(f"{exc}: its API did not answer; try again or stop it", 2)
    snapshot = result.snapshot
    if snapshot.store_error:
        raise StoreUnavailable(snapshot.store_error)
    if snapshot.source_error:
        errors.print(
            Text("source: ", style="yellow") + Text(safe(snapshot.source_error, MESSAGE_LIMIT))
        )
    for problem in snapshot.problems:
        tip = terminal.short(snapshot.tip.sha if snapshot.tip else None)
        errors.print(Text(f"rejected {tip}: " + safe(str(problem), MESSAGE_LIMIT)))
    if snapshot.state is None or snapshot.commit is None:
        fail("no valid desired state: nothing deployed")
    table = Table(
        "environment",
        "result",
        "groups",
        title=f"sync of {terminal.short(snapshot.commit.sha)}",
    )
    for outcome in result.environments:
        table.add_row(
            outcome.environment,
            str(outcome.result),
            ", ".join(f"{g.group}={g.state}" for g in outcome.groups) or outcome.error,
        )
    console.print(table)
    if result.failed or snapshot.problems:
        raise typer.Exit(1)


@app.command()
def rollback(
    env: Annotated[str, typer.Option("--env", "-e", help="Environment.")],
    group: Annotated[str, typer.Option("--group", "-g", help="Inventory group.")],
    to: Annotated[
        str | None, typer.Option("--to", help="Version to go back to (default: the last good).")
    ] = None,
    app_name: Annotated[
        str | None,
        typer.Option("--app", help="App to roll back (needed if the group has several)."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Commit (and push) the group's previous versions; the daemon then converges to them."""
    from reconciler.service import wiring  # the adapters: when needed

    loaded = source_settings(config)
    reconciler = wiring.build(loaded, record=False)
    snapshot = reconciler.refresh()
    environment = snapshot.state.environments.get(env) if snapshot.state else None
    if environment is None or group not in environment.groups:
        fail(f"no group {group!r} in environment {env!r}", 2)
    current = dict(environment.groups[group].apps)
    if to is not None:
        if not VERSION_RE.fullmatch(to):
            fail(f"invalid version {to!r}", 2)
        if app_name is None and len(current) > 1:
            fail(f"{group} runs {', '.join(current)}: choose one with --app", 2)
        target = {app_name or next(iter(current)): to}
    else:
        good = (RolloutState.SUCCEEDED, RolloutState.DEGRADED)
        previous = next(
            (
                r.apps
                for r in reconciler.store.rollouts(env, limit=200)
                if r.group == group and r.state in good and dict(r.apps) != current
            ),
            None,
        )
        if previous is None:
            fail("no earlier successful rollout recorded; pass --to VERSION")
        target = {a: v for a, v in previous.items() if a in current}
    message = messages.operator_rollback_message(
        env, group, {a: current[a] for a in target}, target, getpass.getuser()
    )
    result = wiring.git_writer(loaded).commit_group_versions(
        env_file=environment.source_file, group=group, versions=target, message=message
    )
    console.print(
        Text(
            f"rollback {env}/{group} -> {', '.join(f'{a}={v}' for a, v in target.items())}: "
            f"{result.status}"
            + (f" {result.sha[:12]}" if result.sha else "")
            + f" ({safe(result.detail, MESSAGE_LIMIT)})"
        )
    )
    if str(result.status) not in ("pushed", "noop"):
        raise typer.Exit(1)


def _set_suspended(environment: str, suspended: bool, config: Path | None) -> None:
    from reconciler.service import wiring  # the adapters: when needed

    loaded = settings(config)
    client = discover(loaded)
    if client is not None:
        daemon_call(lambda: client.set_suspended(environment, suspended))
    else:
        store = wiring.open_store(loaded)
        was = store.environment_status(environment).suspended
        store.update_environment(environment, time.time(), suspended=suspended)
        if was != suspended:
            wiring.event_log(loaded, store).emit(
                EventKind.ENVIRONMENT_SUSPENDED if suspended else EventKind.ENVIRONMENT_RESUMED,
                summary=f"{environment}: {'suspended' if suspended else 'resumed'} (CLI)",
                environment=environment,
            )
    console.print(f"{environment}: {'suspended' if suspended else 'resumed'}")


@app.command()
def suspend(environment: str, config: ConfigOption = None) -> None:
    """Stop changing an environment (it is still diffed and reported)."""
    _set_suspended(environment, True, config)


@app.command()
def resume(environment: str, config: ConfigOption = None) -> None:
    """Resume reconciling a suspended environment."""
    _set_suspended(environment, False, config)


@app.command()
def run(config: ConfigOption = None) -> None:
    """Run the daemon: poll/watch Git and take webhooks, reconcile, serve the API and metrics.

    Stops on SIGTERM/SIGINT after running playbook steps finish (daemon.shutdown_grace).
    """
    from reconciler.service import wiring  # the adapters: when needed

    configured = settings(config)
    logs.configure(configured.daemon.log_level, configured.daemon.log_format)
    loaded = source_settings(config)  # after: its warnings are logged in the daemon's format
    try:
        stopping = threading.Event()  # also ends the Git write-back's retry waits
        daemon = wiring.daemon(loaded, stopping=stopping)
        code = daemon.run(serve=wiring.serve(loaded))
    except AlreadyRunning as exc:
        fail(str(exc), 2)
    except (OSError, ValueError, RuntimeError, StoreError, StoreUnavailable) as exc:
        fail(f"cannot start: {exc}", 2)  # systemd's Restart= tries again
    raise typer.Exit(code)


@app.command()
def migrate(config: ConfigOption = None) -> None:
    """Bring the state store (SQLite or PostgreSQL) to this reconciler's schema; say what it did.

    The daemon (and ``sync``) migrate at start too. Safe while other replicas run or start: a
    migration is applied once, the others wait for it. Exit 2 when the store cannot be reached
    or refuses (a schema newer than this reconciler).
    """
    from reconciler.service import wiring  # the adapters: when needed

    loaded = settings(config)
    where = wiring.store_location(loaded)
    try:
        outcome = wiring.migrate_store(loaded)
    except (StoreError, StoreUnavailable) as exc:
        fail(f"cannot migrate: {exc}", 2)
    for migration in outcome.adopted:
        console.print(f"adopted {migration.version:04d}_{migration.name} (already in place)")
    for migration in outcome.applied:
        console.print(f"applied {migration.version:04d}_{migration.name}")
    if outcome.applied or outcome.adopted:
        console.print(f"{where}: schema {outcome.previous} -> {outcome.version}")
    else:
        console.print(f"{where}: schema {outcome.version}, up to date")


@app.command()
def demo(
    workdir: Annotated[
        Path | None, typer.Option(help="Keep everything here (default: temp).")
    ] = None,
    keep: Annotated[bool, typer.Option(help="Leave the fleet's apps running at the end.")] = False,
    ssh: Annotated[bool, typer.Option(help="Hosts are sshd instances on 127.0.1.N.")] = False,
) -> None:
    """Create a Git repo from desired-state-example and a local fleet; converge it twice."""
    from reconciler.demo import walkthrough

    raise typer.Exit(walkthrough.run(workdir=workdir, keep=keep, console=console, ssh=ssh))


@app.command()
def observe(
    config: ConfigOption = None,
    env: EnvOption = None,
    output: OutputOption = Output.TABLE,
    timeout: Annotated[float, typer.Option(help="Through a daemon: longest wait, s.")] = 600,
) -> None:
    """Look at what every observed host runs now; show each host/app that is not in sync.

    Through a running daemon the look happens at the start of a reconcile of the environment
    (which goes on as any reconcile would); without one it only looks, here, holding the state
    dir's lock. Exit 0 when nothing drifted (unknown is not drift), 1 when something did.
    """
    from reconciler.service import wiring  # the adapters: when needed

    loaded = source_settings(config)
    client = discover(loaded)
    rows: list[HostAppState] = []
    commit: str | None = None
    if client is not None:
        targets: list[str | None] = list(env) if env else [None]
        for target in targets:
            for detail in daemon_call(functools.partial(client.observe, target, timeout)):
                rows.extend(_state(detail.name, h) for h in detail.hosts)
        commit = daemon_call(client.status).source.valid_commit
    else:
        reconciler = wiring.build(loaded)
        try:
            with StateDirLock(loaded.lock_path):
                snapshot = reconciler.refresh()
                if snapshot.state is None or snapshot.commit is None:
                    fail("no valid desired state: nothing to observe")
                commit = snapshot.commit.sha
                for name, desired in snapshot.state.environments.items():
                    if not env or name in env:
                        rows.extend(reconciler.observe(desired, snapshot))
        except AlreadyRunning as exc:
            fail(f"{exc}: its API did not answer; try again or stop it", 2)
    rows = [r for r in rows if r.drift is not DriftClass.IN_SYNC]
    terminal.diff(console, rows, commit, output)
    if any(r.drift.drifted for r in rows):
        raise typer.Exit(1)


def _state(environment: str, host: HostApp) -> HostAppState:
    """A host of the daemon's answer as the planning core's state (to render it the same)."""
    return HostAppState(
        environment, host.group, host.host, host.app, host.desired, host.deployed,
        host.observed, host.observed_at, None, DriftClass(host.drift), None, host.flapping,
    )  # fmt: skip
