"""The daemon's HTTP API (FastAPI; served by ``report.server`` on loopback by default).

Read-only: ``/healthz``, ``/readyz``, ``/metrics``, ``GET /api/v1/...`` (status, environments
with groups and per-host desired vs deployed, rollouts with their steps): all rendered from the
status read model (``report.status``) and the journal. Mutating calls (``POST /api/v1/sync``,
suspend, resume) need ``Authorization: Bearer <token>`` with the token read from
``api.token_file``; without a token file they are refused (403). Webhooks
(``POST /api/v1/webhooks/{github,gitlab,gitea}``) authenticate by their own signatures
(``edges.webhooks``). The OpenAPI spec is at ``/openapi.json``. The read-only web page
(``report.web``: ``/``, ``/environments/...``, ``/rollouts/...``, ``/history``, ``/source``,
``/static/...``) is served by the same app.

Before any route: ``report.guard`` checks access (the bearer token of mutating calls, and of
reads when ``api.read_token_file`` is set) and caps every body (``api.max_body_bytes``,
webhooks ``webhooks.max_payload_bytes``), all before a byte of the body is read.

A state store that cannot be reached now (``StoreUnavailable``) is a 503 with ``Retry-After``.
Bad input is a 4xx with a reason, never a 500: the sync body is parsed by pydantic's bounded
JSON parser (nesting depth, number size) into ``SyncRequest`` (finite numbers only, unknown
keys refused), and validation errors are rendered without echoing their input.
``report.event_routes`` serves the event log. The API drives the daemon only through ``Control``.
"""

# No ``from __future__ import annotations``: FastAPI reads the route functions' annotations,
# and they name dependencies local to ``create_app``.
import hmac
import threading
from typing import Annotated, Any, Literal, Protocol

import structlog
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reconciler import __version__
from reconciler.edges import webhooks
from reconciler.plan.outcomes import EnvironmentOutcome
from reconciler.record import RolloutRecord, RunRecord, StepRecord, StoreUnavailable
from reconciler.report import event_routes, guard, web
from reconciler.report.events import EventFeed
from reconciler.report.history import Rollout, rollout_view
from reconciler.report.metrics import CONTENT_TYPE, Metrics
from reconciler.report.status import EnvironmentDetail, EnvironmentView, StatusView
from reconciler.report.webhook_log import WebhookLog
from reconciler.settings import Settings, read_secret

log = structlog.get_logger(__name__)


class Journal(Protocol):
    """What the API reads of the rollout journal (``record.StateStore`` is one)."""

    def rollouts(self, environment: str | None = None, limit: int = 20) -> list[RolloutRecord]: ...
    def rollout(self, rollout_id: str) -> RolloutRecord | None: ...
    def steps(self, rollout_id: str) -> list[StepRecord]: ...
    def run(self, run_id: str) -> RunRecord | None: ...


class Control(Protocol):
    """What the API needs of the daemon (``service.daemon.Daemon`` is one)."""

    ready: threading.Event
    stopping: threading.Event
    metrics: Metrics
    webhooks: WebhookLog

    @property
    def journal(self) -> Journal: ...

    @property
    def event_feed(self) -> EventFeed: ...

    @property
    def alive(self) -> bool: ...
    def status(self) -> StatusView: ...
    def environments(
        self, only: str | None = None, with_hosts: bool = False
    ) -> list[EnvironmentDetail]: ...
    def known(self, environment: str) -> bool: ...
    def in_force(self) -> list[str]: ...
    def request_sync(
        self,
        environment: str | None = None,
        *,
        reason: str,
        fetch: bool = True,
        observe: bool = False,
    ) -> float: ...
    def wait_finished(
        self, environments: list[str], since: float, timeout: float
    ) -> dict[str, EnvironmentOutcome | None]: ...
    def set_suspended(self, environment: str, suspended: bool) -> None: ...


# ---------------------------------------------------------------- models
class SyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    environment: str | None = Field(
        default=None, max_length=255, description="Only this environment."
    )
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


class Problem(BaseModel):
    detail: str | list[dict[str, Any]]


def _reasons(errors: list[Any]) -> list[dict[str, Any]]:
    """Validation errors without their input (never echoed: it may be huge, NaN, or hostile)."""
    return [
        {
            "loc": [str(part) for part in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": e.get("type", ""),
        }
        for e in errors
    ]


class WebhookResult(BaseModel):
    result: str
    detail: str


def _outcome(outcome: EnvironmentOutcome) -> SyncOutcome:
    return SyncOutcome(
        result=str(outcome.result),
        groups={
            g.group: {
                "state": str(g.state),
                "rollout_id": g.rollout_id,
                "changed": list(g.changed_hosts),
                "failed": dict(g.failed_hosts),
                "reason": g.reason,
                "revert": g.revert_text,
            }
            for g in outcome.groups
        },
    )


def _sync_request(body: bytes) -> SyncRequest:
    """The sync body (empty: defaults); 400 when it is not a JSON object, 422 for bad values."""
    if not body.strip():
        return SyncRequest()
    try:
        return SyncRequest.model_validate_json(body)
    except ValidationError as exc:
        errors = list(exc.errors(include_url=False, include_input=False))
        shape = {"json_invalid", "model_type", "model_attributes_type"}
        status = 400 if any(e["type"] in shape for e in errors) else 422
        raise HTTPException(status, _reasons(errors)) from exc


def create_app(control: Control, settings: Settings) -> FastAPI:
    """The API of one daemon. Secrets are read once, here."""
    token = read_secret(settings.api.token_file)
    read_token = read_secret(settings.api.read_token_file)
    secrets = {
        "github": read_secret(settings.webhooks.github_secret_file),
        "gitlab": read_secret(settings.webhooks.gitlab_token_file),
        "gitea": read_secret(settings.webhooks.gitea_secret_file),
    }
    bearer = HTTPBearer(auto_error=False, description="Token from api.token_file.")
    app = FastAPI(
        title="reconciler",
        version=__version__,
        description="GitOps for Ansible-managed hosts: status, drift, rollouts, sync.",
    )

    def too_large(path: str) -> None:
        provider = path.removeprefix(guard.WEBHOOKS_PREFIX)
        if path.startswith(guard.WEBHOOKS_PREFIX) and provider in webhooks.PROVIDERS:
            control.metrics.webhook(provider, "too_large")

    app.add_middleware(
        guard.Guard,
        rule=guard.AccessRule(write_token=token, read_token=read_token),
        max_body=settings.api.max_body_bytes,
        max_webhook_body=settings.webhooks.max_payload_bytes,
        on_too_large=too_large,
    )

    heartbeat = settings.events.heartbeat
    events = event_routes.router(lambda: control.event_feed, control.stopping.is_set, heartbeat)
    app.include_router(events)

    @app.exception_handler(guard.BodyTooLarge)
    async def body_too_large(_request: Request, exc: guard.BodyTooLarge) -> JSONResponse:
        return JSONResponse({"result": "too_large", "detail": exc.detail}, 413, headers=exc.headers)

    @app.exception_handler(StoreUnavailable)
    async def store_unavailable(_request: Request, exc: StoreUnavailable) -> JSONResponse:
        log.warning("api_store_unavailable", error=str(exc))
        detail = {"detail": "the state store cannot be reached now; retry later"}
        return JSONResponse(detail, 503, headers={"Retry-After": "5"})

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _reasons(list(exc.errors()))}, 422)

    def authorized(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        """The guard decided already; this repeats it (and documents the scheme)."""
        if token is None:
            raise HTTPException(403, "mutating calls are disabled: configure api.token_file")
        given = credentials.credentials if credentials else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    auth = [Depends(authorized)]

    def known(environment: str) -> None:
        if not control.known(environment):
            raise HTTPException(404, f"unknown environment {environment!r}")

    @app.get("/healthz", tags=["probes"])
    def healthz() -> JSONResponse:
        """Liveness: the daemon's source loop is turning."""
        if control.alive:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "stalled"}, status_code=503)

    @app.get("/readyz", tags=["probes"])
    def readyz() -> JSONResponse:
        """Readiness: started (state loaded, interrupted rollouts resumed) and not stopping."""
        if control.ready.is_set() and not control.stopping.is_set():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready"}, status_code=503)

    @app.get("/metrics", tags=["probes"], response_class=Response)
    def metrics() -> Response:
        """Prometheus exposition."""
        return Response(control.metrics.exposition(), media_type=CONTENT_TYPE)

    @app.get("/api/v1/status", response_model=StatusView, tags=["status"])
    def status() -> StatusView:
        return control.status()

    @app.get("/api/v1/environments", response_model=list[EnvironmentView], tags=["status"])
    def environments() -> list[EnvironmentView]:
        return [EnvironmentView(**e.model_dump(exclude={"hosts"})) for e in control.environments()]

    @app.get(
        "/api/v1/environments/{environment}", response_model=EnvironmentDetail, tags=["status"]
    )
    def environment(environment: str) -> EnvironmentDetail:
        """One environment: its groups and, per host and app, desired vs deployed."""
        found = control.environments(only=environment, with_hosts=True)
        if not found:
            raise HTTPException(404, f"unknown environment {environment!r}")
        return found[0]

    @app.get("/api/v1/rollouts", response_model=list[Rollout], tags=["history"])
    def rollouts(
        environment: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 20
    ) -> list[Rollout]:
        return [rollout_view(r) for r in control.journal.rollouts(environment, limit)]

    @app.get("/api/v1/rollouts/{rollout_id}", response_model=Rollout, tags=["history"])
    def rollout(rollout_id: str) -> Rollout:
        """One rollout with its journalled steps, host results and gate results."""
        record = control.journal.rollout(rollout_id)
        if record is None:
            raise HTTPException(404, f"unknown rollout {rollout_id!r}")
        return rollout_view(
            record, control.journal.steps(rollout_id), control.journal.run(record.run_id)
        )

    @app.post(
        "/api/v1/sync",
        response_model=SyncResponse,
        status_code=202,
        tags=["actions"],
        dependencies=auth,
        openapi_extra={
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": SyncRequest.model_json_schema()}},
            }
        },
        responses={
            400: {"model": Problem, "description": "Not a JSON object of the right shape"},
            413: {"description": "Body too large"},
            422: {"model": Problem, "description": "A value out of range"},
        },
    )
    async def sync(raw: Request) -> SyncResponse:
        """Fetch now and reconcile (one environment or all); optionally wait for the end."""
        request = _sync_request(await raw.body())
        return await run_in_threadpool(_sync, request)

    def _sync(request: SyncRequest) -> SyncResponse:
        if control.stopping.is_set():
            raise HTTPException(503, "the daemon is shutting down")
        if request.environment is not None:
            known(request.environment)
        since = control.request_sync(request.environment, reason="api")
        names = [request.environment] if request.environment else control.in_force()
        response = SyncResponse(queued=names)
        if request.wait and names:
            finished = control.wait_finished(names, since, request.timeout)
            response.finished = {
                name: _outcome(outcome) if outcome else None for name, outcome in finished.items()
            }
        return response

    @app.post(
        "/api/v1/observe",
        response_model=list[EnvironmentDetail],
        tags=["actions"],
        dependencies=auth,
    )
    def observe(request: SyncRequest | None = None) -> list[EnvironmentDetail]:
        """Look at what every observed host runs now (then reconcile, as a sync does); with
        ``wait``, answer each environment's hosts: desired, recorded, observed and class."""
        request = request or SyncRequest(wait=True)
        if control.stopping.is_set():
            raise HTTPException(503, "the daemon is shutting down")
        if request.environment is not None:
            known(request.environment)
        since = control.request_sync(request.environment, reason="observe", observe=True)
        names = [request.environment] if request.environment else control.in_force()
        if request.wait and names:
            control.wait_finished(names, since, request.timeout)
        return [e for name in names for e in control.environments(only=name, with_hosts=True)]

    def _suspend(environment: str, suspended: bool) -> Suspension:
        known(environment)
        control.set_suspended(environment, suspended)
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
        """Push events: verified, then an immediate fetch when the tracked branch moved.

        JSON bodies, and form-encoded ones (``payload=<json>``, GitHub's default)."""
        body = await request.body()  # capped by the guard (webhooks.max_payload_bytes)
        headers = {k.lower(): v for k, v in request.headers.items()}
        delivery = webhooks.verify_and_parse(
            provider, secrets[provider], headers, body, settings.source.branch
        )
        control.metrics.webhook(provider, delivery.result)
        control.webhooks.record(
            provider, headers, delivery.result, delivery.detail, delivery.commit
        )
        log.info(
            "webhook",
            provider=provider,
            result=delivery.result,
            detail=delivery.detail,
            commit=delivery.commit,
        )
        if delivery.result == "triggered" and not control.stopping.is_set():
            control.request_sync(reason=f"webhook:{provider}")
        return JSONResponse({"result": delivery.result, "detail": delivery.detail}, delivery.status)

    # the read-only page, behind the same guard; several replicas: each streams its own events
    web.install(
        app,
        control,
        events_stream=event_routes.STREAM,
        backup_poll_ms=10_000 if settings.state.postgresql else None,
    )
    return app
