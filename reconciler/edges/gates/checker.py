"""``HealthChecker``: the gate adapter; evaluates health checks against rollout targets.

Contract (``HealthChecker.evaluate(checks, targets, environment=, group=, cancel=)``, the
:class:`~reconciler.edges.gates.GateChecker` Protocol):

* Templates are rendered as ``templates`` says; which texts of a gate are templates is up to
  its kind module (see ``kinds``). A template needing ``{port}`` when the host has no port for
  the app fails that check for that target (``attempts=0``) with a detail saying so.
* Every check is rendered for every target; targets whose rendering is identical share one
  evaluation and one ``GateResult``. A result's ``host`` is the ``Host.name`` only when the
  check's templates use ``{host}``, ``{name}`` or ``{port}`` (else ``None``), its ``app`` only
  when they use ``{app}``, ``{version}`` or ``{port}`` (else ``None``). So a Prometheus query
  over the whole group runs once per ``evaluate()`` with ``host=None``, and a query with
  ``{host}`` runs per target. Identical renderings of different checks (same kind, fields and
  timing) are evaluated once and reported under each check's label. Results come in check
  order, then in order of first target. A target that cannot be rendered gets its own failed
  result naming its host and app. With no targets at all, checks that use no target token
  run once; the others are skipped.
* Each evaluation attempts every ``interval`` seconds (pause between attempts) until
  ``successes`` consecutive successes (passed) or until the next attempt would start after
  ``timeout`` seconds (failed). A failure or an inconclusive attempt resets the count. Each
  attempt is bounded by ``request_timeout`` (and by the time left of ``timeout``). Evaluations
  run in parallel in a bounded thread pool (``max_parallel``).
* When the timeout expires with the last attempt inconclusive the result fails closed:
  ``passed=False``, ``inconclusive=True``.
* ``cancel`` set: ``evaluate`` stops waiting promptly (it polls every 50 ms) and reports every
  unfinished evaluation as failed with detail ``"canceled"``; finished ones keep their result.
  A running command attempt is killed; an HTTP attempt ends within its request timeout.
* ``evaluate`` never raises for a failing target: network errors are failed attempts and an
  unexpected exception fails only the check it occurred in, with the exception text as detail.

HTTP attempts share one ``httpx.Client`` per checker (built on first use, no keep-alive);
``close()`` releases it. A checker is reusable and thread-safe.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from types import TracebackType

import structlog

from reconciler.desired.schema import HealthCheck
from reconciler.edges.gates import GateResult, GateTarget, MissingPlaceholder, kinds, templates
from reconciler.edges.gates.attempts import CANCELED_DETAIL, AttemptResult, Context, seconds
from reconciler.edges.gates.web import Session
from reconciler.states import Attempt

__all__ = ["HealthChecker"]

log = structlog.get_logger(__name__)

_CANCEL_POLL_S = 0.05


@dataclass(frozen=True)
class _Spec:
    """A check rendered for one target: everything an evaluation needs, hashable for dedup."""

    kind: str
    fields: Hashable
    interval: float
    timeout: float
    request_timeout: float
    successes: int


@dataclass(frozen=True)
class _Outcome:
    passed: bool
    inconclusive: bool
    attempts: int
    detail: str
    duration_s: float

    @classmethod
    def failed(cls, detail: str, attempts: int = 0, duration_s: float = 0.0) -> _Outcome:
        return cls(False, False, attempts, detail, duration_s)


@dataclass
class _Row:
    """One result row under construction: a check and the targets merged into it."""

    check: HealthCheck
    spec: _Spec | None
    hosts: set[str | None]
    apps: set[str | None]
    error: str | None = None


def _internal(error: BaseException) -> str:
    return f"internal error: {type(error).__name__}: {error}"


def _label(check: HealthCheck) -> str:
    try:
        return check.label
    except Exception:
        return "invalid"


def _kind(check: HealthCheck) -> str:
    try:
        return check.kind
    except Exception:
        return "invalid"


def _render(check: HealthCheck, values: templates.Values) -> _Spec:
    gate = check.gate
    return _Spec(
        kind=check.kind,
        fields=kinds.get(check.kind).render(gate, values),
        interval=float(gate.interval),
        timeout=float(gate.timeout),
        request_timeout=float(gate.request_timeout),
        successes=int(gate.successes),
    )


def _plan(
    checks: Sequence[HealthCheck], targets: Sequence[GateTarget], environment: str, group: str
) -> list[_Row]:
    """Render every check for every target; merge the targets whose rendering is identical."""
    rows: list[_Row] = []
    for check in checks:
        merged: dict[_Spec, _Row] = {}
        try:
            used = templates.tokens(kinds.get(check.kind).texts(check.gate))
        except Exception as error:
            rows.append(_Row(check, None, {None}, {None}, _internal(error)))
            continue
        if not targets and used & templates.TARGET_TOKENS:
            continue
        candidates: Sequence[GateTarget | None] = targets or [None]
        for target in candidates:
            host = None if target is None else target.host.name
            app = None if target is None else target.app
            try:
                spec = _render(check, templates.values(target, environment, group))
            except MissingPlaceholder as error:
                rows.append(_Row(check, None, {host}, {app}, str(error)))
                continue
            except Exception as error:
                rows.append(_Row(check, None, {host}, {app}, _internal(error)))
                continue
            row = merged.get(spec)
            if row is None:
                row = merged[spec] = _Row(check, spec, set(), set())
                rows.append(row)
            # A result names the host (app) only when the check depends on it.
            row.hosts.add(host if used & templates.HOST_TOKENS else None)
            row.apps.add(app if used & templates.APP_TOKENS else None)
    return rows


class HealthChecker:
    """Evaluates health gates; reusable and thread-safe (no state between calls)."""

    def __init__(
        self,
        *,
        max_parallel: int = 16,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        self._max_parallel = max_parallel
        self._clock = clock
        self._sleep = sleep
        self._session = Session()

    def close(self) -> None:
        """Release the HTTP client (the checker stays usable: it is built again on use)."""
        self._session.close()

    def __enter__(self) -> HealthChecker:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def evaluate(
        self,
        checks: Sequence[HealthCheck],
        targets: Sequence[GateTarget],
        *,
        environment: str = "",
        group: str = "",
        cancel: threading.Event | None = None,
    ) -> list[GateResult]:
        rows = _plan(checks, targets, environment, group)
        specs = list(dict.fromkeys(row.spec for row in rows if row.spec is not None))
        outcomes = self._run_all(specs, cancel)
        results: list[GateResult] = []
        for row in rows:
            if row.error is not None or row.spec is None:
                outcome = _Outcome.failed(row.error or "not evaluated")
            else:
                outcome = outcomes[row.spec]
            results.append(
                GateResult(
                    gate=_label(row.check),
                    kind=_kind(row.check),
                    host=next(iter(row.hosts)) if len(row.hosts) == 1 else None,
                    app=next(iter(row.apps)) if len(row.apps) == 1 else None,
                    passed=outcome.passed,
                    inconclusive=outcome.inconclusive,
                    attempts=outcome.attempts,
                    detail=outcome.detail,
                    duration_s=outcome.duration_s,
                )
            )
        return results

    # -- execution

    def _run_all(
        self, specs: Sequence[_Spec], cancel: threading.Event | None
    ) -> dict[_Spec, _Outcome]:
        outcomes: dict[_Spec, _Outcome] = {}
        if not specs:
            return outcomes
        started = self._clock()
        if cancel is not None and cancel.is_set():
            return {spec: _Outcome.failed(CANCELED_DETAIL) for spec in specs}
        context = Context(cancel=cancel, session=self._session)
        pool = cf.ThreadPoolExecutor(
            max_workers=min(self._max_parallel, len(specs)), thread_name_prefix="health-check"
        )
        canceled = False
        try:
            futures = {pool.submit(self._run_one, spec, context): spec for spec in specs}
            pending = set(futures)
            while pending:
                done, pending = cf.wait(
                    pending,
                    timeout=_CANCEL_POLL_S if cancel is not None else None,
                    return_when=cf.FIRST_COMPLETED,
                )
                for future in done:
                    spec = futures[future]
                    try:
                        outcomes[spec] = future.result()
                    except Exception as error:  # _run_one catches everything; belt and braces
                        outcomes[spec] = _Outcome.failed(_internal(error))
                if pending and cancel is not None and cancel.is_set():
                    canceled = True
                    elapsed = max(0.0, self._clock() - started)
                    for future in pending:
                        outcomes[futures[future]] = _Outcome.failed(CANCELED_DETAIL, 0, elapsed)
                    break
        finally:
            # On cancel do not wait for attempts in flight: each is bounded by its
            # request_timeout, and they stop at their next cancel check.
            pool.shutdown(wait=not canceled, cancel_futures=True)
        return outcomes

    def _pause(self, secs: float, cancel: threading.Event | None) -> None:
        if secs <= 0:
            return
        if self._sleep is not None:
            self._sleep(secs)
        elif cancel is not None:
            cancel.wait(secs)
        else:
            time.sleep(secs)

    def _run_one(self, spec: _Spec, context: Context) -> _Outcome:
        start = self._clock()
        try:
            return self._retry(spec, context, start)
        except Exception as error:
            log.warning("health_check_error", kind=spec.kind, error=repr(error))
            return _Outcome.failed(_internal(error), 0, self._clock() - start)

    def _retry(self, spec: _Spec, context: Context, start: float) -> _Outcome:
        kind = kinds.get(spec.kind)
        cancel = context.cancel
        deadline = start + spec.timeout
        attempts = 0
        consecutive = 0
        while True:
            if cancel is not None and cancel.is_set():
                return _Outcome.failed(CANCELED_DETAIL, attempts, self._clock() - start)
            now = self._clock()
            # Each attempt gets request_timeout, cut to what is left of the overall timeout.
            budget = min(spec.request_timeout, max(deadline - now, 0.1))
            attempts += 1
            attempt = kind.attempt(spec.fields, budget, context)
            now = self._clock()
            if attempt.outcome is Attempt.CANCELED:
                return _Outcome.failed(CANCELED_DETAIL, attempts, now - start)
            if attempt.outcome is Attempt.SUCCESS:
                consecutive += 1
                if consecutive >= spec.successes:
                    return _Outcome(True, False, attempts, attempt.detail, now - start)
            else:
                consecutive = 0
            if now + spec.interval >= deadline:
                return _give_up(spec, attempt, attempts, consecutive, now - start)
            self._pause(spec.interval, cancel)


def _give_up(
    spec: _Spec, last: AttemptResult, attempts: int, consecutive: int, elapsed: float
) -> _Outcome:
    budget = f"{seconds(spec.timeout)} timeout"
    if last.outcome is Attempt.INCONCLUSIVE:
        detail = f"inconclusive, failing closed: {last.detail} (until the {budget})"
        return _Outcome(False, True, attempts, detail, elapsed)
    if last.outcome is Attempt.SUCCESS:
        detail = (
            f"{last.detail}; only {consecutive} of {spec.successes} consecutive successes "
            f"before the {budget}"
        )
        return _Outcome(False, False, attempts, detail, elapsed)
    return _Outcome(False, False, attempts, last.detail, elapsed)
