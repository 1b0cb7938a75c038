"""Commit statuses per provider, recorded by a local HTTP server that checks each request
against the provider's documented API: method, path, headers and body."""

from __future__ import annotations

import pytest
import structlog

from reconciler.edges.commit_status.client import HttpPoster
from reconciler.record.sqlite import SqliteStateStore
from reconciler.report.commit_status import StatusWorker
from reconciler.report.events import EventLog
from reconciler.settings import CommitStatusSettings
from reconciler.states import EventKind
from reconciler.testing.receiver import Receiver

BAD, REVERT = "b" * 40, "c" * 40
TOKEN = "status-token-93ab"

# provider -> (repository, path of BAD's statuses, auth header, token header value, context key,
#              state words for pending / failure / success)
PROVIDERS = {
    "github": (
        "ops/desired-state",
        f"/repos/ops/desired-state/statuses/{BAD}",
        "authorization",
        f"Bearer {TOKEN}",
        "context",
        ("pending", "failure", "success"),
    ),
    "gitlab": (
        "ops/desired-state",
        f"/projects/ops%2Fdesired-state/statuses/{BAD}",
        "private-token",
        TOKEN,
        "name",
        ("pending", "failed", "success"),
    ),
    "gitea": (
        "ops/desired-state",
        f"/repos/ops/desired-state/statuses/{BAD}",
        "authorization",
        f"token {TOKEN}",
        "context",
        ("pending", "failure", "success"),
    ),
}


@pytest.fixture
def store(tmp_path):
    store = SqliteStateStore(tmp_path / "state.db")
    yield store
    store.close()


def worker(tmp_path, store, provider, url, **settings):
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    repository = PROVIDERS[provider][0]
    config = CommitStatusSettings(
        provider=provider, api_url=url, token_file=token, repository=repository, **settings
    )
    poster = HttpPoster(provider, url, repository, token, timeout=5)
    status = StatusWorker(poster, store, config)
    status.backoff = type(status.backoff)(0.05, 0.1)
    return status


def bad_rollout(log: EventLog) -> None:
    where = {"environment": "prod", "group": "web", "rollout_id": "ro1", "commit": BAD}
    log.emit(EventKind.ROLLOUT_STARTED, summary="prod/web: rolling out shop 1 -> 2", **where,
             details={"trigger": "change"})  # fmt: skip
    reason = "step 1: gate http failed on web-01: " + "x" * 300
    log.emit(EventKind.ROLLOUT_ROLLED_BACK, summary="prod/web: shop 2 -> 1 rolled back", **where,
             details={"trigger": "change", "reason": reason})  # fmt: skip
    log.emit(EventKind.REVERT_PUSHED, summary="prod/web: revert pushed", **where, details={
        "revert_commit": REVERT, "offending_commit": BAD, "restore": {"shop": "1"},
        "rolled_back": True, "trigger": "change",
    })  # fmt: skip


@pytest.mark.parametrize("provider", sorted(PROVIDERS))
def test_pending_failure_then_success_on_the_revert_as_each_api_documents(
    tmp_path, store, provider
):
    _, path, header, value, context_key, words = PROVIDERS[provider]
    with Receiver(status=201) as api:
        log = EventLog(store)
        base = api.url + ("/api/v1" if provider == "gitea" else "")
        target = "http://r.example/{environment}/{rollout_id}/{commit}"
        status = worker(tmp_path, store, provider, base, target_url=target)
        status.start(log)
        bad_rollout(log)
        calls = api.wait_for(lambda rs: len(rs) == 3, 10, "three statuses")
        log.close()
        status.stop()
    prefix = "/api/v1" if provider == "gitea" else ""
    revert_path = path.replace(BAD, REVERT)
    assert [(c.method, c.path) for c in calls] == [
        ("POST", prefix + path), ("POST", prefix + path), ("POST", prefix + revert_path),
    ]  # fmt: skip
    for call in calls:
        assert call.headers[header] == value
        assert call.headers["content-type"] == "application/json"
        assert call.json[context_key] == "reconciler/prod"
        assert set(call.json) == {"state", context_key, "description", "target_url"}
    assert [c.json["state"] for c in calls] == list(words)
    assert calls[0].json["target_url"] == f"http://r.example/prod/ro1/{BAD}"
    assert "rolled_back: step 1: gate http failed" in calls[1].json["description"]
    limit = 140 if provider == "github" else 255
    assert len(calls[1].json["description"]) <= limit
    assert "web back on shop=1" in calls[2].json["description"]
    if provider == "github":
        assert calls[0].headers["accept"] == "application/vnd.github+json"
        assert calls[0].headers["x-github-api-version"] == "2022-11-28"


def test_retries_server_errors_not_refusals_and_never_logs_the_token(tmp_path, store):
    counted: list[tuple[str, str]] = []
    with structlog.testing.capture_logs() as logs, Receiver(status=[500, 502, 201, 403]) as api:
        log = EventLog(store)
        status = worker(tmp_path, store, "github", api.url)
        status.start(log, lambda label, result: counted.append((label, result)))
        bad_rollout(log)
        api.wait_for(lambda rs: len(rs) >= 5, 10, "the retries and the refusal")
        log.close()
        status.stop()
    states = [r.json["state"] for r in api.requests]
    assert states[:3] == ["pending"] * 3, "500 and 502 are retried"
    assert states[3] == "failure" and states.count("failure") == 1, "403 is not retried"
    assert ("github", "set") in counted and ("github", "failed") in counted
    assert all(TOKEN not in str(entry) for entry in logs)
    failed = [e for e in logs if e["event"] == "commit_status_failed"]
    assert failed and "403" in failed[0]["detail"]


def test_gitlab_already_in_that_state_counts_as_set(tmp_path, store):
    answer = b'{"message":"Cannot transition status via :enqueue from :pending"}'
    with Receiver(status=400, answer=answer) as api:
        poster = worker(tmp_path, store, "gitlab", api.url).poster
        from reconciler.edges.commit_status import Status

        assert poster.post(Status(BAD, "pending", "reconciler/prod", "x")).ok


def test_a_restart_posts_nothing_twice(tmp_path, store):
    with Receiver(status=201) as api:
        log = EventLog(store)
        first = worker(tmp_path, store, "github", api.url)
        first.start(log)
        bad_rollout(log)
        api.wait_for(lambda rs: len(rs) == 3, 10, "three statuses")
        log.close()
        first.stop()
        again, log = worker(tmp_path, store, "github", api.url), EventLog(store)
        again.start(log)
        log.emit(EventKind.ENVIRONMENT_SYNCED, summary="prod: in sync at ddd", environment="prod",
                 commit="d" * 40)  # fmt: skip
        calls = api.wait_for(lambda rs: len(rs) >= 4, 10, "the new status")
        log.close()
        again.stop()
    assert len(calls) == 4 and calls[-1].path.endswith("d" * 40)
