"""Push-event webhooks of GitHub, GitLab and Gitea: verify, parse, decide. No I/O.

``verify_and_parse`` is the whole decision for one delivery; the API only reads the body
(capped at ``max_payload_bytes``) and acts on the returned ``Delivery``:

* 404 when the provider has no secret configured (the receiver is off);
* 401 when the signature/token is missing or wrong (compared in constant time) - nothing else
  of the request is looked at, not even the JSON;
* 400 with the reason when the signed body is not a push payload: not JSON, nested deeper than
  the parser's limit, a number too large, ``ref``/``after``/``checkout_sha`` of the wrong type.
  The body is parsed by pydantic's bounded JSON parser (never ``json.loads``), so no body can
  make it raise or run long; nothing of the body is echoed back;
* the body is JSON, or form-encoded (``application/x-www-form-urlencoded``, one ``payload``
  field holding the JSON: GitHub's default "Content type", and Gitea's form option); the
  signature covers the raw body either way;
* 200 ``ignored`` for other events (``ping``, tag pushes) and pushes to other branches;
* 202 ``triggered`` for a push to the tracked branch: the daemon fetches at once.
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, ValidationError

PROVIDERS = ("github", "gitlab", "gitea")


@dataclass(frozen=True)
class Delivery:
    status: int
    result: str  # triggered | ignored | unauthorized | invalid | disabled
    detail: str
    commit: str | None = None


class _Push(BaseModel):
    """What a push payload must hold; everything else in it is ignored (but still parsed)."""

    model_config = ConfigDict(extra="ignore")

    ref: str
    after: str | None = None
    checkout_sha: str | None = None


_FORM = "application/x-www-form-urlencoded"


def _json_body(headers: Mapping[str, str], body: bytes) -> bytes:
    """The JSON document of a delivery: the body, or its form field ``payload``."""
    if headers.get("content-type", "").split(";")[0].strip().lower() != _FORM:
        return body
    try:
        fields = urllib.parse.parse_qs(
            body.decode("utf-8"), strict_parsing=True, max_num_fields=16, errors="strict"
        )
    except (UnicodeDecodeError, ValueError) as exc:
        what = (
            "UTF-8" if isinstance(exc, UnicodeDecodeError) else "form-encoded (or too many fields)"
        )
        raise ValueError(f"the form body is not valid {what}") from None
    payload = fields.get("payload", [])
    if len(payload) != 1:
        raise ValueError("form body without exactly one 'payload' field")
    return payload[0].encode("utf-8")


def _reason(exc: ValidationError) -> str:
    reasons = [
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
        for e in exc.errors(include_url=False, include_input=False)
    ]
    return "; ".join(reasons)[:300]


def _hmac_sha256(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _authentic(provider: str, secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    if provider == "github":
        given = headers.get("x-hub-signature-256", "")
        expected = "sha256=" + _hmac_sha256(secret, body)
    elif provider == "gitea":
        given = headers.get("x-gitea-signature", "")
        expected = _hmac_sha256(secret, body)
    else:  # gitlab sends the shared token itself
        given = headers.get("x-gitlab-token", "")
        expected = secret
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


def _event(provider: str, headers: Mapping[str, str]) -> str:
    name = {"github": "x-github-event", "gitlab": "x-gitlab-event", "gitea": "x-gitea-event"}
    event = headers.get(name[provider], "")
    return "push" if event in ("push", "Push Hook") else event or "unknown"


def verify_and_parse(
    provider: str,
    secret: str | None,
    headers: Mapping[str, str],
    body: bytes,
    branch: str,
) -> Delivery:
    """Decide what one webhook delivery means. ``headers`` keys must be lower-case."""
    if provider not in PROVIDERS or secret is None:
        return Delivery(404, "disabled", f"no {provider} webhook is configured")
    if not _authentic(provider, secret, headers, body):
        return Delivery(401, "unauthorized", "missing or invalid signature")
    event = _event(provider, headers)
    if event != "push":
        return Delivery(200, "ignored", f"event {event!r} is not a push")
    try:
        payload = _Push.model_validate_json(_json_body(headers, body))
    except ValueError as exc:  # pydantic's ValidationError is one
        reason = _reason(exc) if isinstance(exc, ValidationError) else str(exc)
        return Delivery(400, "invalid", f"not a push payload: {reason}")
    ref = payload.ref
    commit = payload.after or payload.checkout_sha
    if ref != f"refs/heads/{branch}":
        return Delivery(200, "ignored", f"push to {ref}, tracking refs/heads/{branch}", commit)
    return Delivery(202, "triggered", f"push to {ref}", commit)
