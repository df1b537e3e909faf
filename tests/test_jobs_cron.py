"""Cron expressions of periodic jobs: the next time each names, in a time zone, across
clock changes; and clear errors for what is not one."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

import onewriter
from onewriter.jobs.cron import next_time


def after(expression: str, tz: str, moment: str) -> str:
    when = next_time(expression, tz, datetime.fromisoformat(moment).timestamp())
    return datetime.fromtimestamp(when, ZoneInfo(tz)).isoformat()


@pytest.mark.parametrize(
    ("expression", "tz", "moment", "expected"),
    [
        ("*/5 * * * *", "UTC", "2026-12-01T22:03:10+00:00", "2026-12-01T22:05:00+00:00"),
        ("*/5 * * * *", "UTC", "2026-12-01T22:05:00+00:00", "2026-12-01T22:10:00+00:00"),
        ("0 9 * * mon-fri", "Europe/Paris", "2026-12-04T09:00:00+01:00",
         "2026-12-07T09:00:00+01:00"),
        ("15,45 8-10/2 * * *", "UTC", "2026-12-01T08:50:00+00:00", "2026-12-01T10:15:00+00:00"),
        ("0 0 1 jan,jul *", "UTC", "2026-02-01T00:00:00+00:00", "2026-07-01T00:00:00+00:00"),
        ("0 12 1 * 0", "UTC", "2026-12-01T13:00:00+00:00", "2026-12-06T12:00:00+00:00"),
        ("0 12 * * 7", "UTC", "2026-12-01T13:00:00+00:00", "2026-12-06T12:00:00+00:00"),
        ("0 0 29 2 *", "UTC", "2026-03-01T00:00:00+00:00", "2028-02-29T00:00:00+00:00"),
        ("59 23 31 12 *", "UTC", "2026-12-31T23:59:00+00:00", "2027-12-31T23:59:00+00:00"),
        # clocks go forward: 02:30 does not exist that night, the next one is a day later
        ("30 2 * * *", "Europe/Paris", "2026-03-28T12:00:00+01:00",
         "2026-03-30T02:30:00+02:00"),
        # clocks go back: 02:30 happens twice, it fires once
        ("30 2 * * *", "Europe/Paris", "2026-10-24T12:00:00+02:00",
         "2026-10-25T02:30:00+02:00"),
        ("30 2 * * *", "Europe/Paris", "2026-10-25T02:30:00+02:00",
         "2026-10-26T02:30:00+01:00"),
        ("0 * * * *", "America/New_York", "2026-06-01T10:20:00-04:00",
         "2026-06-01T11:00:00-04:00"),
    ],
)  # fmt: skip
def test_next_time(expression: str, tz: str, moment: str, expected: str) -> None:
    assert after(expression, tz, moment) == expected


@pytest.mark.parametrize(
    ("expression", "tz", "message"),
    [
        ("* * * *", "UTC", "five fields"),
        ("60 * * * *", "UTC", "outside 0-59"),
        ("* 24 * * *", "UTC", "outside 0-23"),
        ("5-1 * * * *", "UTC", "goes backwards"),
        ("*/0 * * * *", "UTC", "positive"),
        ("* * * foo *", "UTC", "not a number or a name"),
        ("0 0 31 2 *", "UTC", "names no time"),
        ("* * * * *", "Nowhere/Town", "unknown time zone"),
    ],
)
def test_bad_expressions_are_refused_with_the_reason(
    expression: str, tz: str, message: str
) -> None:
    with pytest.raises(onewriter.BadRequest, match=message):
        next_time(expression, tz, 0.0)
