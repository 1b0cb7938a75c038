"""The read-only web page: fleet, rollouts, history and source, server-rendered with Jinja2.

Contract:

* ``install(app, control)`` adds the page's routes to the API's FastAPI app, so the page is
  served on the API's listener and behind the same ``report.guard`` (with a read token
  configured, the page needs it as the JSON API does: a reverse proxy adds the header). GET
  only: ``/`` (fleet), ``/environments/{env}`` and ``/environments/{env}/{group}`` (deep links),
  ``/rollouts/{id}``, ``/history?environment=&group=&result=``, ``/source`` and the vendored
  assets under ``/static/`` (versioned names, no CDN, no build step).
* Every page renders the read models only: ``report.status`` (through ``Control.status`` and
  ``Control.environments``) and ``report.history`` (the journal, as the API renders it); the
  ``render_*`` functions are pure functions of those models (the benchmark times them).
* Everything from Git (versions, messages, authors, problems, gate details) is escaped: the
  Jinja2 environment autoescapes every template, and pages carry a Content-Security-Policy
  that allows scripts, styles and connections to this origin only.
* Live updates are the script's job (``static/web-2.js``): it watches the JSON API named in
  ``data-watch`` (the events stream when the app has one, else polling)
  and, when an answer changes, fetches the page again and swaps its ``<main>``. One renderer:
  the server's templates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any

import jinja2
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, Response

from reconciler import __version__
from reconciler.report.history import Rollout, rollout_view
from reconciler.report.status import EnvironmentDetail, GroupView, HostApp, StatusView
from reconciler.states import EventKind, RolloutState

if TYPE_CHECKING:
    from reconciler.report.api import Control

__all__ = ["ASSETS", "Live", "install", "render_fleet", "render_rollout"]

# Vendored assets, versioned by name: a change is a new name, so caches never serve stale code.
ASSETS = {
    "web-2.js": "text/javascript",
    "web-1.css": "text/css",
    "favicon-1.svg": "image/svg+xml",
}
HISTORY_LIMIT = 500
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
LABELS = {
    # drift classes (host x app)
    "in_sync": "in sync",
    "pending": "pending",
    "out_of_band": "out of band",
    "unknown": "unknown",
    "new_host": "new host",
    # rollout, step and environment results
    "running": "running",
    "succeeded": "succeeded",
    "degraded": "degraded",
    "rolled_back": "rolled back",
    "failed": "failed",
    "superseded": "superseded",
    "interrupted": "interrupted",
    "applied": "applied",
    "quarantined": "quarantined",
    "deferred": "deferred",
    "": "not reconciled yet",
}


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "never"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 90:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reconciler.report", "templates"),
        autoescape=True,  # everything, whatever the template's name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["iso"] = _iso
    env.filters["duration"] = _duration
    env.filters["label"] = lambda state: LABELS.get(str(state), str(state).replace("_", " "))
    env.filters["short"] = lambda sha: (sha or "")[:12]
    env.globals["version"] = __version__
    env.globals["event_kinds"] = " ".join(kind.value for kind in EventKind)  # the stream's names
    return env


_JINJA = _environment()


@dataclass(frozen=True)
class Live:
    """How a page stays live: the events stream it follows, and (several replicas) how often
    it polls as well."""

    stream: str
    backup_poll_ms: int | None = None


def _page(template: str, **context: Any) -> str:
    context.setdefault("watch", ["/api/v1/status"])
    context.setdefault("events", None)
    context.setdefault("nav", "")
    return _JINJA.get_template(template).render(**context)


# ------------------------------------------------------------------ pure renderers


def _matrix(hosts: Sequence[HostApp]) -> dict[str, dict[str, dict[str, HostApp]]]:
    """group -> host -> app -> row, in the read model's order."""
    out: dict[str, dict[str, dict[str, HostApp]]] = {}
    for row in hosts:
        out.setdefault(row.group, {}).setdefault(row.host, {})[row.app] = row
    return out


def render_fleet(
    status: StatusView,
    environments: Sequence[EnvironmentDetail],
    rollouts: Sequence[Rollout],
    *,
    only: tuple[str, str | None] | None = None,
    events: Live | None = None,
) -> str:
    """The fleet (or one environment, or one group of it: ``only``)."""
    title = "Fleet" if only is None else "/".join(p for p in only if p)
    matrices = {e.name: _matrix(e.hosts) for e in environments}
    running = [r for r in rollouts if r.state == RolloutState.RUNNING]
    return _page(
        "fleet.html.j2",
        title=title,
        nav="fleet",
        status=status,
        environments=environments,
        matrices=matrices,
        rollouts=rollouts,
        running=running,
        only=only,
        events=events,
        watch=["/api/v1/status", "/api/v1/rollouts?limit=10"],
    )


def _group_of(environment: EnvironmentDetail, name: str) -> GroupView | None:
    return next((g for g in environment.groups if g.name == name), None)


def render_rollout(rollout: Rollout, *, events: Live | None = None) -> str:
    gates_failed = [
        g
        for step in rollout.steps or []
        for g in step.gate_results
        if isinstance(g, dict) and not g.get("passed")
    ]
    return _page(
        "rollout.html.j2",
        title=f"Rollout {rollout.environment}/{rollout.group}",
        nav="history",
        rollout=rollout,
        gates_failed=gates_failed,
        events=events,
        watch=[f"/api/v1/rollouts/{rollout.id}"],
    )


def render_history(
    status: StatusView,
    rollouts: Sequence[Rollout],
    filters: dict[str, str],
    *,
    events: Live | None = None,
) -> str:
    groups = sorted({g.name for e in status.environments for g in e.groups})
    return _page(
        "history.html.j2",
        title="History",
        nav="history",
        rollouts=rollouts,
        filters=filters,
        environments=[e.name for e in status.environments],
        groups=groups,
        results=[str(s) for s in RolloutState],
        events=events,
        watch=["/api/v1/rollouts?limit=20"],
    )


def render_source(status: StatusView, *, events: Live | None = None) -> str:
    return _page("source.html.j2", title="Source", nav="source", status=status, events=events)


def render_missing(what: str) -> str:
    return _page("missing.html.j2", title="Not found", what=what, watch=[])


# ------------------------------------------------------------------ routes


def _html(text: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status_code, headers=_HEADERS)


def install(
    app: FastAPI,
    control: Control,
    *,
    events_stream: str | None = None,
    backup_poll_ms: int | None = None,
) -> None:
    """Add the page's routes to ``app`` (the API of ``control``); see the module docstring.
    ``events_stream``: the path of the app's events stream (None: the page polls);
    ``backup_poll_ms``: with a stream, poll this often too (several replicas: a replica's
    stream carries only its own events)."""
    assets = {
        name: (resources.files("reconciler.report").joinpath("static", name).read_bytes(), kind)
        for name, kind in ASSETS.items()
    }

    # The stream is named by the caller: FastAPI's ``app.routes`` does not list the routes of
    # included routers, so the page cannot find it there.
    live = Live(events_stream, backup_poll_ms) if events_stream else None

    def rollouts(environment: str | None = None, limit: int = 20) -> list[Rollout]:
        return [rollout_view(r) for r in control.journal.rollouts(environment, limit)]

    def missing(what: str) -> HTMLResponse:
        return _html(render_missing(what), 404)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def fleet() -> HTMLResponse:
        return _html(
            render_fleet(
                control.status(),
                control.environments(with_hosts=True),
                rollouts(limit=10),
                events=live,
            )
        )

    @app.get("/environments/{environment}", response_class=HTMLResponse, include_in_schema=False)
    def environment_page(environment: str) -> HTMLResponse:
        return _scoped(environment, None)

    @app.get(
        "/environments/{environment}/{group}",
        response_class=HTMLResponse,
        include_in_schema=False,
    )
    def group_page(environment: str, group: str) -> HTMLResponse:
        return _scoped(environment, group)

    def _scoped(environment: str, group: str | None) -> HTMLResponse:
        found = control.environments(only=environment, with_hosts=True)
        if not found:
            return missing(f"environment {environment!r}")
        if group is not None:
            if _group_of(found[0], group) is None:
                return missing(f"group {group!r} of {environment!r}")
            view = found[0].model_copy(
                update={
                    "groups": [g for g in found[0].groups if g.name == group],
                    "hosts": [h for h in found[0].hosts if h.group == group],
                }
            )
            found = [view]
        recent = [r for r in rollouts(environment, 10) if group is None or r.group == group]
        return _html(
            render_fleet(control.status(), found, recent, only=(environment, group), events=live)
        )

    @app.get("/rollouts/{rollout_id}", response_class=HTMLResponse, include_in_schema=False)
    def rollout_page(rollout_id: str) -> HTMLResponse:
        record = control.journal.rollout(rollout_id)
        if record is None:
            return missing(f"rollout {rollout_id!r}")
        view = rollout_view(
            record, control.journal.steps(rollout_id), control.journal.run(record.run_id)
        )
        return _html(render_rollout(view, events=live))

    @app.get("/history", response_class=HTMLResponse, include_in_schema=False)
    def history(environment: str = "", group: str = "", result: str = "") -> HTMLResponse:
        chosen = rollouts(environment or None, HISTORY_LIMIT)
        chosen = [
            r
            for r in chosen
            if (not group or r.group == group) and (not result or r.state == result)
        ]
        filters = {"environment": environment, "group": group, "result": result}
        page = render_history(control.status(), chosen, filters, events=live)
        return _html(page)

    @app.get("/source", response_class=HTMLResponse, include_in_schema=False)
    def source() -> HTMLResponse:
        return _html(render_source(control.status(), events=live))

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in assets:
            raise HTTPException(404, "no such asset")
        body, kind = assets[name]
        return Response(
            body,
            media_type=kind,
            headers={
                "Cache-Control": "public, max-age=31536000, immutable",
                "X-Content-Type-Options": "nosniff",
            },
        )
