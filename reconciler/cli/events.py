"""``reconciler events``: the event log, newest last, and ``--follow`` its live stream.

Through the running daemon when there is one (``GET /api/v1/events``, and its event stream for
``--follow``); otherwise read from the state store (read-only: nothing is written), where
``--follow`` is refused (exit 2: only a daemon streams). ``-o json`` prints one JSON object per
line (the API's event shape), also while following. A follow ends when the daemon shuts down
(exit 0) or the connection fails (exit 1).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from reconciler.cli.app import ConfigOption, OutputOption, app, console, fail, settings
from reconciler.cli.daemon_calls import daemon_call, discover
from reconciler.report import terminal
from reconciler.report.terminal import Output
from reconciler.states import EventKind, Severity


@app.command()
def events(
    config: ConfigOption = None,
    env: Annotated[str | None, typer.Option("--env", "-e", help="Only this environment.")] = None,
    group: Annotated[str | None, typer.Option("--group", "-g", help="Only this group.")] = None,
    kind: Annotated[
        list[EventKind] | None, typer.Option("--kind", "-k", help="Only these kinds (repeatable).")
    ] = None,
    severity: Annotated[
        Severity | None, typer.Option("--severity", help="At least this severity.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="The newest N events.")] = 50,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Then print new events as they happen.")
    ] = False,
    output: OutputOption = Output.TABLE,
) -> None:
    """What happened: commits, rollouts, steps, gates, rollbacks, reverts, drift, the source."""
    from reconciler.report.events import EventView

    loaded = settings(config)
    filters: dict[str, Any] = {
        k: v
        for k, v in {
            "environment": env,
            "group": group,
            "kind": [str(k) for k in kind or []],
            "min_severity": str(severity) if severity else None,
        }.items()
        if v
    }
    client = discover(loaded)
    if client is not None:
        page = daemon_call(lambda: client.events({**filters, "limit": limit}))
        found = list(reversed(page.events))
    elif follow:
        fail("--follow needs a running daemon (none found: api.url or state_dir/daemon.json)", 2)
    else:
        from reconciler.service import wiring  # the adapters: when needed

        store = wiring.open_store(loaded, read_only=True)
        records = store.events(
            environment=env,
            group=group,
            kinds=kind or None,
            severities={s for s in Severity if s.at_least(severity)} if severity else None,
            limit=limit,
        )
        found = [EventView.of(e) for e in reversed(records)]
    for event in found:
        terminal.event(console, event, output)
    if client is None or not follow:
        return
    from reconciler.report.client import DaemonError

    if found:
        after = found[-1].id
    else:  # nothing matched yet: from the newest event of all on
        newest = daemon_call(lambda: client.events({"limit": 1})).events
        after = newest[0].id if newest else 0
    try:
        for item in client.stream(filters, after):
            if item is not None:
                terminal.event(console, item, output)
    except DaemonError as exc:
        fail(f"daemon: {exc}")
