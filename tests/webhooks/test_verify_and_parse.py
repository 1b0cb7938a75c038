"""Webhook verification and parsing (pure): every provider, every way a delivery is wrong."""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.parse

import pytest

from reconciler.edges.webhooks import verify_and_parse

PUSH = json.dumps({"ref": "refs/heads/main", "after": "a" * 40}).encode()


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def headers(provider: str, secret: str, body: bytes, event: str = "push") -> dict[str, str]:
    if provider == "github":
        return {"x-github-event": event, "x-hub-signature-256": "sha256=" + sign(secret, body)}
    if provider == "gitea":
        return {"x-gitea-event": event, "x-gitea-signature": sign(secret, body)}
    return {"x-gitlab-event": "Push Hook" if event == "push" else event, "x-gitlab-token": secret}


@pytest.mark.parametrize("provider", ["github", "gitlab", "gitea"])
def test_a_signed_push_to_the_tracked_branch_triggers(provider):
    delivery = verify_and_parse(provider, "s3cret", headers(provider, "s3cret", PUSH), PUSH, "main")
    assert (delivery.status, delivery.result, delivery.commit) == (202, "triggered", "a" * 40)


@pytest.mark.parametrize("provider", ["github", "gitlab", "gitea"])
def test_wrong_or_missing_signatures_are_401_before_anything_is_parsed(provider):
    wrong = verify_and_parse(provider, "s3cret", headers(provider, "other", PUSH), PUSH, "main")
    missing = verify_and_parse(provider, "s3cret", {}, b"not json at all", "main")
    tampered_body = PUSH.replace(b"main", b"mainx")
    tampered = verify_and_parse(
        provider, "s3cret", headers(provider, "s3cret", PUSH), tampered_body, "main"
    )
    statuses = {wrong.status, missing.status}
    if provider != "gitlab":  # GitLab's token does not cover the body
        statuses.add(tampered.status)
    assert statuses == {401}


def test_unconfigured_provider_is_404():
    assert verify_and_parse("github", None, {}, PUSH, "main").status == 404


def test_other_branches_tags_and_events_are_ignored():
    tag = json.dumps({"ref": "refs/tags/v1"}).encode()
    branch = json.dumps({"ref": "refs/heads/dev"}).encode()
    for body, event in ((tag, "push"), (branch, "push"), (PUSH, "ping"), (PUSH, "issues")):
        delivery = verify_and_parse(
            "github", "k", headers("github", "k", body, event), body, "main"
        )
        assert (delivery.status, delivery.result) == (200, "ignored"), (body, event)


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"ref": 5}', b"\xff\xfe", b'"string"'])
def test_malformed_signed_payloads_are_400(body):
    delivery = verify_and_parse("gitea", "k", headers("gitea", "k", body), body, "main")
    assert (delivery.status, delivery.result) == (400, "invalid")


def form(payload: bytes) -> bytes:
    return b"payload=" + urllib.parse.quote_from_bytes(payload).encode()


FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.mark.parametrize("provider", ["github", "gitea"])
def test_form_encoded_deliveries_are_accepted_signed_over_the_raw_body(provider):
    body = form(PUSH)
    signed = {**headers(provider, "k", body), **FORM}
    delivery = verify_and_parse(provider, "k", signed, body, "main")
    assert (delivery.status, delivery.result, delivery.commit) == (202, "triggered", "a" * 40)
    # signed over the decoded JSON instead of the raw body: not authentic
    wrong = {**headers(provider, "k", PUSH), **FORM}
    assert verify_and_parse(provider, "k", wrong, body, "main").status == 401


DEEP = b'{"ref": "refs/heads/main", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
MALFORMED = {
    "not json": (b'{"ref": "refs/heads/main", ', {}),
    "not utf-8": (b'{"ref": "\xff\xfe"}', {}),
    "deep nesting": (DEEP, {}),
    "a 5000-digit number": (b'{"ref": "refs/heads/main", "n": ' + b"9" * 5000 + b"}", {}),
    "a 5000-digit ref": (b'{"ref": ' + b"1" * 5000 + b"}", {}),
    "ref not a string": (b'{"ref": ["refs/heads/main"]}', {}),
    "after not a string": (b'{"ref": "refs/heads/main", "after": {"sha": 1}}', {}),
    "no ref": (b'{"after": "' + b"a" * 40 + b'"}', {}),
    "a list": (b"[1, 2]", {}),
    "a number": (b"1e999", {}),
    "NaN": (b"NaN", {}),
    "empty": (b"", {}),
    "form without payload": (b"other=1", FORM),
    "form with two payloads": (form(PUSH) + b"&" + form(PUSH), FORM),
    "form not utf-8": (b"payload=%FF%FE", FORM),
    "form of deep json": (form(DEEP), FORM),
    "form with bad escapes": (b"payload=%7B%%%", FORM),
    "form with many fields": (b"&".join(b"f%d=1" % i for i in range(100)), FORM),
}


@pytest.mark.parametrize("provider", ["github", "gitlab", "gitea"])
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_every_malformed_signed_body_is_400_with_a_reason(provider, case):
    body, extra = MALFORMED[case]
    delivery = verify_and_parse(
        provider, "k", {**headers(provider, "k", body), **extra}, body, "main"
    )
    assert (delivery.status, delivery.result) == (400, "invalid"), delivery
    assert delivery.detail.startswith("not a push payload: ") and len(delivery.detail) < 400
    assert "9999999999" not in delivery.detail  # the input is never echoed
