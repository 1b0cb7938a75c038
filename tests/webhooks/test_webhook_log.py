"""The in-memory list of the newest webhook deliveries (``report.webhook_log``)."""

from __future__ import annotations

from reconciler.report.webhook_log import WebhookLog


def test_newest_first_and_bounded():
    log = WebhookLog(size=3)
    for n in range(5):
        log.record("github", {}, "ignored", f"delivery {n}", None, at=float(n))
    assert [v.detail for v in log.views()] == ["delivery 4", "delivery 3", "delivery 2"]


def test_hostile_values_are_dropped_or_made_safe():
    log = WebhookLog()
    log.record(
        "github",
        {"x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"},
        "triggered",
        "push to main",
        "0123456789abcdef0123456789abcdef01234567",
    )
    log.record(
        "gitea",
        {"x-gitea-delivery": "<script>alert(1)</script>"},
        "invalid",
        "bad\x1b[31m" + "x" * 5000,
        "not-a-sha; rm -rf /",
    )
    hostile, good = log.views()
    assert good.delivery == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert good.commit == "0123456789abcdef0123456789abcdef01234567"
    assert hostile.delivery is None and hostile.commit is None
    assert "\x1b" not in hostile.detail and len(hostile.detail) <= 200
    assert hostile.detail.startswith("bad")


def test_gitlab_names_its_delivery_in_another_header():
    log = WebhookLog()
    log.record("gitlab", {"x-gitlab-event-uuid": "abc-123"}, "ignored", "tag push", None)
    log.record("gitlab", {"x-github-delivery": "abc-456"}, "ignored", "tag push", None)
    assert [v.delivery for v in log.views()] == [None, "abc-123"]
