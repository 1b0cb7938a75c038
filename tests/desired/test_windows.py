"""Maintenance windows: crontab semantics (cronsim), time zones, the open/closed decision."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from reconciler.desired import windows
from reconciler.desired.schema import MaintenanceWindow

BERLIN = ZoneInfo("Europe/Berlin")


def test_weekday_range_means_monday_to_friday_as_in_crontab():
    # APScheduler's from_crontab read "1-5" as Tuesday to Saturday; crontab(5) says Mon-Fri.
    window = MaintenanceWindow(cron="0 2 * * 1-5", duration="2h", timezone="Europe/Berlin")
    monday = datetime(2026, 11, 23, 2, 30, tzinfo=BERLIN)
    saturday = datetime(2026, 11, 28, 2, 30, tzinfo=BERLIN)
    assert windows.is_open(window, monday)
    assert not windows.is_open(window, saturday)
    assert windows.next_open(window, saturday) == datetime(2026, 11, 30, 2, 0, tzinfo=BERLIN)


def test_window_closes_after_its_duration():
    window = MaintenanceWindow(cron="0 2 * * *", duration="1h", timezone="UTC")
    assert windows.is_open(window, datetime(2026, 5, 1, 2, 59, 59, tzinfo=UTC))
    assert not windows.is_open(window, datetime(2026, 5, 1, 3, 0, 0, tzinfo=UTC))
    assert not windows.is_open(window, datetime(2026, 5, 1, 1, 59, 59, tzinfo=UTC))


def test_monthly_window_after_a_daylight_saving_change():
    # APScheduler skipped April 1 here (next fire: May 1).
    window = MaintenanceWindow(cron="0 0 1 * *", duration="1h", timezone="Europe/Berlin")
    after_dst = datetime(2026, 3, 30, 12, 0, tzinfo=UTC)
    assert windows.next_open(window, after_dst) == datetime(2026, 4, 1, 0, 0, tzinfo=BERLIN)


def test_no_windows_is_always_open_and_any_open_window_allows_changes():
    now = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    closed = MaintenanceWindow(cron="0 2 * * *", duration="1h", timezone="UTC")
    open_now = MaintenanceWindow(cron="0 12 * * *", duration="1h", timezone="UTC")
    assert windows.windows_open((), now)
    assert not windows.windows_open((closed,), now)
    assert windows.windows_open((closed, open_now), now)
    assert windows.next_window((closed,), now) == datetime(2026, 6, 2, 2, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cron": "61 * * * *", "duration": "1h"}, "invalid cron expression '61 * * * *'"),
        ({"cron": "0 2 * *", "duration": "1h"}, "invalid cron expression '0 2 * *'"),
        ({"cron": "0 2 * * *", "duration": "1h", "timezone": "Mars/Olympus"}, "unknown timezone"),
        ({"cron": "0 2 * * *", "duration": 0}, "positive duration"),
    ],
)
def test_invalid_windows_say_why(fields, message):
    with pytest.raises(ValidationError, match=message.replace("*", r"\*")):
        MaintenanceWindow.model_validate(fields)
