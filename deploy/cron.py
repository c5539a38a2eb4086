"""How far apart the scheduler's sweeps can be, read from its unix-cron expression.

The alert for a sweep that stopped running waits for "no sweep for a while", and that while
has to be longer than the schedule's own longest wait between two sweeps or it fires between
every two of them. Only schedules that run every day have a longest wait under a day, and a
metric-absence condition is not documented to wait a day (docs/external-apis.md §9.6), so a
schedule that skips a day is reported as such rather than measured.

The expression is read as Cloud Scheduler reads it (docs/external-apis.md §9.6): minute, hour,
day of month, month, day of week; ``*``, ``a``, ``a-b``, ``/step`` after either, lists with
commas, month and weekday names, 7 as Sunday; when both day fields are restricted a day
matches either. What this cannot read gives None, which the caller treats as "unknown".
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
#: A wall-clock schedule in a zone with daylight saving time can wait this much longer once a year.
DST_SHIFT = timedelta(hours=1)
#: Zones known to have no daylight saving time without loading the time-zone database.
UTC_ZONES = frozenset({"UTC", "Etc/UTC", "GMT", "Etc/GMT", "UCT", "Etc/UCT", "Universal", "Etc/Universal", "Zulu"})


@dataclass(frozen=True)
class _Field:
    low: int
    high: int
    names: tuple[str, ...] = ()
    name_base: int = 0


_FIELDS = (
    _Field(0, 59),
    _Field(0, 23),
    _Field(1, 31),
    _Field(1, 12, MONTHS, 1),
    _Field(0, 7, WEEKDAYS, 0),
)


def _value(text: str, spec: _Field) -> int:
    upper = text.upper()
    if upper in spec.names:
        return spec.names.index(upper) + spec.name_base
    if not text.isdigit():
        raise ValueError(text)
    return int(text)


def _expand(text: str, spec: _Field) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        base, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(item)
        if base == "*":
            low, high = spec.low, spec.high
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = _value(first, spec), _value(last, spec)
        else:
            low = _value(base, spec)
            high = spec.high if step_text else low
        if not spec.low <= low <= high <= spec.high:
            raise ValueError(item)
        values.update(range(low, high + 1, step))
    return values


def _every_day(fields: list[str], days: set[int], months: set[int], weekdays: set[int]) -> bool:
    if months != set(range(1, 13)):
        return False
    all_days, all_weekdays = days == set(range(1, 32)), weekdays == set(range(7))
    if "*" in (fields[2], fields[4]):  # one day field unrestricted: the other decides
        return all_days and all_weekdays
    return all_days or all_weekdays


def observes_dst(time_zone: str) -> bool:
    """Whether the zone's offset differs between January and July; a zone that cannot be
    loaded is taken to observe it (the longer wait is the safe guess)."""
    if time_zone in UTC_ZONES:
        return False
    try:
        zone = ZoneInfo(time_zone)
    except (KeyError, ValueError, OSError):  # not found (a KeyError), malformed, or unreadable
        return True
    year = datetime.now(UTC).year
    return datetime(year, 1, 1, tzinfo=zone).utcoffset() != datetime(year, 7, 1, tzinfo=zone).utcoffset()


def longest_gap(expression: str, time_zone: str = "Etc/UTC") -> timedelta | None:
    """The longest wait between two runs of a schedule that runs every day; None for one that
    skips a day (its longest wait is more than a day) or that cannot be read."""
    fields = expression.split()
    if len(fields) != 5:
        return None
    try:
        minutes, hours, days, months, weekdays = (_expand(f, spec) for f, spec in zip(fields, _FIELDS, strict=True))
    except ValueError:
        return None
    weekdays = {d % 7 for d in weekdays}
    if not _every_day(fields, days, months, weekdays):
        return None
    times = sorted(h * 60 + m for h in hours for m in minutes)
    waits = [b - a for a, b in itertools.pairwise(times)] + [times[0] + 1440 - times[-1]]
    gap = timedelta(minutes=max(waits))
    return gap + DST_SHIFT if observes_dst(time_zone) else gap
