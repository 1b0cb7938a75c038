"""The ``reconciler`` command line (typer + rich).

Exit codes: 0 success / no drift; 1 problems found (invalid state, drift, failed hosts);
2 usage or configuration errors.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from reconciler.desired import loading as validation
from reconciler.plan import canary as planning
from reconciler.settings import Settings
from reconciler.support import logs

app = typer.Typer(
    name="reconciler",
    help="GitOps for Ansible-managed hosts: converge a fleet to the versions declared in Git.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar="RECONCILER_CONFIG",
        help="Configuration YAML file.",
        exists=True,
        dir_okay=False,
    ),
]
EnvOption = Annotated[
    list[str] | None, typer.Option("--env", "-e", help="Only these environments (repeatable).")
]


class _State:
    config: Path | None = None


_state = _State()


@app.callback()
def _main(
    config: ConfigOption = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "warning",
    log_format: Annotated[str, typer.Option(help="json or console")] = "console",
) -> None:
    _state.config = config
    logs.configure(log_level, log_format)


def _settings() -> Settings:
    try:
        return Settings.load(_state.config)
    except Exception as exc:  # a configuration error is a usage error
        errors.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc


def _components(settings: Settings):  # type: ignore[no-untyped-def]
    from reconciler.service import wiring as components

    if not settings.source.url:
        errors.print(
            "[red]configuration error:[/red] source.url is not set "
            "(config file or RECONCILER_SOURCE__URL)"
        )
        raise typer.Exit(2)
    return components.build(settings)


def _use_config(config: Path | None) -> None:
    """A ``--config`` given after the command wins over one given before it."""
    if config:
        _state.config = config


def _reconciler(config: Path | None):  # type: ignore[no-untyped-def]
    _use_config(config)
    return _components(_settings())


def _store(config: Path | None):  # type: ignore[no-untyped-def]
    """The state store named by the configuration (no Git, no Ansible needed)."""
    from reconciler.record import sqlite as state_store

    _use_config(config)
    return state_store.SqliteStateStore(_settings().database_path)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "-"


@app.command()
def validate(
    path: Annotated[Path, typer.Argument(help="Desired-state repository (work tree).")] = Path("."),
) -> None:
    """Validate a desired-state repository; print file:line: message for every problem."""
    result = validation.load_repository(path)
    for problem in result.problems:
        console.print(str(problem), markup=False, highlight=False)
    if not result.ok:
        errors.print(f"{len(result.problems)} problem(s); nothing would be deployed")
        raise typer.Exit(1)
    assert result.state is not None
    environments = result.state.environments
    hosts = sum(len(g.hosts) for e in environments.values() for g in e.groups.values())
    console.print(
        f"ok: {len(environments)} environment(s), "
        f"{sum(len(e.groups) for e in environments.values())} group(s), {hosts} host(s)"
    )


def _desired(reconciler):  # type: ignore[no-untyped-def]
    snapshot = reconciler.refresh()
    if snapshot.source_error:
        errors.print(f"[yellow]source:[/yellow] {snapshot.source_error}", markup=True)
    for problem in snapshot.problems:
        errors.print(
            f"rejected {_short(snapshot.tip.sha if snapshot.tip else None)}: {problem}",
            markup=False,
        )
    if snapshot.state is None:
        errors.print("[red]no valid desired state available[/red]")
        raise typer.Exit(1)
    return snapshot


@app.command()
def diff(
    config: ConfigOption = None,
    env: EnvOption = None,
) -> None:
    """Desired (Git) vs recorded (deployed) versions; exit 1 when anything drifted."""
    from reconciler.rollout import reconciler as reconcile

    reconciler = _reconciler(config)
    snapshot = _desired(reconciler)
    table = Table(
        "environment",
        "group",
        "host",
        "app",
        "recorded",
        "desired",
        title=f"diff at {_short(snapshot.commit.sha)}",
    )
    drifted = 0
    for name, environment in snapshot.state.environments.items():
        if env and name not in env:
            continue
        recorded = reconcile.recorded_versions(reconciler.store, name)
        for row in planning.drift(environment, recorded):
            drifted += 1
            table.add_row(
                row.environment,
                row.group,
                row.host,
                row.app,
                row.recorded or "[dim]none[/dim]",
                f"[bold]{row.desired}[/bold]",
            )
    if drifted:
        console.print(table)
        console.print(f"{drifted} host/app pair(s) out of sync")
        raise typer.Exit(1)
    console.print("in sync: no drift")


@app.command()
def plan(config: ConfigOption = None, env: EnvOption = None) -> None:
    """Show what a sync would do: per group, the canary steps and their hosts."""
    from reconciler.rollout import reconciler as reconcile

    reconciler = _reconciler(config)
    snapshot = _desired(reconciler)
    status = {s.environment: s for s in reconciler.store.environment_statuses()}
    for name, environment in snapshot.state.environments.items():
        if env and name not in env:
            continue
        env_plan = planning.plan_environment(
            environment, reconcile.recorded_versions(reconciler.store, name)
        )
        suspended = (
            " [yellow](suspended: nothing will change)[/yellow]"
            if (name in status and status[name].suspended)
            else ""
        )
        console.print(f"[bold]{name}[/bold] at {_short(snapshot.commit.sha)}{suspended}")
        for group in env_plan.groups:
            apps = ", ".join(f"{a}={v}" for a, v in group.apps.items())
            if group.in_sync:
                console.print(f"  {group.group}: in sync ({apps})")
                continue
            after = f" after {', '.join(group.after)}" if group.after else ""
            console.print(
                f"  {group.group}: {len(group.changes)}/{group.total_hosts} host(s) "
                f"-> {apps}{after}"
            )
            for step in group.steps:
                console.print(
                    f"    step {step.index} ({step.percent}%, cohort "
                    f"{step.cohort_size}): {', '.join(step.hosts)}"
                )


class _ProgressReporter:
    """Draws rollout progress: one line per step, a spinner while the playbook runs."""

    def step_started(self, environment, group, phase, step, total_steps) -> None:  # type: ignore[no-untyped-def]
        verb = "deploying to" if phase == "deploy" else "[yellow]rolling back[/yellow]"
        share = f" ({step.percent}%)" if phase == "deploy" else ""
        console.print(
            f"[cyan]{environment}/{group}[/cyan] {phase} step {step.index}/{total_steps}"
            f"{share}: {verb} {len(step.hosts)} host(s) {', '.join(step.hosts)}"
        )
        self._status = console.status(f"{environment}/{group}: running playbook")
        self._status.start()

    def step_finished(self, environment, group, phase, step, result) -> None:  # type: ignore[no-untyped-def]
        self._status.stop()
        failed = result.failed()
        colour = "green" if not failed else "red"
        console.print(
            f"  [{colour}]{result.outcome}[/{colour}] in {result.duration_s:.1f}s: "
            f"{len(result.succeeded())} ok, {len(failed)} failed"
        )
        for host in failed:
            console.print(
                f"    [red]{host}[/red]: {result.hosts[host].message}", markup=True, highlight=False
            )

    def gates_finished(self, environment, group, phase, step, results) -> None:  # type: ignore[no-untyped-def]
        passed = sum(r.passed for r in results)
        colour = "green" if passed == len(results) else "red"
        console.print(f"  health gates: [{colour}]{passed}/{len(results)} passed[/{colour}]")
        for result in results:
            if not result.passed:
                console.print(
                    f"    [red]{result.gate}[/red] {result.host or ''}: {result.detail}",
                    highlight=False,
                )


def _daemon(config: Path | None):  # type: ignore[no-untyped-def]
    """A client of the running daemon, or None (then commands use the state store)."""
    from reconciler.report.client import DaemonClient

    _use_config(config)
    settings = _settings()
    try:
        return DaemonClient.discover(settings)
    except (OSError, ValueError) as exc:
        errors.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc


def _daemon_call(call):  # type: ignore[no-untyped-def]
    from reconciler.report.client import DaemonError

    try:
        return call()
    except DaemonError as exc:
        errors.print(f"[red]daemon:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from exc


def _sync_through_daemon(client, env: list[str] | None, timeout: float) -> None:  # type: ignore[no-untyped-def]
    failed = False
    table = Table("environment", "result", "groups", title=f"sync through {client.url}")
    for environment in env or [None]:
        with console.status(f"daemon reconciling {environment or 'every environment'}"):
            answer = _daemon_call(lambda e=environment: client.sync(e, timeout))
        for name, outcome in answer["finished"].items():
            if outcome is None:
                failed = True
                table.add_row(name, "[yellow]still running[/yellow]", "")
                continue
            failed = failed or outcome["result"] not in reconcile_ok_results()
            table.add_row(
                name,
                outcome["result"],
                ", ".join(f"{g}={o['state']}" for g, o in outcome["groups"].items()),
            )
    console.print(table)
    if failed:
        raise typer.Exit(1)


def reconcile_ok_results() -> frozenset[str]:
    from reconciler.rollout.reconciler import OK_RESULTS

    return OK_RESULTS


@app.command()
def sync(
    config: ConfigOption = None,
    env: EnvOption = None,
    once: Annotated[bool, typer.Option("--once", help="Reconcile now, in the foreground.")] = True,
    timeout: Annotated[float, typer.Option(help="Through a daemon: longest wait, s.")] = 3600,
) -> None:
    """Reconcile now in the foreground; exit 1 when any host or group failed.

    With a running daemon the reconcile runs there (this waits for it); otherwise here,
    holding the state dir's lock.
    """
    from reconciler.service.daemon import AlreadyRunning, StateDirLock

    client = _daemon(config)
    if client is not None:
        _sync_through_daemon(client, env, timeout)
        return
    reconciler = _reconciler(config)
    reconciler.reporter = _ProgressReporter()
    try:
        with StateDirLock(reconciler.settings.lock_path):
            resumed = reconciler.resume_interrupted(reconciler.refresh())
            for record in resumed:
                errors.print(
                    f"[yellow]resumed[/yellow] interrupted rollout {record.id} "
                    f"({record.environment}/{record.group})"
                )
            result = reconciler.reconcile_once(set(env) if env else None)
    except AlreadyRunning as exc:
        errors.print(f"[red]{exc}[/red]: its API did not answer; try again or stop it")
        raise typer.Exit(2) from exc
    snapshot = result.snapshot
    if snapshot.source_error:
        errors.print(f"[yellow]source:[/yellow] {snapshot.source_error}")
    for problem in snapshot.problems:
        errors.print(
            f"rejected {_short(snapshot.tip.sha if snapshot.tip else None)}: {problem}",
            markup=False,
        )
    if snapshot.state is None:
        errors.print("[red]no valid desired state: nothing deployed[/red]")
        raise typer.Exit(1)
    table = Table("environment", "result", "groups", title=f"sync of {_short(snapshot.commit.sha)}")
    for outcome in result.environments:
        table.add_row(
            outcome.environment,
            outcome.result,
            ", ".join(f"{g.group}={g.state}" for g in outcome.groups),
        )
    console.print(table)
    if result.failed or snapshot.problems:
        raise typer.Exit(1)


def _store_status(config: Path | None) -> dict:  # type: ignore[type-arg]
    """The state store's view in the shape of ``GET /api/v1/status``."""
    import json

    from reconciler.rollout import reconciler as reconcile

    store = _store(config)
    problems = json.loads(store.get_meta(reconcile.META_PROBLEMS) or "[]")
    fetched = store.get_meta(reconcile.META_LAST_FETCH)
    return {
        "daemon": None,
        "source": {
            "valid_commit": store.get_meta(reconcile.META_LAST_VALID),
            "rejected_commit": store.get_meta(reconcile.META_LAST_INVALID) if problems else None,
            "problems": problems,
            "error": store.get_meta(reconcile.META_SOURCE_ERROR) or "",
            "last_fetch_at": float(fetched) if fetched else None,
        },
        "environments": [
            {
                "name": s.environment,
                "suspended": s.suspended,
                "reconciling": False,
                "last_result": s.last_result,
                "last_error": s.last_error,
                "last_attempted_commit": s.last_attempted_commit,
                "last_applied_commit": s.last_applied_commit,
                "updated_at": s.updated_at,
                "groups": [],
                "hosts": len({d.host for d in store.deployed(s.environment)}),
            }
            for s in store.environment_statuses()
        ],
        "quarantines": [
            {
                "environment": q.environment,
                "group": q.group,
                "commit": q.commit,
                "rollout_id": q.rollout_id,
                "revert": q.revert,
            }
            for q in store.quarantines()
        ],
    }


@app.command()
def status(config: ConfigOption = None) -> None:
    """Per environment: suspended, applied/attempted commits, last result and errors."""
    client = _daemon(config)
    data = _daemon_call(client.status) if client else _store_status(config)
    table = Table(
        "environment", "suspended", "applied", "attempted", "result", "hosts", "updated", "error"
    )
    for item in data["environments"]:
        groups = item["groups"]
        hosts = (
            f"{sum(g['hosts'] - g['drifted_hosts'] for g in groups)}/"
            f"{sum(g['hosts'] for g in groups)} in sync"
            if groups
            else str(item.get("hosts", "-"))
        )
        table.add_row(
            item["name"],
            "yes" if item["suspended"] else "no",
            _short(item["last_applied_commit"]),
            _short(item["last_attempted_commit"]),
            ("[cyan]reconciling[/cyan] " if item["reconciling"] else "")
            + (item["last_result"] or "-"),
            hosts,
            _when(item["updated_at"]),
            item["last_error"][:120],
        )
    console.print(table)
    source = data["source"]
    via = f"daemon {client.url} (pid {data['daemon']['pid']})" if client else "state store"
    console.print(
        f"source: last valid commit {_short(source['valid_commit'])}, last fetch "
        f"{_when(source['last_fetch_at'])} [dim](from the {via})[/dim]"
    )
    if source["error"]:
        console.print(f"[yellow]source error:[/yellow] {source['error']}", highlight=False)
    for q in data["quarantines"]:
        console.print(
            f"[red]quarantined[/red] {q['environment']}/{q['group']} at "
            f"{_short(q['commit'])} (rollout {q['rollout_id']}): not retried until "
            f"a new commit changes its versions; revert {q['revert']}",
            highlight=False,
        )
    if source["problems"]:
        console.print(f"[red]rejected commit {_short(source['rejected_commit'])}:[/red]")
        for problem in source["problems"]:
            console.print(f"  {problem}", markup=False, highlight=False)


@app.command()
def history(
    config: ConfigOption = None,
    env: Annotated[str | None, typer.Option("--env", "-e")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 20,
    steps: Annotated[bool, typer.Option(help="Show each rollout's steps.")] = True,
) -> None:
    """Rollouts, newest first, with their steps and outcome."""
    from reconciler.record.sqlite import RolloutRecord, StepRecord

    client = _daemon(config)
    if client is not None:
        records = []
        for item in _daemon_call(lambda: client.rollouts(env, limit)):
            full = _daemon_call(lambda i=item: client.rollout(i["id"])) if steps else item
            found = [
                StepRecord(
                    item["id"],
                    s["phase"],
                    s["index"],
                    s["percent"],
                    tuple(s["hosts"]),
                    s["state"],
                    s["host_results"],
                    s["gate_results"],
                    "",
                    s["started_at"],
                    s["finished_at"],
                )
                for s in full.get("steps") or []
            ]
            records.append(
                (
                    RolloutRecord(
                        item["id"],
                        "",
                        item["environment"],
                        item["group"],
                        item["commit"],
                        item["apps"],
                        item["state"],
                        item["reason"],
                        item["started_at"],
                        item["finished_at"],
                    ),
                    found,
                )
            )
    else:
        store = _store(config)
        records = [(r, store.steps(r.id) if steps else []) for r in store.rollouts(env, limit)]
    table = Table(
        "started", "environment", "group", "commit", "apps", "state", "reason", title="rollouts"
    )
    for rollout, rollout_steps in records:
        table.add_row(
            _when(rollout.started_at),
            rollout.environment,
            rollout.group,
            _short(rollout.commit),
            ", ".join(f"{a}={v}" for a, v in rollout.apps.items()),
            rollout.state,
            rollout.reason[:80],
        )
        if steps:
            for step in rollout_steps:
                failed = [h for h, r in step.host_results.items() if r.get("status") != "ok"]
                detail = f"{len(step.hosts)} host(s)" + (
                    f", failed: {', '.join(failed)}" if failed else ""
                )
                gates = step.gate_results
                passed = sum(bool(g.get("passed")) for g in gates)
                gate_text = f"gates {passed}/{len(gates)} passed" if gates else ""
                bad = next((g for g in gates if not g.get("passed")), None)
                if bad:
                    gate_text += f": {bad.get('gate')} {bad.get('host') or ''} {bad.get('detail')}"
                table.add_row(
                    "", "", f"  {step.phase} {step.index}", "", detail, step.state, gate_text[:80]
                )
    console.print(table)


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
    import getpass

    from reconciler.desired import messages as revert_commits
    from reconciler.desired import schema as desired_state

    reconciler = _reconciler(config)
    snapshot = _desired(reconciler)
    environment = snapshot.state.environments.get(env)
    if environment is None or group not in environment.groups:
        errors.print(f"[red]no group {group!r} in environment {env!r}[/red]")
        raise typer.Exit(2)
    current = dict(environment.groups[group].apps)
    if to is not None:
        if not desired_state.VERSION_RE.fullmatch(to):
            errors.print(f"[red]invalid version {to!r}[/red]")
            raise typer.Exit(2)
        if app_name is None and len(current) > 1:
            errors.print(f"[red]{group} runs {', '.join(current)}: choose one with --app[/red]")
            raise typer.Exit(2)
        target = {app_name or next(iter(current)): to}
    else:
        previous = next(
            (
                r.apps
                for r in reconciler.store.rollouts(env, limit=200)
                if r.group == group and r.state == "succeeded" and dict(r.apps) != current
            ),
            None,
        )
        if previous is None:
            errors.print("[red]no earlier successful rollout recorded; pass --to VERSION[/red]")
            raise typer.Exit(1)
        target = {a: v for a, v in previous.items() if a in current}
    message = revert_commits.operator_rollback_message(
        env, group, {a: current[a] for a in target}, target, getpass.getuser()
    )
    result = reconciler.reverter.commit_group_versions(
        env_file=environment.source_file, group=group, versions=target, message=message
    )
    console.print(
        f"rollback {env}/{group} -> "
        f"{', '.join(f'{a}={v}' for a, v in target.items())}: {result.status}"
        + (f" {result.sha[:12]}" if result.sha else "")
        + f" ({result.detail})"
    )
    if result.status not in ("pushed", "noop"):
        raise typer.Exit(1)


def _set_suspended(environment: str, suspended: bool, config: Path | None) -> None:
    client = _daemon(config)
    if client is not None:
        _daemon_call(lambda: client.set_suspended(environment, suspended))
    else:
        store = _store(config)
        store.update_environment(environment, time.time(), suspended=suspended)
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
    from reconciler.report import api
    from reconciler.service import daemon

    _use_config(config)
    settings = _settings()
    logs.configure(settings.daemon.log_level, settings.daemon.log_format)
    reconciler = _components(settings)
    try:
        serve = api.start_server(settings)
        code = daemon.Daemon(settings, reconciler).run(serve=serve)
    except daemon.AlreadyRunning as exc:
        errors.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    except (OSError, ValueError, RuntimeError) as exc:
        errors.print(f"[red]cannot start:[/red] {exc}")
        raise typer.Exit(2) from exc
    raise typer.Exit(code)


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


def main() -> None:
    os.environ.setdefault("ANSIBLE_NOCOLOR", "1")
    app()
