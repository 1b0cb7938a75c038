"""Read commands: ``validate``, ``diff``, ``plan``, ``status``, ``history``.

None of them writes anywhere: the desired state is refreshed without recording (the store's
source facts stay what the daemon wrote), and the store is only read. ``status`` and
``history`` ask the running daemon when there is one and otherwise build the very same read
models from the store.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from reconciler.cli.app import (
    MESSAGE_LIMIT,
    ConfigOption,
    EnvOption,
    OutputOption,
    _state,
    app,
    console,
    errors,
    fail,
    settings,
    source_settings,
)
from reconciler.cli.daemon_calls import daemon_call, discover
from reconciler.plan import canary
from reconciler.plan import observed as drift_model
from reconciler.record import StoreUnavailable
from reconciler.report import history as history_model
from reconciler.report import status as read_model
from reconciler.report import terminal
from reconciler.report.terminal import Output
from reconciler.source.refresh import DesiredSnapshot
from reconciler.states import DriftClass
from reconciler.support.text import safe

if TYPE_CHECKING:
    from reconciler.rollout.reconciler import Reconciler


@app.command()
def validate(
    path: Annotated[Path, typer.Argument(help="Desired-state repository (work tree).")] = Path("."),
    config: ConfigOption = None,
) -> None:
    """Validate a desired-state repository; print file:line: message for every problem.

    Reads within the configuration's limits (file and repository sizes, YAML depth, nodes).
    Nothing from the repository runs: inventories are parsed in a bounded child process with
    the static plugins only. With a configuration file (--config), its vault password files,
    dynamic-inventory opt-ins and inventory cache apply too.
    """
    from reconciler.service import wiring  # the adapters: when needed

    loaded = settings(config)
    result = wiring.load_repository(
        path, limits=loaded.limits, settings=loaded if config or _state.config else None
    )
    for problem in result.problems:
        console.print(Text(safe(str(problem), MESSAGE_LIMIT)))
    if result.state is None:
        fail(f"{len(result.problems)} problem(s); nothing would be deployed")
    environments = result.state.environments
    hosts = sum(len(g.hosts) for e in environments.values() for g in e.groups.values())
    console.print(
        f"ok: {len(environments)} environment(s), "
        f"{sum(len(e.groups) for e in environments.values())} group(s), {hosts} host(s)"
    )


def _desired(snapshot: DesiredSnapshot) -> DesiredSnapshot:
    """Say what is wrong with the source; exit 1 when there is no valid desired state (2, as
    every command, when the state store is unavailable)."""
    if snapshot.store_error:
        raise StoreUnavailable(snapshot.store_error)
    if snapshot.source_error:
        shown = terminal.short(snapshot.commit.sha if snapshot.commit else None)
        errors.print(
            Text(f"source: fetch failed, showing commit {shown} as of the last fetch: ", "yellow")
            + Text(safe(snapshot.source_error, MESSAGE_LIMIT))
        )
    for problem in snapshot.problems:
        errors.print(
            Text(
                f"rejected {terminal.short(snapshot.tip.sha if snapshot.tip else None)}: "
                + safe(str(problem), MESSAGE_LIMIT)
            )
        )
    if snapshot.state is None:
        fail("no valid desired state available")
    return snapshot


def _read(config: Path | None) -> tuple[Reconciler, DesiredSnapshot]:
    from reconciler.service import wiring  # the adapters: when needed

    reconciler = wiring.build(source_settings(config), record=False)
    return reconciler, _desired(reconciler.refresh())


@app.command()
def diff(
    config: ConfigOption = None, env: EnvOption = None, output: OutputOption = Output.TABLE
) -> None:
    """Desired (Git) vs recorded (deployed) vs observed (what hosts report) versions.

    Each host/app that is not in sync is shown with its class: pending (desired != recorded),
    new_host (never deployed), out_of_band (the host runs another version than recorded) or
    unknown (not observed, or unreachable). Exit 0 when nothing drifted (unknown is not drift),
    1 when anything did, 2 when the fetch failed (the diff shown is then as of the last
    fetched commit, and may be stale).
    """
    reconciler, snapshot = _read(config)
    assert snapshot.state is not None and snapshot.commit is not None
    store = reconciler.store
    rows = [
        state
        for name, environment in snapshot.state.environments.items()
        if not env or name in env
        for state in drift_model.host_states(
            environment,
            store.recorded_versions(name),
            store.observed(name),
            store.drift_marks(name),
            unobserved={g.name for g in environment.groups.values() if g.observe is None},
        )
        if state.drift is not DriftClass.IN_SYNC
    ]
    terminal.diff(console, rows, snapshot.commit.sha, output)
    if snapshot.source_error:
        raise typer.Exit(2)
    if any(r.drift.drifted for r in rows):
        raise typer.Exit(1)


@app.command()
def plan(
    config: ConfigOption = None, env: EnvOption = None, output: OutputOption = Output.TABLE
) -> None:
    """Show what a sync would do: per group, the canary steps and their hosts."""
    reconciler, snapshot = _read(config)
    assert snapshot.state is not None and snapshot.commit is not None
    suspended = {s.environment for s in reconciler.store.environment_statuses() if s.suspended}
    plans = [
        (
            canary.plan_environment(environment, reconciler.store.recorded_versions(name)),
            name in suspended,
        )
        for name, environment in snapshot.state.environments.items()
        if not env or name in env
    ]
    terminal.plan(console, plans, snapshot.commit.sha, output)
    if snapshot.source_error:
        raise typer.Exit(2)


@app.command()
def status(config: ConfigOption = None, output: OutputOption = Output.TABLE) -> None:
    """Per environment: result, hosts in sync, commits, errors; the source; quarantines."""
    from reconciler.service import wiring  # the adapters: when needed

    loaded = settings(config)
    client = discover(loaded)
    if client is not None:
        view = daemon_call(client.status)
        terminal.status(
            console,
            view,
            output,
            f"daemon {client.url} (pid {view.daemon.pid if view.daemon else '?'})",
        )
        return
    store = wiring.open_store(loaded, read_only=True)
    snapshot = None
    if loaded.source.url:
        snapshot = wiring.desired_source(loaded, store, record=False).refresh(fetch=False)
    holders = wiring.lease_holders(store)  # PostgreSQL: the replicas' leases; SQLite: nobody
    view = read_model.build(
        store,
        snapshot,
        url=loaded.source.url,
        branch=loaded.source.branch,
        owners=read_model.lease_owners(holders) if holders is not None else None,
    )
    terminal.status(console, view, output, "state store")


@app.command()
def history(
    config: ConfigOption = None,
    env: Annotated[str | None, typer.Option("--env", "-e")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 20,
    steps: Annotated[bool, typer.Option(help="Show each rollout's steps.")] = True,
    output: OutputOption = Output.TABLE,
) -> None:
    """Rollouts, newest first, with their steps (hosts per step) and outcome."""
    from reconciler.service import wiring  # the adapters: when needed

    loaded = settings(config)
    client = discover(loaded)
    if client is not None:
        rollouts = daemon_call(lambda: client.rollouts(env, limit))
        if steps:
            rollouts = [daemon_call(functools.partial(client.rollout, r.id)) for r in rollouts]
    else:
        store = wiring.open_store(loaded, read_only=True)
        rollouts = [
            history_model.rollout_view(r, store.steps(r.id) if steps else None)
            for r in store.rollouts(env, limit)
        ]
    terminal.history(console, rollouts, output)
