"""Issue 14 end to end: a real daemon tells what happened (a good bump, a bad version rolled back
and reverted, a rejected commit) in its event log, on its event stream, to a notification
receiver (a real apprise ``json://`` delivery) and as statuses on the commits (a local
GitHub-shaped API), in order; secrets stay out; a restart resends nothing; the stream ends at
shutdown. One daemon and one fleet for all of it: the suite's time is precious."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from typing import Any

import httpx
import pytest

from reconciler.testing.receiver import Receiver
from tests.daemon.conftest import RECONCILER, wait_for
from tests.end_to_end.test_rollout import env_text

TOKEN, HOOK = "gh-status-token-7d1e", "hook-secret-5c2a"
BAD_ORDER = [
    "commit_accepted",
    "rollout_started",
    "step_finished",
    "gate_failed",
    "rollout_rolled_back",
    "revert_pushed",
]


class Stream:
    """An SSE client in a thread, collecting ``(id, event, data)`` until the stream ends."""

    def __init__(self, url: str, after: int) -> None:
        self.items: list[dict[str, Any]] = []
        self.ended = threading.Event()
        self.end_event = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(url, after), daemon=True)
        self._thread.start()

    def _read(self, url: str, after: int) -> None:
        timeout = httpx.Timeout(10.0, read=None)
        with httpx.stream(
            "GET", f"{url}/api/v1/events/stream", headers={"Last-Event-ID": str(after)},
            timeout=timeout,
        ) as response:  # fmt: skip
            assert response.headers["content-type"].startswith("text/event-stream")
            fields: dict[str, str] = {}
            for line in response.iter_lines():
                if line and not line.startswith(":"):
                    name, _, value = line.partition(":")
                    fields[name] = value.strip()
                elif not line and fields:
                    with self._changed:
                        if fields.get("event") == "end":
                            self.end_event = True
                        elif "data" in fields:
                            self.items.append({**fields, "data": json.loads(fields["data"])})
                        self._changed.notify_all()
                    fields = {}
        self.ended.set()

    def kinds(self) -> list[str]:
        with self._changed:
            return [i["event"] for i in self.items]

    def wait_kind(self, kind: str, timeout: float) -> None:
        wait_for(lambda: kind in self.kinds(), timeout, f"{kind} on the event stream")


def subsequence(expected: list[str], found: list[str]) -> bool:
    position = 0
    for kind in found:
        if position < len(expected) and kind == expected[position]:
            position += 1
    return position == len(expected)


def log_kinds(daemon, after: int) -> list[dict[str, Any]]:
    page = daemon.get(f"/api/v1/events?after={after}&limit=1000").json()
    return list(reversed(page["events"]))


@pytest.fixture
def receivers(tmp_path):
    notify, github = Receiver(), Receiver(status=201)
    urls = tmp_path / "notify-urls"
    urls.write_text(
        f"# the route's apprise URLs\njson://127.0.0.1:{notify.port}/hook?+X-Hook-Token={HOOK}\n"
    )
    token = tmp_path / "gh-token"
    token.write_text(TOKEN + "\n")
    yield (
        notify,
        github,
        {
            "notifications": {
                "routes": [{"name": "ops", "urls_file": str(urls)}],
                "backoff": "200ms",
            },
            "commit_status": {
                "provider": "github",
                "api_url": github.url,
                "token_file": str(token),
                "repository": "ops/desired-state",
                "target_url": "http://reconciler.example/{environment}/{rollout_id}",
            },
        },
    )
    notify.close()
    github.close()


def statuses(github: Receiver, sha: str) -> list[str]:
    return [
        r.json["state"]
        for r in github.requests
        if r.path == f"/repos/ops/desired-state/statuses/{sha}"
    ]


def event_id(request) -> int:
    """The event id a notification names (its last line: ``event #N[, rollout ...]``)."""
    last = request.json["message"].splitlines()[-1]
    assert last.startswith("event #"), last
    return int(last.split(",")[0].removeprefix("event #"))


def told(notify: Receiver, after: int) -> list:
    return [r for r in notify.requests if event_id(r) > after]


def titles(requests) -> list[str]:
    return [r.json["title"] for r in requests]


def newest(daemon) -> int:
    return int(daemon.get("/api/v1/events?limit=1").json()["events"][0]["id"])


def test_good_bump_bad_version_and_rejected_commit_are_told_in_order_everywhere(
    setup, make_daemon, receivers
):
    """One daemon, one fleet: a good bump, a bad version rolled back and reverted, a rejected
    commit, then a restart; each told in the event log, on the stream, to the notification
    receiver (a real apprise ``json://`` delivery) and as GitHub commit statuses."""
    notify, github, sections = receivers
    setup.commit_versions({"web": {"shop": "1.0.0"}, "worker": {"jobs": "3.0.0"}}, "initial")
    daemon = make_daemon(**sections).start()
    daemon.wait_converged("1.0.0", "the initial convergence")
    setup.fleet.build("shop", "1.2.0", "unhealthy")

    # A good bump (of the workers, with the gates): accepted, started, steps, succeeded, synced.
    before = newest(daemon)
    good = setup.remote.commit("bump jobs", {"environments/prod.yaml": env_text("1.0.0", "3.1.0")})
    assert daemon.post("/api/v1/sync", {"wait": True, "timeout": 120}).status_code == 202
    good_order = [
        "reconciler: commit accepted", "prod/worker: rollout started",
        "prod/worker: step finished", "prod/worker: rollout succeeded",
        "prod: environment synced",
    ]  # fmt: skip
    got = notify.wait_for(
        lambda rs: subsequence(good_order, titles(told(notify, before))), 60, "the good bump"
    )
    bodies = {r.json["title"]: r.json for r in got if event_id(r) > before}
    assert good in bodies["reconciler: commit accepted"]["message"]
    assert "prod/worker: jobs 3.0.0 -> 3.1.0" in bodies["reconciler: commit accepted"]["message"]
    assert "versions: jobs: 3.0.0 -> 3.1.0" in bodies["prod/worker: rollout started"]["message"]
    steps = [r.json["message"] for r in told(notify, before) if "step finished" in r.json["title"]]
    assert [m.splitlines()[1] for m in steps] == ["deploy step 1/3", "deploy step 3/3"]
    assert bodies["prod/worker: rollout succeeded"]["type"] == "success"
    assert bodies["prod: environment synced"]["type"] == "success"
    assert all(r.method == "POST" and r.path.startswith("/hook") for r in got)
    assert all(r.headers["content-type"] == "application/json" for r in got)
    assert all(r.headers["x-hook-token"] == HOOK for r in got), "the URL file's header is sent"
    wait_for(lambda: statuses(github, good) == ["pending", "success"], 30, "the good statuses")

    # A bad version: told in order in the log, on the stream, to the receiver, on the commits.
    before = newest(daemon)
    stream = Stream(daemon.url, before)
    bad = setup.remote.commit("bad bump", {"environments/prod.yaml": env_text("1.2.0", "3.1.0")})
    assert daemon.github_push().status_code == 202
    stream.wait_kind("revert_pushed", 300)
    revert = setup.remote.remote_head()
    assert revert not in (good, bad)

    # The event log, in order, with what a chat message needs.
    logged = log_kinds(daemon, before)
    assert subsequence(BAD_ORDER, [e["kind"] for e in logged]), [e["kind"] for e in logged]
    by_kind: dict[str, dict[str, Any]] = {}
    for e in logged:  # the first of each kind (the revert commit is accepted after)
        by_kind.setdefault(e["kind"], e)
    assert by_kind["commit_accepted"]["commit"] == bad
    assert {"environment": "prod", "group": "web", "app": "shop", "from": "1.0.0",
            "to": "1.2.0"} in by_kind["commit_accepted"]["details"]["changes"]  # fmt: skip
    started = by_kind["rollout_started"]
    assert started["commit"] == bad and started["details"]["versions"]["shop"] == {
        "from": ["1.0.0"], "to": "1.2.0",
    }  # fmt: skip
    step = next(e for e in logged if e["kind"] == "step_finished")
    assert (step["details"]["step"], step["details"]["steps"], step["details"]["phase"]) == (
        1, 3, "deploy",
    )  # fmt: skip
    [canary] = step["details"]["hosts"]
    gate = by_kind["gate_failed"]
    assert gate["details"]["host"] == canary and gate["details"]["version"] == "1.2.0"
    assert "-> 500 (expected 200), got" in gate["details"]["detail"]  # the body it saw
    assert canary in gate["summary"] and "unhealthy" in gate["details"]["detail"]
    rolled = by_kind["rollout_rolled_back"]
    assert rolled["severity"] == "error" and "shop 1.2.0 -> 1.0.0" in rolled["summary"]
    pushed = by_kind["revert_pushed"]
    assert pushed["details"]["revert_commit"] == revert
    assert pushed["details"]["offending_commit"] == bad
    assert pushed["details"]["restore"] == {"shop": "1.0.0"}

    # The same events, in the same order, on the stream (ids and kinds as logged).
    streamed = [(i["id"], i["event"]) for i in stream.items]
    assert streamed[: len(logged)] == [(str(e["id"]), e["kind"]) for e in logged][: len(streamed)]
    assert subsequence(BAD_ORDER, stream.kinds())

    # The notification receiver got them in order, each once.
    wanted = ["reconciler: commit accepted"]
    wanted += [f"prod/web: {k.replace('_', ' ')}" for k in BAD_ORDER[1:]]
    got = notify.wait_for(
        lambda rs: subsequence(wanted, titles(told(notify, before))), 60, "the notifications"
    )
    got = told(notify, before)
    bodies: dict[str, str] = {}
    for r in got:  # the first of each title
        bodies.setdefault(r.json["title"], r.json["message"])
    assert bad[:12] in bodies["reconciler: commit accepted"]
    assert "shop: 1.0.0 -> 1.2.0" in bodies["prod/web: rollout started"]
    assert canary in bodies["prod/web: gate failed"]
    assert "unhealthy" in bodies["prod/web: gate failed"]
    assert revert in bodies["prod/web: revert pushed"]
    assert {r.json["type"] for r in got if r.json["title"] == "prod/web: rollout rolled back"} == {
        "failure"
    }

    # The commit statuses: pending -> failure on the bad commit, success on the revert.
    wait_for(lambda: statuses(github, revert) == ["success"], 60, "success on the revert")
    assert statuses(github, bad) == ["pending", "failure"]
    call = next(r for r in github.requests if r.path.endswith(bad))
    assert call.method == "POST"
    assert call.headers["authorization"] == f"Bearer {TOKEN}"
    assert call.headers["accept"] == "application/vnd.github+json"
    assert call.json["context"] == "reconciler/prod"
    assert call.json["target_url"].startswith("http://reconciler.example/prod/")
    failure = [r.json for r in github.requests if r.path.endswith(bad)][-1]
    assert "gate http failed" in failure["description"] and len(failure["description"]) <= 140

    # A rejected commit: told once, with its problem, and failure on it.
    before = newest(daemon)
    setup.remote.git(setup.remote.work, "pull", "--quiet", "--ff-only", "origin", "main")
    broken = setup.remote.commit("broken", {"environments/prod.yaml": "environment: nope\n"})
    assert daemon.post("/api/v1/sync", {"wait": True, "timeout": 120}).status_code == 202
    notify.wait_for(
        lambda rs: "reconciler: commit rejected" in titles(told(notify, before)), 60, "rejection"
    )
    [rejected] = [r for r in told(notify, before) if r.json["title"].endswith("rejected")]
    assert rejected.json["title"] == "reconciler: commit rejected"
    assert rejected.json["type"] == "failure"
    assert broken[:12] in rejected.json["message"]
    assert "problem: environments/prod.yaml:1:" in rejected.json["message"]
    wait_for(lambda: statuses(github, broken) == ["failure"], 30, "failure on the rejected")

    # Counted, and no secret in the daemon's log, its event log or its metrics.
    metrics = daemon.get("/metrics").text
    assert 'reconciler_notifications_total{result="sent",route="ops"}' in metrics
    assert 'reconciler_commit_statuses_total{provider="github",result="set"}' in metrics
    every_event = daemon.get("/api/v1/events?limit=1000").text
    for secret in (TOKEN, HOOK):
        for where, text in [("log", daemon.log_path.read_text()), ("metrics", metrics),
                            ("events", every_event)]:  # fmt: skip
            assert secret not in text, f"a secret in the daemon's {where}"

    # `reconciler events` through the daemon, as JSON lines.
    shown = subprocess.run(
        [RECONCILER, "--config", str(daemon.config), "events", "--env", "prod", "-o", "json",
         "--limit", "200"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    kinds = [json.loads(line)["kind"] for line in shown.stdout.splitlines()]
    assert subsequence(BAD_ORDER[1:], kinds)

    # A restart resends nothing, and the stream ends cleanly at shutdown.
    sent = len(notify.requests)
    assert daemon.stop() == 0
    assert stream.ended.wait(30) and stream.end_event
    daemon.start()
    assert daemon.post("/api/v1/sync", {"wait": True, "timeout": 120}).status_code == 202
    last = newest(daemon)
    notify.wait_for(lambda rs: any(event_id(r) == last for r in rs), 60, "the newest event")
    found = [event_id(r) for r in notify.requests]
    assert len(found) == len(set(found)) >= sent, "an event was sent twice"
    assert titles(notify.requests).count("reconciler: commit rejected") == 1
