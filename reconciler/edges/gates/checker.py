"""Health gates: evaluate HTTP, TCP, command and Prometheus checks against rollout targets.

Contract (``HealthChecker.evaluate(checks, targets, environment=, group=, cancel=)``):

* Templates are rendered by plain replacement of exactly these tokens, in one pass (a value is
  never re-scanned): ``{host}`` (``Host.address``), ``{name}`` (``Host.name``), ``{port}``
  (``Host.ports[app]``), ``{app}``, ``{version}``, ``{environment}``, ``{group}``. Nothing else
  is interpreted: never ``str.format``, so ``{host.__class__}`` stays literal text. Rendered
  fields: http ``url``/``expect_body``, tcp ``host``/``port``, every command ``argv`` element,
  prometheus ``url``/``query``. A template needing ``{port}`` when the host has no port for the
  app fails that check for that target (``attempts=0``) with a detail saying so.
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
* http: ``GET`` (stdlib urllib, no proxies, redirects followed only to http/https); passes when
  the status equals ``expect_status`` and, if ``expect_body`` is set, the rendered text occurs in
  the first 64 KiB of the body. Only http and https URLs are accepted.
* tcp: a TCP connection to the rendered host and port succeeds.
* command: the rendered argv runs on the controller without a shell (stdin ``/dev/null``,
  stdout+stderr captured to a file, the tail shown in the detail) in its own session; on
  timeout or cancel its whole process group is killed. Passes on exit status 0. A missing
  executable fails with a clear detail.
* prometheus: ``GET <url>/api/v1/query?query=<rendered>``. A vector (every sample) or scalar
  value within ``[min, max]`` is a success; an empty vector or NaN is an inconclusive attempt
  (retried); HTTP/API errors and other result types are failed attempts. When the timeout
  expires with the last attempt inconclusive the result fails closed: ``passed=False``,
  ``inconclusive=True``.
* ``cancel`` set: ``evaluate`` stops waiting promptly (it polls every 50 ms) and reports every
  unfinished evaluation as failed with detail ``"canceled"``; finished ones keep their result.
* ``evaluate`` never raises for a failing target: network errors are failed attempts and an
  unexpected exception fails only the check it occurred in, with the exception text as detail.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import http.client
import json
import math
import os
import re
import shlex
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import structlog

from reconciler.desired.model import Host
from reconciler.desired.schema import CommandGate, HealthCheck, HttpGate, PrometheusGate, TcpGate

__all__ = [
    "PLACEHOLDERS",
    "GateResult",
    "GateTarget",
    "HealthChecker",
    "MissingPlaceholder",
    "render_template",
]

log = structlog.get_logger(__name__)

PLACEHOLDERS: tuple[str, ...] = ("host", "name", "port", "app", "version", "environment", "group")
#: Tokens whose value depends on the target (host and app), not only on environment/group.
_TARGET_TOKENS = frozenset({"host", "name", "port", "app", "version"})
_HOST_TOKENS = frozenset({"host", "name", "port"})
_APP_TOKENS = frozenset({"app", "version", "port"})
_TOKEN_RE = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")

BODY_LIMIT = 64 * 1024
_OUTPUT_LIMIT = 400
_CANCEL_POLL_S = 0.05
CANCELED = "canceled"


# ------------------------------------------------------------------------------ public types


@dataclass(frozen=True)
class GateTarget:
    """One (host, app) a gate is checked for, with the version that should run there."""

    host: Host
    app: str
    version: str


@dataclass(frozen=True)
class GateResult:
    gate: str  # HealthCheck.label
    kind: str  # http|tcp|command|prometheus
    host: str | None  # Host.name; None when the check does not depend on one host
    app: str | None
    passed: bool
    inconclusive: bool  # prometheus: empty/NaN result on the last attempt
    attempts: int
    detail: str
    duration_s: float

    @property
    def verdict(self) -> str:
        return "passed" if self.passed else "inconclusive" if self.inconclusive else "failed"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["duration_s"] = round(self.duration_s, 3)
        return data


class MissingPlaceholder(ValueError):
    """A template needs a value that this target does not have (e.g. ``{port}``)."""


def render_template(template: str, values: Mapping[str, str | None]) -> str:
    """Replace exactly the ``{token}`` placeholders of ``values``; leave all other text alone.

    A token whose value is ``None`` (or absent) raises :class:`MissingPlaceholder`, with the
    reason stored under ``values["_missing_<token>"]`` when given.
    """

    def replace(match: re.Match[str]) -> str:
        token = match.group(1)
        value = values.get(token)
        if value is None:
            reason = values.get(f"_missing_{token}") or f"no value for {{{token}}}"
            raise MissingPlaceholder(reason)
        return value

    return _TOKEN_RE.sub(replace, template)


# ------------------------------------------------------------------------------ internals


@dataclass(frozen=True)
class _Attempt:
    outcome: str  # "success" | "failure" | "inconclusive" | "canceled"
    detail: str


@dataclass(frozen=True)
class _Spec:
    """A check rendered for one target: everything an evaluation needs, hashable for dedup."""

    kind: str
    fields: tuple[Any, ...]
    interval: float
    timeout: float
    request_timeout: float
    successes: int


@dataclass
class _Outcome:
    passed: bool
    inconclusive: bool
    attempts: int
    detail: str
    duration_s: float


@dataclass
class _Row:
    """One result row under construction: a check and the targets merged into it."""

    check_index: int
    check: HealthCheck
    spec: _Spec | None
    hosts: set[str | None]
    apps: set[str | None]
    error: str | None = None


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fmt(value: float) -> str:
    return f"{value:g}"


def _secs(value: float) -> str:
    return f"{round(value, 2):g}s"


def _values(target: GateTarget | None, environment: str, group: str) -> dict[str, str | None]:
    values: dict[str, str | None] = {"environment": environment, "group": group}
    if target is None:
        for token in _TARGET_TOKENS:
            values[f"_missing_{token}"] = f"{{{token}}} needs a target, and there is none"
        return values
    host = target.host
    port = host.ports.get(target.app) if host.ports else None
    values.update(
        host=host.address,
        name=host.name,
        app=target.app,
        version=target.version,
        port=None if port is None else str(port),
        _missing_port=f"host {host.name} has no port for app {target.app} (needed by {{port}})",
    )
    return values


def _tokens(check: HealthCheck) -> set[str]:
    """The placeholders a check's templates use."""
    gate = check.gate
    texts: list[str] = []
    if isinstance(gate, HttpGate):
        texts = [gate.url, gate.expect_body or ""]
    elif isinstance(gate, TcpGate):
        texts = [gate.host, str(gate.port)]
    elif isinstance(gate, CommandGate):
        texts = list(gate.argv)
    elif isinstance(gate, PrometheusGate):
        texts = [gate.url, gate.query]
    return {m.group(1) for t in texts for m in _TOKEN_RE.finditer(t)}


def _render(check: HealthCheck, values: Mapping[str, str | None]) -> _Spec:
    gate = check.gate
    kind = check.kind
    fields: tuple[Any, ...]
    if isinstance(gate, HttpGate):
        body = None if gate.expect_body is None else render_template(gate.expect_body, values)
        fields = (render_template(gate.url, values), gate.expect_status, body)
    elif isinstance(gate, TcpGate):
        fields = (render_template(gate.host, values), render_template(str(gate.port), values))
    elif isinstance(gate, CommandGate):
        fields = tuple(render_template(arg, values) for arg in gate.argv)
    elif isinstance(gate, PrometheusGate):
        fields = (
            render_template(gate.url, values),
            render_template(gate.query, values),
            gate.min,
            gate.max,
        )
    else:  # pragma: no cover - HealthCheck guarantees one of the four kinds
        raise TypeError(f"unknown gate kind {kind!r}")
    return _Spec(
        kind=kind,
        fields=fields,
        interval=float(gate.interval),
        timeout=float(gate.timeout),
        request_timeout=float(gate.request_timeout),
        successes=int(gate.successes),
    )


# ------------------------------------------------------------------------------ attempts


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme not in ("http", "https"):
            raise urllib.error.HTTPError(
                newurl, code, f"redirect to {scheme}: refused", headers, fp
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener() -> urllib.request.OpenerDirector:
    # No proxies: gates talk to the fleet directly (an inherited http_proxy would otherwise
    # route even loopback checks through a proxy).
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _HttpOnlyRedirects())


def _http_get(url: str, timeout: float, limit: int) -> tuple[int, bytes]:
    """GET ``url``; return (status, first ``limit`` bytes of the body). Raises OSError family."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"only http and https URLs are allowed, not {scheme or 'no scheme'!r}")
    request = urllib.request.Request(  # noqa: S310 - scheme checked just above
        url, method="GET", headers={"User-Agent": "reconciler"}
    )
    try:
        response = _opener().open(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        # Non-2xx statuses arrive as HTTPError, which is itself a response.
        with contextlib.closing(error):
            try:
                body = error.read(limit) if error.fp is not None else b""
            except OSError:
                body = b""
            return error.code, body
    with contextlib.closing(response):
        return response.status, response.read(limit)


def _describe_error(error: BaseException) -> str:
    if isinstance(error, urllib.error.URLError) and not isinstance(error, urllib.error.HTTPError):
        if not isinstance(error.reason, BaseException):
            return str(error.reason)
        error = error.reason
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def _attempt_http(spec: _Spec, timeout: float) -> _Attempt:
    url, expect_status, expect_body = spec.fields
    what = f"GET {url}"
    try:
        status, body = _http_get(url, timeout, BODY_LIMIT)
    except ValueError as error:
        return _Attempt("failure", f"{what} -> {error}")
    except (OSError, urllib.error.URLError, http.client.HTTPException) as error:
        return _Attempt("failure", f"{what} -> error: {_describe_error(error)}")
    if status != expect_status:
        return _Attempt("failure", f"{what} -> {status} (expected {expect_status})")
    if expect_body is not None and expect_body.encode("utf-8") not in body:
        seen = _short(body.decode("utf-8", "replace").strip(), 80)
        return _Attempt(
            "failure",
            f"{what} -> {status}, body does not contain {_short(expect_body)!r} (got {seen!r})",
        )
    return _Attempt("success", f"{what} -> {status}")


def _attempt_tcp(spec: _Spec, timeout: float) -> _Attempt:
    host, port_text = spec.fields
    what = f"connect {host}:{port_text}"
    try:
        port = int(port_text)
    except ValueError:
        return _Attempt("failure", f"{what} -> invalid port {port_text!r}")
    if not 0 < port < 65536:
        return _Attempt("failure", f"{what} -> invalid port {port}")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as error:
        return _Attempt("failure", f"{what} -> {_describe_error(error)}")
    return _Attempt("success", f"{what} -> open")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _read_tail(handle: Any) -> str:
    handle.flush()
    size = handle.seek(0, os.SEEK_END)
    handle.seek(max(0, size - _OUTPUT_LIMIT))
    text = handle.read().decode("utf-8", "replace").strip()
    text = " | ".join(line.strip() for line in text.splitlines() if line.strip())
    return ("..." + text) if size > _OUTPUT_LIMIT else text


def _attempt_command(spec: _Spec, timeout: float, cancel: threading.Event | None) -> _Attempt:
    argv = list(spec.fields)
    what = _short(shlex.join(argv), 200)
    with tempfile.TemporaryFile() as output:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except FileNotFoundError:
            return _Attempt("failure", f"{what} -> executable not found: {argv[0]}")
        except PermissionError:
            return _Attempt("failure", f"{what} -> not executable: {argv[0]}")
        except OSError as error:
            return _Attempt("failure", f"{what} -> cannot run: {_describe_error(error)}")
        deadline = time.monotonic() + timeout
        try:
            while True:
                if cancel is not None and cancel.is_set():
                    _kill_group(proc)
                    return _Attempt("canceled", CANCELED)
                left = deadline - time.monotonic()
                if left <= 0:
                    _kill_group(proc)
                    tail = _read_tail(output)
                    return _Attempt(
                        "failure",
                        f"{what} -> timed out after {_secs(timeout)} (killed)"
                        + (f": {tail}" if tail else ""),
                    )
                try:
                    code = proc.wait(timeout=min(left, _CANCEL_POLL_S if cancel else left))
                    break
                except subprocess.TimeoutExpired:
                    continue
        finally:
            if proc.returncode is None:  # pragma: no cover - defensive
                _kill_group(proc)
        # Orphans of the command that still run in its session must not outlive the attempt.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        tail = _read_tail(output)
    suffix = f": {tail}" if tail else ""
    if code == 0:
        return _Attempt("success", f"{what} -> exit 0{suffix}")
    if code < 0:
        return _Attempt("failure", f"{what} -> killed by signal {-code}{suffix}")
    return _Attempt("failure", f"{what} -> exit {code}{suffix}")


def _labels(metric: Mapping[str, str]) -> str:
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()))
    return "{" + inner + "}"


def _attempt_prometheus(spec: _Spec, timeout: float) -> _Attempt:
    base, query, low, high = spec.fields
    url = base.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    what = f"query {_short(query)!r}"
    try:
        status, body = _http_get(url, timeout, 4 * 1024 * 1024)
    except ValueError as error:
        return _Attempt("failure", f"{what} -> {error}")
    except (OSError, urllib.error.URLError, http.client.HTTPException) as error:
        return _Attempt("failure", f"{what} -> error: {_describe_error(error)}")
    try:
        payload = json.loads(body)
    except ValueError:
        return _Attempt("failure", f"{what} -> HTTP {status}, not a Prometheus API response")
    if not isinstance(payload, dict) or payload.get("status") != "success":
        error = payload.get("error") if isinstance(payload, dict) else None
        kind = payload.get("errorType") if isinstance(payload, dict) else None
        text = f"{kind}: {error}" if kind and error else (error or f"HTTP {status}")
        return _Attempt("failure", f"{what} -> error: {_short(str(text), 300)}")
    try:
        data = payload.get("data") or {}
        result_type = data.get("resultType")
        result = data.get("result")
        samples: list[tuple[str, float]]
        if result_type == "scalar":
            samples = [("", float(result[1]))]
        elif result_type == "vector":
            samples = [(_labels(s.get("metric") or {}), float(s["value"][1])) for s in result or []]
        else:
            return _Attempt("failure", f"{what} -> unsupported result type {result_type!r}")
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        return _Attempt("failure", f"{what} -> malformed response: {_short(repr(payload), 200)}")
    if not samples:
        return _Attempt("inconclusive", f"{what} returned no samples")
    many = len(samples) > 1
    problems: list[str] = []
    values: list[float] = []
    for labels, value in samples:
        where = f"{labels} " if many and labels else ""
        if math.isnan(value):
            return _Attempt(
                "inconclusive", f"{what} returned NaN" + (f" for {labels}" if many else "")
            )
        values.append(value)
        if low is not None and value < low:
            problems.append(f"{where}value {_fmt(value)} < min {_fmt(low)}")
        elif high is not None and value > high:
            problems.append(f"{where}value {_fmt(value)} > max {_fmt(high)}")
    if problems:
        more = f" ({len(problems)} of {len(samples)} samples out of bounds)" if many else ""
        return _Attempt("failure", f"{what}: {problems[0]}{more}")
    bounds = " ".join(
        part
        for part in (
            None if low is None else f"min {_fmt(low)}",
            None if high is None else f"max {_fmt(high)}",
        )
        if part
    )
    if many:
        return _Attempt("success", f"{what}: all {len(samples)} samples within {bounds}")
    return _Attempt("success", f"{what}: value {_fmt(values[0])} within {bounds}")


# ------------------------------------------------------------------------------ the checker


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

    # -- public

    def evaluate(
        self,
        checks: Sequence[HealthCheck],
        targets: Sequence[GateTarget],
        *,
        environment: str = "",
        group: str = "",
        cancel: threading.Event | None = None,
    ) -> list[GateResult]:
        rows = self._plan(checks, targets, environment, group)
        specs = list(dict.fromkeys(row.spec for row in rows if row.spec is not None))
        outcomes = self._run_all(specs, cancel)
        results: list[GateResult] = []
        for row in rows:
            host = next(iter(row.hosts)) if len(row.hosts) == 1 else None
            app = next(iter(row.apps)) if len(row.apps) == 1 else None
            if row.error is not None or row.spec is None:
                outcome = _Outcome(False, False, 0, row.error or "not evaluated", 0.0)
            else:
                outcome = outcomes[row.spec]
            results.append(
                GateResult(
                    gate=self._label(row.check),
                    kind=self._kind(row.check),
                    host=host,
                    app=app,
                    passed=outcome.passed,
                    inconclusive=outcome.inconclusive,
                    attempts=outcome.attempts,
                    detail=outcome.detail,
                    duration_s=outcome.duration_s,
                )
            )
        return results

    # -- planning: render every check for every target, merge identical renderings

    @staticmethod
    def _label(check: HealthCheck) -> str:
        try:
            return check.label
        except Exception:
            return "invalid"

    @staticmethod
    def _kind(check: HealthCheck) -> str:
        try:
            return check.kind
        except Exception:
            return "invalid"

    def _plan(
        self,
        checks: Sequence[HealthCheck],
        targets: Sequence[GateTarget],
        environment: str,
        group: str,
    ) -> list[_Row]:
        rows: list[_Row] = []
        for index, check in enumerate(checks):
            merged: dict[_Spec, _Row] = {}
            try:
                tokens = _tokens(check)
            except Exception as error:
                rows.append(_Row(index, check, None, {None}, {None}, _internal(error)))
                continue
            if not targets and tokens & _TARGET_TOKENS:
                continue
            for target in targets or [None]:
                host = None if target is None else target.host.name
                app = None if target is None else target.app
                try:
                    spec = _render(check, _values(target, environment, group))
                except MissingPlaceholder as error:
                    rows.append(_Row(index, check, None, {host}, {app}, str(error)))
                    continue
                except Exception as error:
                    rows.append(_Row(index, check, None, {host}, {app}, _internal(error)))
                    continue
                row = merged.get(spec)
                if row is None:
                    row = merged[spec] = _Row(index, check, spec, set(), set())
                    rows.append(row)
                # A result names the host (app) only when the check depends on it.
                row.hosts.add(host if tokens & _HOST_TOKENS else None)
                row.apps.add(app if tokens & _APP_TOKENS else None)
        return rows

    # -- execution

    def _run_all(
        self, specs: Sequence[_Spec], cancel: threading.Event | None
    ) -> dict[_Spec, _Outcome]:
        outcomes: dict[_Spec, _Outcome] = {}
        if not specs:
            return outcomes
        started = self._clock()
        if cancel is not None and cancel.is_set():
            return {spec: _Outcome(False, False, 0, CANCELED, 0.0) for spec in specs}
        pool = cf.ThreadPoolExecutor(
            max_workers=min(self._max_parallel, len(specs)), thread_name_prefix="health-check"
        )
        canceled = False
        try:
            futures = {pool.submit(self._run_one, spec, cancel): spec for spec in specs}
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
                        outcomes[spec] = _Outcome(False, False, 0, _internal(error), 0.0)
                if pending and cancel is not None and cancel.is_set():
                    canceled = True
                    elapsed = max(0.0, self._clock() - started)
                    for future in pending:
                        outcomes[futures[future]] = _Outcome(False, False, 0, CANCELED, elapsed)
                    break
        finally:
            # On cancel do not wait for attempts in flight: each is bounded by its
            # request_timeout, and they stop at their next cancel check.
            pool.shutdown(wait=not canceled, cancel_futures=True)
        return outcomes

    def _pause(self, seconds: float, cancel: threading.Event | None) -> None:
        if seconds <= 0:
            return
        if self._sleep is not None:
            self._sleep(seconds)
        elif cancel is not None:
            cancel.wait(seconds)
        else:
            time.sleep(seconds)

    def _attempt(self, spec: _Spec, timeout: float, cancel: threading.Event | None) -> _Attempt:
        if spec.kind == "http":
            return _attempt_http(spec, timeout)
        if spec.kind == "tcp":
            return _attempt_tcp(spec, timeout)
        if spec.kind == "command":
            return _attempt_command(spec, timeout, cancel)
        if spec.kind == "prometheus":
            return _attempt_prometheus(spec, timeout)
        raise TypeError(f"unknown gate kind {spec.kind!r}")

    def _run_one(self, spec: _Spec, cancel: threading.Event | None) -> _Outcome:
        start = self._clock()
        try:
            return self._retry(spec, cancel, start)
        except Exception as error:
            log.warning("health_check_error", kind=spec.kind, error=repr(error))
            return _Outcome(False, False, 0, _internal(error), self._clock() - start)

    def _retry(self, spec: _Spec, cancel: threading.Event | None, start: float) -> _Outcome:
        deadline = start + spec.timeout
        attempts = 0
        consecutive = 0
        while True:
            if cancel is not None and cancel.is_set():
                return _Outcome(False, False, attempts, CANCELED, self._clock() - start)
            now = self._clock()
            # Each attempt gets request_timeout, cut to what is left of the overall timeout.
            budget = min(spec.request_timeout, max(deadline - now, 0.1))
            attempts += 1
            attempt = self._attempt(spec, budget, cancel)
            now = self._clock()
            if attempt.outcome == "canceled":
                return _Outcome(False, False, attempts, CANCELED, now - start)
            if attempt.outcome == "success":
                consecutive += 1
                if consecutive >= spec.successes:
                    return _Outcome(True, False, attempts, attempt.detail, now - start)
            else:
                consecutive = 0
            if now + spec.interval >= deadline:
                return self._give_up(spec, attempt, attempts, consecutive, now - start)
            self._pause(spec.interval, cancel)

    @staticmethod
    def _give_up(
        spec: _Spec, last: _Attempt, attempts: int, consecutive: int, elapsed: float
    ) -> _Outcome:
        budget = f"{_secs(spec.timeout)} timeout"
        if last.outcome == "inconclusive":
            detail = f"inconclusive, failing closed: {last.detail} (until the {budget})"
            return _Outcome(False, True, attempts, detail, elapsed)
        if last.outcome == "success":
            detail = (
                f"{last.detail}; only {consecutive} of {spec.successes} consecutive successes "
                f"before the {budget}"
            )
            return _Outcome(False, False, attempts, detail, elapsed)
        return _Outcome(False, False, attempts, last.detail, elapsed)


def _internal(error: BaseException) -> str:
    return f"internal error: {type(error).__name__}: {error}"
