"""The daemon's HTTP API (FastAPI, served by uvicorn on loopback by default).

Read-only: ``/healthz``, ``/readyz``, ``/metrics``, ``GET /api/v1/...`` (status, environments
with groups and per-host desired vs deployed, rollouts with their steps). Mutating calls
(``POST /api/v1/sync``, suspend, resume) need ``Authorization: Bearer <token>`` with the token
read from ``api.token_file``; without a token file they are refused (403). Webhooks
(``POST /api/v1/webhooks/{github,gitlab,gitea}``) authenticate by their own signatures.
The OpenAPI spec is at ``/openapi.json``.
"""

# No ``from __future__ import annotations``: FastAPI reads the route functions' annotations,
# and they name dependencies local to ``create_app``.
import hmac
import json
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

import structlog
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from reconciler import __version__
from reconciler.edges import webhooks
from reconciler.plan import canary as planning
from reconciler.record.sqlite import RolloutRecord, StepRecord
from reconciler.report.metrics import CONTENT_TYPE
from reconciler.rollout.reconciler import (
    META_LAST_FETCH,
    META_LAST_INVALID,
    META_LAST_VALID,
    META_PROBLEMS,
    META_SOURCE_ERROR,
    EnvironmentOutcome,
    recorded_versions,
)
from reconciler.service.daemon import Daemon
from reconciler.settings import Settings, read_secret
from reconciler.support.redaction import redact

log = structlog.get_logger(__name__)


# ---------------------------------------------------------------- models
class GroupSummary(BaseModel):
    name: str
    apps: dict[str, str] = Field(description="Desired versions.")
    hosts: int
    drifted_hosts: int
    in_sync: bool
    quarantined: bool
    after: list[str]


class EnvironmentSummary(BaseModel):
    name: str
    suspended: bool
    reconciling: bool
    last_result: str
    last_error: str
    last_attempted_commit: str | None
    last_applied_commit: str | None
    updated_at: float | None
    groups: list[GroupSummary]


class HostApp(BaseModel):
    group: str
    host: str
    app: str
    desired: str
    deployed: str | None
    in_sync: bool


class EnvironmentDetail(EnvironmentSummary):
    hosts: list[HostApp]


class SourceStatus(BaseModel):
    url: str
    branch: str
    up: bool
    error: str
    valid_commit: str | None
    rejected_commit: str | None
    problems: list[str]
    last_fetch_at: float | None


class Quarantine(BaseModel):
    environment: str
    group: str
    commit: str | None
    rollout_id: str | None
    reason: str
    revert: str
    created_at: float


class Status(BaseModel):
    version: str
    daemon: dict[str, Any]
    source: SourceStatus
    environments: list[EnvironmentSummary]
    quarantines: list[Quarantine]


class Step(BaseModel):
    phase: str
    index: int
    percent: int
    hosts: list[str]
    state: str
    host_results: dict[str, Any]
    gate_results: list[Any]
    started_at: float
    finished_at: float | None


class Rollout(BaseModel):
    id: str
    environment: str
    group: str
    commit: str | None
    apps: dict[str, str]
    state: str
    reason: str
    started_at: float
    finished_at: float | None
    steps: list[Step] | None = None


class SyncRequest(BaseModel):
    environment: str | None = Field(default=None, description="Only this environment.")
    wait: bool = Field(default=False, description="Answer when the reconcile has finished.")
    timeout: float = Field(default=600.0, gt=0, le=3600, description="Longest wait, seconds.")


class SyncOutcome(BaseModel):
    result: str
    groups: dict[str, dict[str, Any]]


class SyncResponse(BaseModel):
    queued: list[str]
    finished: dict[str, SyncOutcome | None] = Field(
        default_factory=dict, description="With wait: each environment's outcome (null: timeout)."
    )


class Suspension(BaseModel):
    environment: str
    suspended: bool


class WebhookResult(BaseModel):
    result: str
    detail: str


# ---------------------------------------------------------------- helpers
def _rollout(record: RolloutRecord, steps: list[StepRecord] | None = None) -> Rollout:
    return Rollout(
        id=record.id,
        environment=record.environment,
        group=record.group,
        commit=record.commit,
        apps=dict(record.apps),
        state=record.state,
        reason=record.reason,
        started_at=record.started_at,
        finished_at=record.finished_at,
        steps=None
        if steps is None
        else [
            Step(
                phase=s.phase,
                index=s.index,
                percent=s.percent,
                hosts=list(s.hosts),
                state=s.state,
                host_results=dict(s.host_results),
                gate_results=list(s.gate_results),
                started_at=s.started_at,
                finished_at=s.finished_at,
            )
            for s in steps
        ],
    )


def _outcome(outcome: EnvironmentOutcome) -> SyncOutcome:
    return SyncOutcome(
        result=outcome.result,
        groups={
            g.group: {
                "state": g.state,
                "rollout_id": g.rollout_id,
                "changed": list(g.changed_hosts),
                "failed": dict(g.failed_hosts),
                "reason": g.reason,
                "revert": g.revert,
            }
            for g in outcome.groups
        },
    )


def create_app(daemon: Daemon, settings: Settings) -> FastAPI:
    """The API of one daemon. Secrets are read once, here."""
    token = read_secret(settings.api.token_file)
    secrets = {
        "github": read_secret(settings.webhooks.github_secret_file),
        "gitlab": read_secret(settings.webhooks.gitlab_token_file),
        "gitea": read_secret(settings.webhooks.gitea_secret_file),
    }
    store = daemon.store
    bearer = HTTPBearer(auto_error=False, description="Token from api.token_file.")
    app = FastAPI(
        title="reconciler",
        version=__version__,
        description="GitOps for Ansible-managed hosts: status, drift, rollouts, sync.",
    )

    def authorized(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if token is None:
            raise HTTPException(403, "mutating calls are disabled: configure api.token_file")
        given = credentials.credentials if credentials else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    auth = [Depends(authorized)]

    def summaries(with_hosts: bool = False) -> list[EnvironmentDetail]:
        snapshot = daemon.snapshot
        state = snapshot.state if snapshot else None
        statuses = {s.environment: s for s in store.environment_statuses()}
        quarantines = {(q.environment, q.group) for q in store.quarantines()}
        running = daemon.running()
        names = sorted(set(statuses) | set(state.environments if state else ()))
        result = []
        for name in names:
            status = store.environment_status(name)
            environment = state.environments.get(name) if state else None
            groups: list[GroupSummary] = []
            hosts: list[HostApp] = []
            if environment is not None:
                recorded = recorded_versions(store, name)
                drift = planning.drift(environment, recorded)
                for group in environment.groups.values():
                    drifted = {r.host for r in drift if r.group == group.name}
                    groups.append(
                        GroupSummary(
                            name=group.name,
                            apps=dict(group.apps),
                            hosts=len(group.hosts),
                            drifted_hosts=len(drifted),
                            in_sync=not drifted,
                            quarantined=(name, group.name) in quarantines,
                            after=list(group.after),
                        )
                    )
                    if with_hosts:
                        hosts.extend(
                            HostApp(
                                group=group.name,
                                host=host,
                                app=app_name,
                                desired=version,
                                deployed=recorded.get((host, app_name)),
                                in_sync=recorded.get((host, app_name)) == version,
                            )
                            for host in group.host_names
                            for app_name, version in group.apps.items()
                        )
            result.append(
                EnvironmentDetail(
                    name=name,
                    suspended=status.suspended,
                    reconciling=name in running,
                    last_result=status.last_result,
                    last_error=status.last_error,
                    last_attempted_commit=status.last_attempted_commit,
                    last_applied_commit=status.last_applied_commit,
                    updated_at=status.updated_at,
                    groups=groups,
                    hosts=hosts,
                )
            )
        return result

    def known(environment: str) -> None:
        snapshot = daemon.snapshot
        names = set(snapshot.state.environments) if snapshot and snapshot.state else set()
        names |= {s.environment for s in store.environment_statuses()}
        if environment not in names:
            raise HTTPException(404, f"unknown environment {environment!r}")

    @app.get("/healthz", tags=["probes"])
    def healthz() -> JSONResponse:
        """Liveness: the daemon's source loop is turning."""
        if daemon.alive:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "stalled"}, status_code=503)

    @app.get("/readyz", tags=["probes"])
    def readyz() -> JSONResponse:
        """Readiness: started (state loaded, interrupted rollouts resumed) and not stopping."""
        if daemon.ready.is_set() and not daemon.stopping.is_set():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready"}, status_code=503)

    @app.get("/metrics", tags=["probes"], response_class=Response)
    def metrics() -> Response:
        """Prometheus exposition."""
        return Response(daemon.metrics.exposition(), media_type=CONTENT_TYPE)

    @app.get("/api/v1/status", response_model=Status, tags=["status"])
    def status() -> Status:
        problems = json.loads(store.get_meta(META_PROBLEMS) or "[]")
        fetched = store.get_meta(META_LAST_FETCH)
        error = store.get_meta(META_SOURCE_ERROR) or ""
        return Status(
            version=__version__,
            daemon=daemon.describe(),
            source=SourceStatus(
                url=redact(settings.source.url),
                branch=settings.source.branch,
                up=bool(fetched) and not error,
                error=error,
                valid_commit=store.get_meta(META_LAST_VALID),
                rejected_commit=store.get_meta(META_LAST_INVALID) if problems else None,
                problems=problems,
                last_fetch_at=float(fetched) if fetched else None,
            ),
            environments=[
                EnvironmentSummary(**e.model_dump(exclude={"hosts"})) for e in summaries()
            ],
            quarantines=[
                Quarantine(
                    environment=q.environment,
                    group=q.group,
                    commit=q.commit,
                    rollout_id=q.rollout_id,
                    reason=q.reason,
                    revert=q.revert,
                    created_at=q.created_at,
                )
                for q in store.quarantines()
            ],
        )

    @app.get("/api/v1/environments", response_model=list[EnvironmentSummary], tags=["status"])
    def environments() -> list[EnvironmentSummary]:
        return [EnvironmentSummary(**e.model_dump(exclude={"hosts"})) for e in summaries()]

    @app.get(
        "/api/v1/environments/{environment}", response_model=EnvironmentDetail, tags=["status"]
    )
    def environment(environment: str) -> EnvironmentDetail:
        """One environment: its groups and, per host and app, desired vs deployed."""
        found = [e for e in summaries(with_hosts=True) if e.name == environment]
        if not found:
            raise HTTPException(404, f"unknown environment {environment!r}")
        return found[0]

    @app.get("/api/v1/rollouts", response_model=list[Rollout], tags=["history"])
    def rollouts(
        environment: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 20
    ) -> list[Rollout]:
        return [_rollout(r) for r in store.rollouts(environment, limit)]

    @app.get("/api/v1/rollouts/{rollout_id}", response_model=Rollout, tags=["history"])
    def rollout(rollout_id: str) -> Rollout:
        """One rollout with its journalled steps, host results and gate results."""
        record = store.rollout(rollout_id)
        if record is None:
            raise HTTPException(404, f"unknown rollout {rollout_id!r}")
        return _rollout(record, store.steps(rollout_id))

    @app.post(
        "/api/v1/sync",
        response_model=SyncResponse,
        status_code=202,
        tags=["actions"],
        dependencies=auth,
    )
    def sync(request: SyncRequest | None = None) -> SyncResponse:
        """Fetch now and reconcile (one environment or all); optionally wait for the end."""
        request = request or SyncRequest()
        if daemon.stopping.is_set():
            raise HTTPException(503, "the daemon is shutting down")
        if request.environment is not None:
            known(request.environment)
        since = daemon.request_sync(request.environment, reason="api")
        snapshot = daemon.snapshot
        names = (
            [request.environment]
            if request.environment
            else sorted(snapshot.state.environments if snapshot and snapshot.state else [])
        )
        response = SyncResponse(queued=names)
        if request.wait and names:
            finished = daemon.wait_finished(names, since, request.timeout)
            response.finished = {
                name: _outcome(f.outcome) if f and f.outcome else None
                for name, f in finished.items()
            }
        return response

    def _suspend(environment: str, suspended: bool) -> Suspension:
        known(environment)
        store.update_environment(environment, time.time(), suspended=suspended)
        log.info(
            "environment_suspended" if suspended else "environment_resumed", environment=environment
        )
        if not suspended:
            daemon.request_sync(environment, reason="resume", fetch=False)
        return Suspension(environment=environment, suspended=suspended)

    @app.post(
        "/api/v1/environments/{environment}/suspend",
        response_model=Suspension,
        tags=["actions"],
        dependencies=auth,
    )
    def suspend(environment: str) -> Suspension:
        """Stop changing the environment (still diffed and reported)."""
        return _suspend(environment, True)

    @app.post(
        "/api/v1/environments/{environment}/resume",
        response_model=Suspension,
        tags=["actions"],
        dependencies=auth,
    )
    def resume(environment: str) -> Suspension:
        return _suspend(environment, False)

    @app.post(
        "/api/v1/webhooks/{provider}",
        response_model=WebhookResult,
        status_code=202,
        tags=["webhooks"],
        responses={
            200: {"description": "Ignored (other event or branch)"},
            400: {"description": "Malformed payload"},
            401: {"description": "Bad or missing signature"},
            404: {"description": "Provider not configured"},
            413: {"description": "Payload too large"},
        },
    )
    async def webhook(
        provider: Literal["github", "gitlab", "gitea"], request: Request
    ) -> JSONResponse:
        """Push events: verified, then an immediate fetch when the tracked branch moved."""
        limit = settings.webhooks.max_payload_bytes
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            daemon.metrics.webhook(provider, "too_large")
            return JSONResponse({"result": "too_large", "detail": f"over {limit} bytes"}, 413)
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                daemon.metrics.webhook(provider, "too_large")
                return JSONResponse({"result": "too_large", "detail": f"over {limit} bytes"}, 413)
        headers = {k.lower(): v for k, v in request.headers.items()}
        delivery = webhooks.verify_and_parse(
            provider, secrets[provider], headers, bytes(body), settings.source.branch
        )
        daemon.metrics.webhook(provider, delivery.result)
        log.info(
            "webhook",
            provider=provider,
            result=delivery.result,
            detail=delivery.detail,
            commit=delivery.commit,
        )
        if delivery.result == "triggered" and not daemon.stopping.is_set():
            daemon.request_sync(reason=f"webhook:{provider}")
        return JSONResponse({"result": delivery.result, "detail": delivery.detail}, delivery.status)

    return app


def start_server(settings: Settings) -> Callable[[Daemon], Callable[[], None]]:
    """``Daemon.run``'s ``serve`` hook: uvicorn in a thread; returns its stop function."""

    def serve(daemon: Daemon) -> Callable[[], None]:
        app = create_app(daemon, settings)
        config = uvicorn.Config(
            app,
            host=settings.api.listen,
            port=settings.api.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="api", daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(
                    f"cannot serve the API on {settings.api.listen}:{settings.api.port}"
                )
            time.sleep(0.02)
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        daemon.url = f"http://{shown}:{port}"

        def stop() -> None:
            server.should_exit = True
            thread.join(10)

        return stop

    return serve
