"""Cron expressions for periodic jobs: five fields (minute, hour, day of month, month,
day of week) with ``*``, numbers, ranges ``a-b``, steps ``*/n`` and ``a-b/n``, lists
``a,b``, and the names of months and weekdays (``jan``, ``mon``; Sunday is 0 or 7).

As in cron, when both the day of month and the day of week are restricted, a day that
matches either fires. Times are read in the schedule's time zone (``zoneinfo``): a wall
time that does not exist (the hour skipped when clocks go forward) is skipped, one that
happens twice (clocks go back) fires once, the first time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import BadRequest

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
#: (lowest, highest, names) of each field.
_FIELDS: tuple[tuple[int, int, dict[str, int]], ...] = (
    (0, 59, {}),
    (0, 23, {}),
    (1, 31, {}),
    (1, 12, {name: i + 1 for i, name in enumerate(_MONTHS)}),
    (0, 7, {name: i for i, name in enumerate(_DAYS)}),
)
#: How far ahead a next time is looked for (an expression such as ``0 0 30 2 *`` never
#: fires: refused when declared).
_HORIZON_DAYS = 366 * 5


@dataclass(frozen=True, slots=True)
class Cron:
    """A parsed expression: the values each field allows."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    def day_matches(self, moment: datetime) -> bool:
        by_month = moment.day in self.days
        by_week = (moment.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return by_month and by_week
        return by_month or by_week


def _value(text: str, names: dict[str, int], low: int, high: int) -> int:
    key = text.lower()
    if key in names:
        return names[key]
    if not text.isdigit():
        raise BadRequest(f"cron: {text!r} is not a number or a name")
    number = int(text)
    if not low <= number <= high:
        raise BadRequest(f"cron: {number} is outside {low}-{high}")
    return number


def _field(text: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        span, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) < 1:
                raise BadRequest(f"cron: step {step_text!r} must be a positive number")
            step = int(step_text)
        if span == "*":
            first, last = low, high
        elif "-" in span:
            a, _, b = span.partition("-")
            first, last = _value(a, names, low, high), _value(b, names, low, high)
            if first > last:
                raise BadRequest(f"cron: range {span!r} goes backwards")
        else:
            first = _value(span, names, low, high)
            last = high if step_text else first
        values.update(range(first, last + 1, step))
    return frozenset(values)


@cache
def parse(expression: str) -> Cron:
    """The expression parsed (``BAD_REQUEST`` with the reason if it is not valid)."""
    if not isinstance(expression, str):
        raise BadRequest("cron must be a string of five fields")
    parts = expression.split()
    if len(parts) != 5:
        raise BadRequest(f"cron needs five fields (minute hour day month weekday): {expression!r}")
    fields = [
        _field(p, low, high, names) for p, (low, high, names) in zip(parts, _FIELDS, strict=True)
    ]
    weekdays = frozenset(d % 7 for d in fields[4])
    return Cron(
        fields[0], fields[1], fields[2], fields[3], weekdays, parts[2] == "*", parts[4] == "*"
    )


@cache
def zone(name: str) -> ZoneInfo:
    """The time zone called ``name`` (``BAD_REQUEST`` if there is none)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise BadRequest(f"unknown time zone {name!r}") from exc


def next_time(expression: str, tz: str, after: float) -> float:
    """The first time (Unix seconds) strictly after ``after`` that ``expression`` names
    in time zone ``tz``."""
    cron, place = parse(expression), zone(tz)
    wall = datetime.fromtimestamp(after, place).replace(tzinfo=None, second=0, microsecond=0)
    wall += timedelta(minutes=1)
    limit = wall + timedelta(days=_HORIZON_DAYS)
    while wall < limit:
        if wall.month not in cron.months:
            wall = (wall.replace(day=1) + timedelta(days=32)).replace(day=1, hour=0, minute=0)
        elif not cron.day_matches(wall):
            wall = (wall + timedelta(days=1)).replace(hour=0, minute=0)
        elif wall.hour not in cron.hours:
            wall = (wall + timedelta(hours=1)).replace(minute=0)
        elif wall.minute not in cron.minutes:
            wall += timedelta(minutes=1)
        else:
            moment = wall.replace(tzinfo=place)
            real = moment.astimezone(UTC)
            if real.astimezone(place).replace(tzinfo=None) == wall and real.timestamp() > after:
                return real.timestamp()  # not a wall time the clocks skipped
            wall += timedelta(minutes=1)
    raise BadRequest(f"cron {expression!r} names no time in the next {_HORIZON_DAYS} days")
