"""The ``prometheus`` gate kind: an instant query whose every sample lies within [min, max].

Contract: templates are ``url`` and ``query``. An attempt GETs
``<url>/api/v1/query?query=<rendered query>`` through the checker's
:class:`~reconciler.edges.gates.web.Session` (http/https only, no proxies, see ``web``), reading
at most ``BODY_LIMIT`` bytes of the answer. Then:

* a vector (every sample) or scalar value within ``[min, max]`` is a success;
* an empty vector or a NaN value is an inconclusive attempt (retried; the checker fails closed
  when the timeout expires on one);
* HTTP/API errors, other result types and malformed answers are failed attempts.

Details users see::

    query '<q>': value 1 within min 1
    query '<q>': all 2 samples within min 1 max 1
    query '<q>': {instance="..."} value 0 < min 1 (1 of 2 samples out of bounds)
    query '<q>' returned no samples
    query '<q>' returned NaN
    query '<q>' -> error: bad_data: <message>
"""

from __future__ import annotations

import json
import math
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.desired.schema import PrometheusGate
from reconciler.edges.gates import templates, web
from reconciler.edges.gates.attempts import AttemptResult, Context, number, short

__all__ = ["BODY_LIMIT", "KIND", "Fields", "attempt", "render", "texts"]

KIND = "prometheus"
BODY_LIMIT = 4 * 1024 * 1024


@dataclass(frozen=True)
class Fields:
    url: str
    query: str
    min: float | None
    max: float | None


def texts(gate: PrometheusGate) -> tuple[str, ...]:
    return (gate.url, gate.query)


def render(gate: PrometheusGate, values: templates.Values) -> Fields:
    return Fields(
        templates.render_template(gate.url, values),
        templates.render_template(gate.query, values),
        gate.min,
        gate.max,
    )


def attempt(fields: Fields, timeout: float, context: Context) -> AttemptResult:
    query = urllib.parse.urlencode({"query": fields.query})
    url = fields.url.rstrip("/") + "/api/v1/query?" + query
    what = f"query {short(fields.query)!r}"
    try:
        got = context.session.get(url, timeout=timeout, limit=BODY_LIMIT)
    except web.Refused as error:
        return AttemptResult.failure(f"{what} -> {error}")
    except web.FetchError as error:
        return AttemptResult.failure(f"{what} -> error: {error}")
    try:
        payload = json.loads(got.body)
    except ValueError:
        return AttemptResult.failure(f"{what} -> HTTP {got.status}, not a Prometheus API response")
    if not isinstance(payload, dict) or payload.get("status") != "success":
        return AttemptResult.failure(f"{what} -> error: {_api_error(payload, got.status)}")
    try:
        samples = _samples(payload)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        return AttemptResult.failure(f"{what} -> malformed response: {short(repr(payload), 200)}")
    if samples is None:
        kind = (payload.get("data") or {}).get("resultType")
        return AttemptResult.failure(f"{what} -> unsupported result type {kind!r}")
    return _judge(what, samples, fields.min, fields.max)


def _api_error(payload: Any, status: int) -> str:
    error = payload.get("error") if isinstance(payload, dict) else None
    kind = payload.get("errorType") if isinstance(payload, dict) else None
    text = f"{kind}: {error}" if kind and error else (error or f"HTTP {status}")
    return short(str(text), 300)


def _samples(payload: dict[str, Any]) -> list[tuple[str, float]] | None:
    """(labels, value) of every sample; None for a result type other than vector/scalar."""
    data = payload.get("data") or {}
    result_type = data.get("resultType")
    result: Any = data.get("result")
    if result_type == "scalar":
        return [("", float(result[1]))]
    if result_type == "vector":
        return [(_labels(s.get("metric") or {}), float(s["value"][1])) for s in result or []]
    return None


def _labels(metric: Mapping[str, str]) -> str:
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()))
    return "{" + inner + "}"


def _judge(
    what: str, samples: list[tuple[str, float]], low: float | None, high: float | None
) -> AttemptResult:
    if not samples:
        return AttemptResult.inconclusive(f"{what} returned no samples")
    many = len(samples) > 1
    problems: list[str] = []
    for labels, value in samples:
        where = f"{labels} " if many and labels else ""
        if math.isnan(value):
            return AttemptResult.inconclusive(
                f"{what} returned NaN" + (f" for {labels}" if many else "")
            )
        if low is not None and value < low:
            problems.append(f"{where}value {number(value)} < min {number(low)}")
        elif high is not None and value > high:
            problems.append(f"{where}value {number(value)} > max {number(high)}")
    if problems:
        more = f" ({len(problems)} of {len(samples)} samples out of bounds)" if many else ""
        return AttemptResult.failure(f"{what}: {problems[0]}{more}")
    bounds = " ".join(
        part
        for part in (
            None if low is None else f"min {number(low)}",
            None if high is None else f"max {number(high)}",
        )
        if part
    )
    if many:
        return AttemptResult.success(f"{what}: all {len(samples)} samples within {bounds}")
    return AttemptResult.success(f"{what}: value {number(samples[0][1])} within {bounds}")
