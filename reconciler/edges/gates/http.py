"""The ``http`` gate kind: GET a URL, check the status and optionally a text in the body.

Contract: templates are ``url`` and ``expect_body``. An attempt GETs the rendered URL through
the checker's :class:`~reconciler.edges.gates.web.Session` (http/https only, no proxies,
redirects followed only to http/https, see ``web``) and succeeds when the status equals
``expect_status`` and, if ``expect_body`` is set, the rendered text occurs in the first
``BODY_LIMIT`` bytes of the body. Details users see::

    GET <url> -> 200
    GET <url> -> 500 (expected 200), got '<start of the body>' ("got ''": an empty body)
    GET <url> -> 200, body does not contain '<text>' (got '<start of the body>')
    GET <url> -> error: Connection refused
    GET <url> -> only http and https URLs are allowed, not 'file'
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.desired.schema import HttpGate
from reconciler.edges.gates import templates, web
from reconciler.edges.gates.attempts import AttemptResult, Context, short

__all__ = ["BODY_LIMIT", "KIND", "Fields", "attempt", "render", "texts"]

KIND = "http"
BODY_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Fields:
    url: str
    expect_status: int
    expect_body: str | None


def texts(gate: HttpGate) -> tuple[str, ...]:
    return (gate.url, gate.expect_body or "")


def render(gate: HttpGate, values: templates.Values) -> Fields:
    body = None if gate.expect_body is None else templates.render_template(gate.expect_body, values)
    return Fields(templates.render_template(gate.url, values), gate.expect_status, body)


def attempt(fields: Fields, timeout: float, context: Context) -> AttemptResult:
    what = f"GET {fields.url}"
    try:
        got = context.session.get(fields.url, timeout=timeout, limit=BODY_LIMIT)
    except web.Refused as error:
        return AttemptResult.failure(f"{what} -> {error}")
    except web.FetchError as error:
        return AttemptResult.failure(f"{what} -> error: {error}")
    seen = short(got.body.decode("utf-8", "replace").strip(), 80)
    if got.status != fields.expect_status:
        return AttemptResult.failure(
            f"{what} -> {got.status} (expected {fields.expect_status}), got {seen!r}"
        )
    expected = fields.expect_body
    if expected is not None and expected.encode("utf-8") not in got.body:
        return AttemptResult.failure(
            f"{what} -> {got.status}, body does not contain {short(expected)!r} (got {seen!r})"
        )
    return AttemptResult.success(f"{what} -> {got.status}")
