"""Webhooks on the real daemon: a signed push converges the fleet; bad deliveries do nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

from tests.daemon.conftest import SECRETS, TOKEN, wait_for

BUMP = {"web": {"shop": "1.1.0"}, "worker": {"jobs": "3.0.0"}}


def _first_step_started(daemon, commit: str) -> float | None:
    for rollout in daemon.rollouts():
        if rollout["commit"] == commit:
            steps = daemon.get(f"/api/v1/rollouts/{rollout['id']}").json()["steps"]
            if steps:
                return min(s["started_at"] for s in steps)
    return None


def test_signed_github_push_converges_the_fleet(converged, capsys):
    daemon = converged
    sha = daemon.setup.commit_versions(BUMP, "bump shop to 1.1.0")
    sent = time.time()
    response = daemon.github_push()
    assert response.status_code == 202, response.text
    assert response.json()["result"] == "triggered"

    started = wait_for(lambda: _first_step_started(daemon, sha), 60, "the first playbook step")
    wait_for(lambda: daemon.converged("1.1.0"), 120, "convergence to 1.1.0")
    assert daemon.status()["source"]["valid_commit"] == sha
    with capsys.disabled():
        print(f"\nwebhook -> first playbook step journalled: {started - sent:.3f}s")
    assert [e for e in daemon.events() if e.get("event") == "webhook"][-1]["result"] == "triggered"


def _sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _webhook_sync_requests(daemon) -> list[dict]:
    """The sync requests webhooks made. The daemon logs each one (``sync_requested``, debug
    level) synchronously, before the delivery's response is sent: once a response is here, a
    request it caused is in the log; no waiting is needed to see that none was made."""
    return [
        e
        for e in daemon.events()
        if e.get("event") == "sync_requested" and str(e.get("reason", "")).startswith("webhook")
    ]


def test_bad_deliveries_get_their_status_and_trigger_nothing(setup, make_daemon):
    setup.commit_versions({"web": {"shop": "1.0.0"}, "worker": {"jobs": "3.0.0"}}, "initial")
    daemon = make_daemon(daemon={"log_level": "debug"}).start()
    daemon.wait_converged("1.0.0", "the initial convergence")
    before = daemon.status()["source"]
    daemon.setup.commit_versions(BUMP, "bump that nobody announces properly")
    push = json.dumps({"ref": "refs/heads/main", "after": "a" * 40}).encode()
    other_branch = json.dumps({"ref": "refs/heads/feature", "after": "b" * 40}).encode()
    malformed = b'{"ref": "refs/heads/main", '
    huge = json.dumps({"ref": "refs/heads/main", "pad": "x" * 70000}).encode()
    gh = {"X-GitHub-Event": "push"}
    # signed, so they pass authentication, and still not a push: 400 each, never a 500
    signed_invalid = [
        b'{"ref": "refs/heads/main", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"ref": "refs/heads/main", "n": ' + b"9" * 5000 + b"}",
        b'{"ref": "refs/heads/main", "after": {"sha": 1}}',
        b'{"ref": 1e999}',
    ]
    cases = [
        *(
            (
                "github",
                body,
                {**gh, "X-Hub-Signature-256": "sha256=" + _sign(SECRETS["github"], body)},
                400,
            )
            for body in signed_invalid
        ),
        ("github", push, {**gh, "X-Hub-Signature-256": "sha256=" + "0" * 64}, 401),
        ("github", push, gh, 401),
        ("github", push, {**gh, "X-Hub-Signature-256": "sha256=" + _sign("wrong", push)}, 401),
        (
            "github",
            other_branch,
            {**gh, "X-Hub-Signature-256": "sha256=" + _sign(SECRETS["github"], other_branch)},
            200,
        ),
        (
            "github",
            malformed,
            {**gh, "X-Hub-Signature-256": "sha256=" + _sign(SECRETS["github"], malformed)},
            400,
        ),
        (
            "github",
            huge,
            {**gh, "X-Hub-Signature-256": "sha256=" + _sign(SECRETS["github"], huge)},
            413,
        ),
        ("gitlab", push, {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": "nope"}, 401),
        ("gitlab", push, {"X-Gitlab-Event": "Push Hook"}, 401),
        ("gitea", push, {"X-Gitea-Event": "push", "X-Gitea-Signature": _sign("nope", push)}, 401),
        ("gitea", push, {"X-Gitea-Event": "push"}, 401),
        (
            "github",
            push,
            {
                "X-GitHub-Event": "ping",
                "X-Hub-Signature-256": "sha256=" + _sign(SECRETS["github"], push),
            },
            200,
        ),
    ]
    for provider, body, headers, status in cases:
        response = daemon.webhook(provider, body, headers)
        assert response.status_code == status, (provider, headers, response.text)
        assert response.json()["result"] != "triggered"
    unknown = daemon.webhook("bitbucket", push, {})
    assert unknown.status_code == 422
    assert _webhook_sync_requests(daemon) == [], "a rejected delivery requested a sync"
    after = daemon.status()["source"]
    assert after["last_fetch_at"] == before["last_fetch_at"], "a rejected delivery fetched"
    assert after["valid_commit"] == before["valid_commit"]
    assert daemon.served()["web-01"] == "1.0.0"
    metrics = daemon.get("/metrics").text
    assert 'reconciler_webhooks_total{provider="github",result="unauthorized"} 3.0' in metrics
    assert 'reconciler_webhooks_total{provider="github",result="too_large"} 1.0' in metrics
    assert 'reconciler_webhooks_total{provider="github",result="invalid"} 5.0' in metrics
    # Then a good GitLab and Gitea delivery each trigger.
    gitlab = daemon.webhook(
        "gitlab", push, {"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": SECRETS["gitlab"]}
    )
    assert gitlab.status_code == 202, gitlab.text
    assert [e["reason"] for e in _webhook_sync_requests(daemon)] == ["webhook:gitlab"]
    wait_for(lambda: daemon.converged("1.1.0"), 120, "convergence after the GitLab push")
    gitea = daemon.webhook(
        "gitea", push, {"X-Gitea-Event": "push", "X-Gitea-Signature": _sign(SECRETS["gitea"], push)}
    )
    assert gitea.status_code == 202, gitea.text
    # GitHub's default delivery: form-encoded, payload=<json>, signed over the raw body
    form = b"payload=" + urllib.parse.quote_from_bytes(push).encode()
    github_form = daemon.webhook(
        "github",
        form,
        {
            **gh,
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Hub-Signature-256": "sha256=" + _sign(SECRETS["github"], form),
        },
    )
    assert github_form.status_code == 202, github_form.text
    assert _webhook_sync_requests(daemon)[-1]["reason"] == "webhook:github"
    logged = daemon.log_path.read_text()
    for secret in (*SECRETS.values(), TOKEN):
        assert secret not in logged, "a secret reached the log"


def test_a_burst_of_pushes_is_one_reconcile_of_the_newest_commit(converged):
    daemon = converged
    for version in ("1.0.1", "1.0.2", "1.1.0"):
        newest = daemon.setup.commit_versions(
            {"web": {"shop": version}, "worker": {"jobs": "3.0.0"}}, f"shop {version}"
        )
    before = {r["id"] for r in daemon.rollouts()}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: daemon.github_push(), range(8)))
    assert all(a.status_code == 202 for a in answers)
    wait_for(lambda: daemon.converged("1.1.0"), 120, "convergence to the newest commit")
    new = [r for r in daemon.rollouts() if r["id"] not in before]
    assert [(r["group"], r["commit"], r["state"]) for r in new] == [("web", newest, "succeeded")]
