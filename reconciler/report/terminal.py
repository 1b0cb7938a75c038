"""Render the read models for people in a terminal (rich), or as JSON for scripts.

Contract: every renderer takes the read model (``report.status``, ``report.history``) or plain
rows, and an ``Output``: ``table`` fits an 80-column terminal by showing the essential
columns and wrapping (never truncating) names and messages; ``wide`` adds every column;
``json`` prints the model itself (for ``status`` and ``history`` the same JSON as the API).
Used by the CLI and the demo, through ``SafeConsole``: a rich console that shows control
characters in whatever it prints as escapes (``support.text``), so a commit subject, a Git
error or a daemon's answer can never drive the terminal.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Any

from rich.console import Console, ConsoleOptions, RenderableType
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from reconciler.plan.canary import EnvironmentPlan
from reconciler.plan.observed import HostAppState
from reconciler.report.events import EventView
from reconciler.report.history import Rollout
from reconciler.report.status import StatusView
from reconciler.states import DriftClass, ObservationStatus
from reconciler.support.text import escape_controls


class SafeConsole(Console):
    """A console whose printed text never carries control characters of its own (rich's
    styling, which it emits itself, is unaffected)."""

    def render(
        self, renderable: RenderableType, options: ConsoleOptions | None = None
    ) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            if segment.control or not segment.text:
                yield segment
            else:
                yield Segment(escape_controls(segment.text), segment.style)


class Output(StrEnum):
    TABLE = "table"
    WIDE = "wide"
    JSON = "json"


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def short(sha: str | None) -> str:
    return sha[:12] if sha else "-"


def _table(*columns: str, title: str | None = None) -> Table:
    """A table whose cells wrap, and fold words longer than the column: nothing is cut off."""
    table = Table(title=title, title_justify="left", expand=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _json(console: Console, data: Any) -> None:
    console.print_json(json.dumps(data, default=str), highlight=False)


# ------------------------------------------------------------------------------ status


def _fits(console: Console, widths: Sequence[int]) -> bool:
    """Whether columns of these content widths fit the console (borders and padding)."""
    return sum(widths) + 3 * len(widths) + 1 <= console.width


def status(console: Console, view: StatusView, output: Output, via: str) -> None:
    if output is Output.JSON:
        console.print_json(view.model_dump_json(), highlight=False)
        return
    wide = output is Output.WIDE
    rows = []
    for env in view.environments:
        total = sum(g.hosts for g in env.groups)
        in_sync = total - sum(g.drifted_hosts for g in env.groups)
        result = ("reconciling, " if env.reconciling else "") + (env.last_result or "-")
        if env.suspended and not wide:
            result += " (suspended)"
        rows.append(
            {
                "environment": env.name,
                "result": result,
                "hosts in sync": f"{in_sync}/{total}" if env.groups else "-",
                "applied": short(env.last_applied_commit),
                "attempted": short(env.last_attempted_commit),
                "suspended": "yes" if env.suspended else "no",
                "updated": when(env.updated_at),
                "owner": env.owner.replica if env.owner else "-",
            }
        )
    columns = ["environment", "result", "hosts in sync", "applied", "owner"]
    if wide:
        columns += ["attempted", "suspended", "updated"]
    else:  # drop optional columns rather than cut a name short
        while len(columns) > 3 and not _fits(
            console, [max([len(c), *(len(r[c]) for r in rows)]) for c in columns]
        ):
            columns.pop()
    table = Table(title_justify="left")
    for column in columns:
        table.add_column(column, no_wrap=column != "result", overflow="fold")
    for row in rows:
        table.add_row(*(row[c] for c in columns))
    console.print(table)
    for env in view.environments:
        if env.last_error:
            console.print(Text(f"{env.name}: {env.last_error}", style="yellow"))
    source = view.source
    commit = source.commit
    in_force = (
        f"{short(source.valid_commit)} ({commit.author}: {commit.subject})"
        if commit
        else short(source.valid_commit)
    )
    console.print(
        Text(f"source: commit in force {in_force}, last fetch {when(source.last_fetch_at)}")
        + Text(f" (from the {via})", style="dim")
    )
    if source.error:
        console.print(Text(f"source error: {source.error}", style="yellow"))
    for q in view.quarantines:
        console.print(
            Text("quarantined ", style="red")
            + Text(
                f"{q.environment}/{q.group} at {short(q.commit)} (rollout {q.rollout_id}): not "
                f"retried until a new commit changes its versions; revert {q.revert}"
            )
        )
    if source.problems:
        console.print(Text(f"rejected commit {short(source.rejected_commit)}:", style="red"))
        for problem in source.problems:
            console.print(Text(f"  {problem}"))


# ------------------------------------------------------------------------------ history


def _gate_text(gates: Sequence[dict[str, Any]]) -> str:
    if not gates:
        return ""
    parts = []
    for checkpoint in dict.fromkeys(str(g.get("checkpoint", "after_step")) for g in gates):
        mine = [g for g in gates if str(g.get("checkpoint", "after_step")) == checkpoint]
        passed = sum(bool(g.get("passed")) for g in mine)
        text = f"gates {checkpoint.replace('_', ' ')}: {passed}/{len(mine)} passed"
        bad = next((g for g in mine if not g.get("passed")), None)
        if bad is not None:
            text += f" ({bad.get('gate')} {bad.get('host') or ''}: {bad.get('detail')})"
        parts.append(text)
    return "; ".join(parts)


def _attempt_text(attempt: Any) -> str:
    """One playbook attempt of a step: ``#2 successful``, ``#1 unreachable web-03``."""
    unreachable = attempt.get("unreachable") or ()
    what = f"unreachable {', '.join(unreachable)}" if unreachable else attempt.get("outcome")
    return f"#{attempt.get('attempt')} {what}"


def _step_text(step: Any) -> tuple[str, str]:
    failed = [h for h, r in step.host_results.items() if r.get("status") != "ok"]
    share = f" ({step.percent}%)" if step.phase == "deploy" else ""
    detail = f"{len(step.hosts)} host(s) in this step" + (
        f", failed: {', '.join(failed)}" if failed else ""
    )
    if len(step.attempts) > 1 or any(a.get("unreachable") for a in step.attempts):
        tries = ", ".join(_attempt_text(a) for a in step.attempts)
        detail += f"; attempts: {tries}" + ("; retrying" if step.state == "running" else "")
    gates = _gate_text(step.gate_results)
    return f"{step.phase} step {step.index}{share}", detail + (f"; {gates}" if gates else "")


def history(console: Console, rollouts: Sequence[Rollout], output: Output) -> None:
    if output is Output.JSON:
        _json(console, [r.model_dump() for r in rollouts])
        return
    if output is Output.WIDE:
        table = _table(
            "started", "environment/group", "apps", "state", "commit", "trigger", "reason",
            title="rollouts (step rows: hosts changed by that step)",
        )  # fmt: skip
        for rollout in rollouts:
            apps = ", ".join(f"{a}={v}" for a, v in rollout.apps.items())
            table.add_row(
                when(rollout.started_at),
                f"{rollout.environment}/{rollout.group}",
                apps,
                rollout.state,
                short(rollout.commit),
                rollout.trigger,
                rollout.reason,
            )
            for step in rollout.steps or ():
                name, detail = _step_text(step)
                table.add_row("", f"  {name}", detail, step.state, "", "", "")
        console.print(table)
        return
    # One block per rollout, lines that wrap: full names at any terminal width.
    if not rollouts:
        console.print("no rollouts recorded")
    for rollout in rollouts:
        apps = ", ".join(f"{a}={v}" for a, v in rollout.apps.items())
        console.print(
            Text(f"{rollout.environment}/{rollout.group}", style="bold")
            + Text(f"  {rollout.state}  ", style=_state_style(rollout.state))
            + Text(f"{when(rollout.started_at)}  {apps}  commit {short(rollout.commit)}")
            + Text("" if rollout.trigger == "change" else f"  trigger {rollout.trigger}")
        )
        if rollout.reason:
            console.print(Text(f"  {rollout.reason}", style="dim"))
        for step in rollout.steps or ():
            name, detail = _step_text(step)
            console.print(Text(f"  {name}: {step.state}, {detail}"))


def _state_style(state: str) -> str:
    if state in ("succeeded", "in_sync", "applied"):
        return "green"
    if state in ("degraded", "superseded", "interrupted", "running"):
        return "yellow"
    return "red"


# ------------------------------------------------------------------------------ diff and plan


def _explain(s: HostAppState) -> str:
    """One host and app in words: its class, and the versions that make it so."""
    seen = s.observed if s.observed is not None else "nothing known"
    if s.observation is ObservationStatus.STOPPED:
        seen = "nothing (the app is stopped)"
    if s.drift is DriftClass.PENDING:
        text = f"pending: recorded {s.recorded}, desired {s.desired}"
    elif s.drift is DriftClass.NEW_HOST:
        text = f"new_host: never deployed by reconciler, desired {s.desired}"
    elif s.drift is DriftClass.OUT_OF_BAND:
        text = f"out_of_band: runs {seen}, recorded and desired {s.desired}"
    elif s.drift is DriftClass.UNKNOWN:
        text = f"unknown: {s.observation or 'not observed yet'}, recorded {s.recorded}"
    else:
        text = f"in_sync: {s.desired}"
    if s.drift is not DriftClass.UNKNOWN and s.observed_at is not None:
        text += f" (observed {seen} at {when(s.observed_at)})"
    if s.flapping:
        text += " (flapping: not healed again until an operator acts)"
    return text


def diff(
    console: Console, rows: Sequence[HostAppState], commit: str | None, output: Output
) -> None:
    """``rows``: the host/app pairs that are not in sync (every class but ``in_sync``)."""
    if output is Output.JSON:
        _json(
            console,
            {
                "commit": commit,
                "drift": [
                    {
                        "environment": r.environment,
                        "group": r.group,
                        "host": r.host,
                        "app": r.app,
                        "class": str(r.drift),
                        "recorded": r.recorded,
                        "observed": r.observed,
                        "observed_at": r.observed_at,
                        "desired": r.desired,
                        "since": r.since,
                        "flapping": r.flapping,
                    }
                    for r in rows
                ],
            },
        )
        return
    if not rows:
        console.print(f"in sync at {short(commit)}: no drift")
        return
    if output is Output.WIDE:
        table = _table(
            "environment", "group", "host", "app", "class", "recorded", "observed", "desired",
            "since", title=f"diff at {short(commit)}",
        )  # fmt: skip
        for r in rows:
            table.add_row(
                r.environment,
                r.group,
                r.host,
                r.app,
                str(r.drift) + (" (flapping)" if r.flapping else ""),
                r.recorded or "none",
                r.observed or "-",
                r.desired,
                when(r.since),
            )
        console.print(table)
    else:
        console.print(f"diff at {short(commit)}")
        where = None
        for r in rows:
            if (r.environment, r.group) != where:
                where = (r.environment, r.group)
                console.print(Text(f"{r.environment}/{r.group}", style="bold"))
            console.print(Text(f"  {r.host}  {r.app}  {_explain(r)}"))
    drifted = sum(1 for r in rows if r.drift.drifted)
    console.print(
        f"{drifted} host/app pair(s) out of sync"
        + (f", {len(rows) - drifted} unknown" if len(rows) > drifted else "")
    )


def plan(
    console: Console,
    plans: Sequence[tuple[EnvironmentPlan, bool]],
    commit: str | None,
    output: Output,
) -> None:
    """``plans``: each environment's plan and whether the environment is suspended."""
    if output is Output.JSON:
        _json(
            console,
            {
                "commit": commit,
                "environments": [
                    {
                        "environment": p.environment,
                        "suspended": suspended,
                        "groups": [
                            {
                                "group": g.group,
                                "apps": dict(g.apps),
                                "after": list(g.after),
                                "total_hosts": g.total_hosts,
                                "in_sync": g.in_sync,
                                "hosts_to_change": list(g.hosts_to_change),
                                "steps": [
                                    {
                                        "index": s.index,
                                        "percent": s.percent,
                                        "cohort_size": s.cohort_size,
                                        "hosts": list(s.hosts),
                                    }
                                    for s in g.steps
                                ],
                            }
                            for g in p.groups
                        ],
                    }
                    for p, suspended in plans
                ],
            },
        )
        return
    for env_plan, suspended in plans:
        note = Text(" (suspended: nothing will change)", style="yellow") if suspended else ""
        console.print(Text(f"{env_plan.environment} at {short(commit)}", style="bold") + note)
        for group in env_plan.groups:
            apps = ", ".join(f"{a}={v}" for a, v in group.apps.items())
            if group.in_sync:
                console.print(Text(f"  {group.group}: in sync ({apps})"))
                continue
            after = f" after {', '.join(group.after)}" if group.after else ""
            console.print(
                Text(
                    f"  {group.group}: {len(group.changes)}/{group.total_hosts} host(s) "
                    f"-> {apps}{after}"
                )
            )
            for step in group.steps:
                console.print(
                    Text(
                        f"    step {step.index} ({step.percent}%, cohort {step.cohort_size} "
                        f"cumulative): {', '.join(step.hosts)}"
                    )
                )


# ------------------------------------------------------------------------------ events
def event(console: Console, view: EventView, output: Output) -> None:
    """One event: a line (``table``), with its details (``wide``), or a JSON line (``json``)."""
    if output is Output.JSON:
        console.print(Text(view.model_dump_json()), soft_wrap=True)
        return
    console.print(
        Text(f"{when(view.at)}  ")
        + Text(
            f"{view.severity:<7} ",
            style={"warning": "yellow", "error": "red"}.get(view.severity, ""),
        )
        + Text(f"{view.kind:<22} ", style="bold")
        + Text(view.summary)
    )
    if output is Output.WIDE and view.details:
        console.print(Text("    " + json.dumps(view.details, default=str), style="dim"))
