"""Push-event webhooks of GitHub, GitLab and Gitea: verify, parse, decide. No I/O.

``verify_and_parse`` is the whole decision for one delivery; the API only reads the body
(capped at ``max_payload_bytes``) and acts on the returned ``Delivery``:

* 404 when the provider has no secret configured (the receiver is off);
* 401 when the signature/token is missing or wrong (compared in constant time) - nothing else
  of the request is looked at, not even the JSON;
* 400 when the signed body is not a JSON object of the expected shape;
* 200 ``ignored`` for other events (``ping``, tag pushes) and pushes to other branches;
* 202 ``triggered`` for a push to the tracked branch: the daemon fetches at once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass

PROVIDERS = ("github", "gitlab", "gitea")


@dataclass(frozen=True)
class Delivery:
    status: int
    result: str  # triggered | ignored | unauthorized | invalid | disabled
    detail: str
    commit: str | None = None


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
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Delivery(400, "invalid", f"body is not JSON: {exc}")
    if not isinstance(payload, dict) or not isinstance(payload.get("ref"), str):
        return Delivery(400, "invalid", "push payload without a 'ref' string")
    ref = payload["ref"]
    after = payload.get("after") or payload.get("checkout_sha")
    commit = after if isinstance(after, str) else None
    if ref != f"refs/heads/{branch}":
        return Delivery(200, "ignored", f"push to {ref}, tracking refs/heads/{branch}", commit)
    return Delivery(202, "triggered", f"push to {ref}", commit)
