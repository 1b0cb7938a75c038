"""Notifications through apprise to a local HTTP receiver (``json://``): the route's filters,
the message, retries with backoff, and secrets. The payloads of a real rollout (good bump, bad
version rolled back, rejected commit) are checked end to end in tests/daemon/test_events.py."""

from __future__ import annotations

import logging

import pytest
import structlog

from reconciler.record import Event
from reconciler.record.sqlite import SqliteStateStore
from reconciler.report.events import EventLog
from reconciler.report.notifications import RouteWorker, matches, message
from reconciler.settings import NotificationRoute, NotificationSettings
from reconciler.states import EventKind, Severity
from reconciler.testing.receiver import Receiver


def route_file(tmp_path, *urls: str):
    path = tmp_path / "urls"
    path.write_text("# apprise URLs\n\n" + "\n".join(urls) + "\n")
    return path


def titles(requests) -> list[str]:
    return [r.json["title"] for r in requests]


def event(kind=EventKind.GATE_FAILED, env="prod", group="web", severity=None) -> Event:
    from reconciler.record.events import SEVERITY

    return Event(7, 1.0, kind, severity or SEVERITY[kind], "prod/web: it failed", env, group,
                 "ro1", "c" * 40, {"host": "web-01", "gate": "http", "detail": "500"})  # fmt: skip


def test_route_filters():
    route = NotificationRoute(
        name="r", urls_file="/x", environments=["prod"], groups=["web"],
        kinds=[EventKind.GATE_FAILED, EventKind.COMMIT_REJECTED], min_severity=Severity.WARNING,
    )  # fmt: skip
    assert matches(route, event())
    assert not matches(route, event(env="stage"))
    assert not matches(route, event(group="worker"))
    assert not matches(route, event(EventKind.ROLLOUT_STARTED))
    assert not matches(route, event(severity=Severity.INFO))
    assert matches(route, event(EventKind.COMMIT_REJECTED, env=None, group=None)), (
        "an event of no environment concerns every environment"
    )
    title, body, kind = message(event())
    assert (title, kind) == ("prod/web: gate failed", "failure")
    assert "event #7, rollout ro1" in body and "on web-01" in body


def test_retries_with_backoff_then_counts_and_never_logs_the_url(tmp_path, caplog):
    store = SqliteStateStore(tmp_path / "state.db")
    counted: list[tuple[str, str]] = []
    with Receiver(status=[500, 500, 200]) as flaky, Receiver(status=503) as dead:
        secret = "s3cr3t-p4ss"
        channels = wiring_channels(
            tmp_path,
            f"json://user:{secret}@127.0.0.1:{flaky.port}/a",
            f"json://user:{secret}@127.0.0.1:{dead.port}/b?token=t0k3n-xyz",
        )
        settings = NotificationSettings(attempts=3, backoff=0.05, max_backoff=0.1)
        route = NotificationRoute(name="ops", urls_file=tmp_path / "urls")
        log = EventLog(store)
        worker = RouteWorker(route, channels, store, settings)
        caplog.set_level(logging.DEBUG)
        with structlog.testing.capture_logs() as logs:
            worker.start(log, lambda label, result: counted.append((label, result)))
            log.emit(EventKind.GATE_FAILED, summary="prod/web: gate failed", environment="prod")
            flaky.wait_for(lambda rs: len(rs) == 3, 10, "three attempts")
            dead.wait_for(lambda rs: len(rs) == 3, 10, "three attempts")
            log.close()
            worker.stop()
    assert sorted(counted) == [("ops", "failed"), ("ops", "sent")]
    text = caplog.text + str(logs)
    assert secret not in text and "t0k3n-xyz" not in text
    assert any(e["event"] == "notification_failed" for e in logs)
    assert store.get_meta("notifications.ops.delivered") == str(store.newest_event_id())


def wiring_channels(tmp_path, *urls: str):
    from reconciler.edges.notify import apprise_channels

    return apprise_channels.load(route_file(tmp_path, *urls))


def test_an_unusable_url_file_names_the_line_never_the_url(tmp_path):
    from reconciler.edges.notify import apprise_channels

    path = route_file(tmp_path, "json://127.0.0.1:9/x", "nosuchscheme://secret-value@host")
    with pytest.raises(ValueError, match=r"urls:4: not a usable apprise URL") as info:
        apprise_channels.load(path)
    assert "secret-value" not in str(info.value)
