"""``GET /api/v1/events`` and its Server-Sent Events stream on the real server (``report.server``)
and a real event log, with a small stand-in for the daemon."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from reconciler.record.sqlite import SqliteStateStore
from reconciler.report import api, server
from reconciler.report.events import EventLog
from reconciler.report.metrics import Metrics
from reconciler.service import wiring
from reconciler.settings import Settings
from reconciler.states import EventKind

READ = "read-token-1"


@dataclass
class Daemon:
    """The part of ``report.api.Control`` the event routes use."""

    event_feed: EventLog
    ready: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)
    metrics: Metrics = field(default_factory=lambda: Metrics(lambda: None))  # type: ignore[arg-type]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, EventLog]]:
    (tmp_path / "read").write_text(READ + "\n")
    settings = Settings(
        state_dir=tmp_path / "state",
        api={"read_token_file": str(tmp_path / "read")},
        events={"heartbeat": 0.3, "max_streams": 2},
    )
    store = SqliteStateStore(tmp_path / "state.db")
    log = wiring.event_log(settings, store)  # events.max_streams reaches the log
    url, stop = server.serve(api.create_app(Daemon(log), settings), "127.0.0.1", 0)
    try:
        yield url, log
    finally:
        log.close()
        stop()
        store.close()


def emit(log: EventLog, n: int, env: str = "prod", kind=EventKind.STEP_FINISHED) -> None:
    log.emit(kind, summary=f"event {n}", environment=env, group="web")


def client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {READ}"}, timeout=10)


def test_reads_need_the_read_token(served):
    url, _ = served
    assert httpx.get(f"{url}/api/v1/events").status_code == 401
    assert httpx.get(f"{url}/api/v1/events/stream").status_code == 401


def test_pages_newest_first_with_filters_and_a_cursor(served):
    url, log = served
    for n in range(7):
        emit(log, n, env="prod" if n % 2 == 0 else "stage")
    emit(log, 7, kind=EventKind.GATE_FAILED)
    with client(url) as http:
        first = http.get("/api/v1/events", params={"environment": "prod", "limit": 2}).json()
        assert [e["summary"] for e in first["events"]] == ["event 7", "event 6"]
        second = http.get(
            "/api/v1/events", params={"environment": "prod", "limit": 2, "cursor": first["next"]}
        ).json()
        assert [e["summary"] for e in second["events"]] == ["event 4", "event 2"]
        errors = http.get("/api/v1/events", params={"min_severity": "error"}).json()
        assert [e["kind"] for e in errors["events"]] == ["gate_failed"] and errors["next"] is None
        kinds = http.get(
            "/api/v1/events", params=[("kind", "gate_failed"), ("kind", "step_finished")]
        )
        assert len(kinds.json()["events"]) == 8
        assert http.get("/api/v1/events", params={"kind": "nope"}).status_code == 422
        assert http.get("/api/v1/events", params={"limit": 0}).status_code == 422
        assert "/api/v1/events/stream" not in http.get("/openapi.json").json()["paths"]


def read_stream(url: str, headers: dict[str, str], out: list, done: threading.Event, **params):
    with httpx.stream(
        "GET", f"{url}/api/v1/events/stream", params=params,
        headers={"Authorization": f"Bearer {READ}", **headers},
        timeout=httpx.Timeout(10, read=None),
    ) as response:  # fmt: skip
        out.append(("status", response.status_code))
        for line in response.iter_lines():
            out.append(("line", line))
    done.set()


def test_the_stream_resumes_after_last_event_id_without_loss_and_ends_at_close(served):
    url, log = served
    for n in range(5):
        emit(log, n)
    lines: list = []
    done = threading.Event()
    threading.Thread(
        target=read_stream, args=(url, {"Last-Event-ID": "2"}, lines, done), daemon=True
    ).start()
    deadline = time.monotonic() + 10
    while sum(1 for kind, line in lines if line == ": heartbeat") < 1:
        assert time.monotonic() < deadline, lines
        time.sleep(0.05)
    emit(log, 5)
    emit(log, 6, env="stage")
    while sum(1 for _, line in lines if str(line).startswith("data:")) < 5:
        assert time.monotonic() < deadline, lines
        time.sleep(0.05)
    log.close()  # the daemon's shutdown
    assert done.wait(10), "the stream ends when the log closes"
    data = [json.loads(line[5:]) for _, line in lines if str(line).startswith("data:")]
    assert [d["summary"] for d in data[:5]] == [f"event {n}" for n in (2, 3, 4, 5, 6)]
    ids = [line for _, line in lines if str(line).startswith("id:")]
    assert ids[:5] == [f"id: {n}" for n in range(3, 8)]
    assert ("line", "event: step_finished") in lines
    assert ("line", "event: end") in lines and ("line", "retry: 3000") in lines


def test_stream_filters_and_the_cap_on_streams(served):
    url, log = served
    lines: list = []
    done = threading.Event()
    for _ in range(2):
        threading.Thread(
            target=read_stream, args=(url, {}, lines, done), kwargs={"environment": "stage"},
            daemon=True,
        ).start()  # fmt: skip
    deadline = time.monotonic() + 10
    while lines.count(("line", ": connected")) < 2:
        assert time.monotonic() < deadline, lines
        time.sleep(0.05)
    with client(url) as http:
        assert http.get("/api/v1/events/stream").status_code == 503
        assert http.get("/api/v1/events/stream", headers={"Last-Event-ID": "x"}).status_code == 400
    emit(log, 1, env="prod")
    emit(log, 2, env="stage")
    while sum(1 for _, line in lines if str(line).startswith("data:")) < 2:
        assert time.monotonic() < deadline, lines
        time.sleep(0.05)
    summaries = [
        json.loads(line[5:])["summary"] for _, line in lines if str(line).startswith("data:")
    ]
    assert summaries == ["event 2", "event 2"]
