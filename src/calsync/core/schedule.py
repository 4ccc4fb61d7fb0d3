"""Schedules: when a recurring job runs next, exact across DST changes.

Five forms, case-insensitive: ``every 15m`` (s, m, h or d; elapsed time),
``cron */5 * * * *`` (five fields, evaluated in the schedule's zone),
``daily 07:30``, ``weekdays 08:00`` (Monday to Friday) and
``weekly mon,thu 18:00``.

Wall-clock times follow RFC 5545 and PEP 495 with ``fold=0``: a local time that
does not exist (spring forward) is read with the offset in force before the gap,
so ``daily 02:30`` in Europe/Berlin fires at 03:30 CEST (01:30 UTC) on
2026-03-29; a local time that exists twice (fall back) fires once, at the first
of the two. ``every`` intervals are elapsed time and ignore the zone.

Cron expressions are parsed and iterated by ``cronsim``, but not with its own
time zone handling: cronsim mimics Debian cron, which moves a fixed-time job in
a DST gap to the end of the gap (``30 2 * * *`` fires at 03:00 CEST, not 03:30)
and runs ``*``-minute or ``*``-hour jobs in both passes of a repeated hour. To
give ``cron 30 2 * * *`` exactly the meaning of ``daily 02:30``, cronsim
iterates naive local wall times here, and each wall time is converted to UTC
with ``fold=0`` by `Schedule`. Those instants are not monotonic in wall-time
order next to a gap (a wall time inside the gap maps to the same or a later
instant than one just after it), so the search starts one gap length before
``t`` and, when the first match lies in a gap, also looks one gap length past
it; the earliest instant strictly after ``t`` wins, which also drops the
duplicates a gap produces. A consequence of ``fold=0``: ``*/15 * * * *`` does
not fire during the second pass of a repeated hour.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Protocol

import attrs
from cronsim import CronSim, CronSimError

from calsync.core.durations import LONGEST, format_duration, parse_duration
from calsync.core.errors import ScheduleError, TimezoneError, ValidationError
from calsync.core.model import as_aware_utc
from calsync.core.zones import resolve_zone, zone_name

__all__ = ["Schedule", "schedule_of", "schedule_or_interval"]

_FORMS = (
    "'every 15m', 'cron */5 * * * *', 'daily 07:30', 'weekdays 08:00' "
    "or 'weekly mon,thu 18:00'"
)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_WEEKDAY_NAMES = (
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
)
_WEEKDAY_NUMBERS = {
    **{name: number for number, name in enumerate(_WEEKDAY_NAMES)},
    **{name: number for number, name in enumerate(_FULL_WEEKDAY_NAMES)},
}
# ASCII digits only (Unicode digits are refused, not read as numbers), and few of
# them: int() of thousands of digits would fail on Python's digit limit.
_INTERVAL = re.compile(r"(?P<number>[+-]?[0-9]{1,12})? ?(?P<unit>[a-z]+)?", re.ASCII)
_CLOCK_TIME = re.compile(r"(?P<hour>[0-9]{1,2}):(?P<minute>[0-9]{2})", re.ASCII)
_CRON_FIELDS = "minute hour day-of-month month day-of-week"
_CRON_PROBE_START = datetime(2000, 1, 1)  # noqa: DTZ001 - cronsim iterates wall time
_NO_TIME = timedelta(0)
_ONE_DAY = timedelta(days=1)


class _Rule(Protocol):
    """What every schedule form knows: its next instant after ``t``."""

    def next_after(self, t: datetime, zone: tzinfo) -> datetime:
        """Return the first aware UTC instant strictly after the aware UTC ``t``."""
        ...


@attrs.frozen
class _Every:
    """``every 15m``: one fixed stretch of elapsed time after ``t``."""

    interval: timedelta

    def next_after(self, t: datetime, zone: tzinfo) -> datetime:
        """Return ``t`` plus the interval; the zone plays no part."""
        return t + self.interval


@attrs.frozen
class _AtTime:
    """``daily``, ``weekdays`` and ``weekly``: a wall time on some weekdays."""

    at: time
    weekdays: frozenset[int]

    def next_after(self, t: datetime, zone: tzinfo) -> datetime:
        """Return the earliest fold=0 instant of the wall time strictly after ``t``."""
        today = t.astimezone(zone).date()
        days = (today + timedelta(days=shift) for shift in range(-1, 9))
        candidates = (
            _fold0_utc(datetime.combine(day, self.at), zone)
            for day in days
            if day.weekday() in self.weekdays
        )
        return min(candidate for candidate in candidates if candidate > t)


@attrs.frozen
class _Cron:
    """``cron M H DoM Mon DoW``: cronsim's matches, read as fold=0 wall times."""

    expression: str

    def next_after(self, t: datetime, zone: tzinfo) -> datetime:
        """Return the earliest fold=0 instant of a matching wall time after ``t``.

        Raises `ScheduleError` when nothing matches within cronsim's 50 years.
        """
        start = _wall_time(t, zone) - _recent_gap(t, zone) - timedelta(seconds=1)
        walls: Iterator[datetime] = CronSim(self.expression, start)
        for wall in walls:
            fire_at = _fold0_utc(wall, zone)
            if fire_at > t:
                return _earliest_near(walls, wall, fire_at, t, zone)
        raise ScheduleError(
            f"cron {self.expression!r} has no run in the 50 years after {t.isoformat()}"
        )


def _earliest_near(
    walls: Iterator[datetime],
    first: datetime,
    fire_at: datetime,
    t: datetime,
    zone: tzinfo,
) -> datetime:
    """Return the earliest instant after ``t`` among ``first`` and its gap peers.

    Wall times in a gap map to the same instants as the gap length of wall times
    right after it, so a later wall time there can fire earlier.
    """
    gap = _offset(fire_at.astimezone(zone)) - _offset(first.replace(tzinfo=zone))
    earliest = fire_at
    for wall in walls:
        if wall >= first + gap:
            break
        candidate = _fold0_utc(wall, zone)
        if t < candidate < earliest:
            earliest = candidate
    return earliest


def _wall_time(instant: datetime, zone: tzinfo) -> datetime:
    """Return the naive local wall time of an aware instant."""
    return instant.astimezone(zone).replace(tzinfo=None)


def _fold0_utc(wall: datetime, zone: tzinfo) -> datetime:
    """Return the UTC instant of a naive wall time, read with PEP 495 fold=0."""
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def _offset(local: datetime) -> timedelta:
    """Return the UTC offset of an aware local datetime."""
    offset = local.utcoffset()
    if offset is None:
        raise TimezoneError(f"time zone {local.tzinfo!r} gives no UTC offset")
    return offset


def _recent_gap(t: datetime, zone: tzinfo) -> timedelta:
    """Return how far the clock jumped forward in the day before ``t`` (or zero)."""
    jump = _offset(t.astimezone(zone)) - _offset((t - _ONE_DAY).astimezone(zone))
    return max(jump, _NO_TIME)


def _check_zone(zone: tzinfo, given: str | tzinfo) -> None:
    """Refuse a tzinfo that cannot turn a wall time into an instant."""
    probe = datetime.combine(date(2000, 1, 1), time(), tzinfo=zone)
    if probe.utcoffset() is None:
        raise TimezoneError(
            f"time zone {given!r} gives no UTC offset: use an IANA name like "
            "'Europe/Berlin'"
        )


def _schedule_error(text: str, problem: str) -> ScheduleError:
    """Build a `ScheduleError` that quotes the schedule text and the problem."""
    return ScheduleError(f"bad schedule {text!r}: {problem}")


def _parse_every(text: str, words: list[str]) -> tuple[str, _Rule]:
    """Parse the words after ``every`` into an elapsed-time interval."""
    spec = " ".join(words)
    match = _INTERVAL.fullmatch(spec)
    example = "a positive whole number and a unit s, m, h or d, like 'every 15m'"
    if not spec or match is None:
        raise _schedule_error(text, f"bad interval {spec!r}: expected {example}")
    number, unit = match["number"], match["unit"]
    if number is None:
        raise _schedule_error(text, f"missing number in interval: expected {example}")
    if unit is None:
        raise _schedule_error(text, f"missing unit in interval: expected {example}")
    if unit not in _UNIT_SECONDS:
        raise _schedule_error(
            text, f"unknown interval unit {unit!r}: expected {example}"
        )
    count = int(number)
    if count <= 0:
        raise _schedule_error(
            text, f"interval must be positive, got {spec!r}: expected {example}"
        )
    seconds = count * _UNIT_SECONDS[unit]
    if seconds > LONGEST.total_seconds():
        raise _schedule_error(
            text,
            f"interval {spec!r} is too long: at most {format_duration(LONGEST)} "
            "(about 10 years)",
        )
    interval = timedelta(seconds=seconds)
    return f"every {count}{unit}", _Every(interval)


def _parse_cron(text: str, words: list[str]) -> tuple[str, _Rule]:
    """Parse five cron fields, validated by cronsim."""
    if len(words) != 5:
        raise _schedule_error(
            text,
            f"cron needs exactly 5 fields ({_CRON_FIELDS}), got {len(words)}",
        )
    expression = " ".join(words)
    try:
        probe = CronSim(expression, _CRON_PROBE_START)
    except CronSimError as error:
        raise _schedule_error(
            text, f"cron expression {expression!r} is invalid: {error}"
        ) from error
    if next(probe, None) is None:
        raise _schedule_error(
            text, f"cron expression {expression!r} never matches a date"
        )
    return f"cron {expression}", _Cron(expression)


def _parse_clock_time(text: str, spec: str) -> time:
    """Parse ``HH:MM`` (hour 0-23, minute 00-59) into a time."""
    match = _CLOCK_TIME.fullmatch(spec)
    if match is None:
        raise _schedule_error(
            text, f"bad time {spec!r}: expected HH:MM, like 07:30 or 18:00"
        )
    hour, minute = int(match["hour"]), int(match["minute"])
    if hour > 23:
        raise _schedule_error(
            text, f"hour {hour} in {spec!r} is out of range: use 00 to 23"
        )
    if minute > 59:
        raise _schedule_error(
            text, f"minute {minute} in {spec!r} is out of range: use 00 to 59"
        )
    return time(hour, minute)


def _parse_weekdays(text: str, spec: str) -> frozenset[int]:
    """Parse comma-separated weekday names (``mon,thu`` or ``monday``)."""
    numbers: set[int] = set()
    for name in re.split(r"[\s,]+", spec.strip(" ,")):
        if name not in _WEEKDAY_NUMBERS:
            raise _schedule_error(
                text,
                f"unknown weekday {name!r}: use {', '.join(_WEEKDAY_NAMES)}",
            )
        numbers.add(_WEEKDAY_NUMBERS[name])
    return frozenset(numbers)


def _parse_at_time(
    text: str, keyword: str, words: list[str], weekdays: frozenset[int]
) -> tuple[str, _Rule]:
    """Parse the single ``HH:MM`` after ``daily`` or ``weekdays``."""
    if len(words) != 1:
        raise _schedule_error(
            text, f"{keyword} needs exactly one time, like '{keyword} 07:30'"
        )
    at = _parse_clock_time(text, words[0])
    return f"{keyword} {at:%H:%M}", _AtTime(at, weekdays)


def _parse_daily(text: str, words: list[str]) -> tuple[str, _Rule]:
    """Parse ``daily HH:MM``."""
    return _parse_at_time(text, "daily", words, frozenset(range(7)))


def _parse_weekdays_form(text: str, words: list[str]) -> tuple[str, _Rule]:
    """Parse ``weekdays HH:MM`` (Monday to Friday)."""
    return _parse_at_time(text, "weekdays", words, frozenset(range(5)))


def _parse_weekly(text: str, words: list[str]) -> tuple[str, _Rule]:
    """Parse ``weekly mon,thu HH:MM``."""
    if len(words) < 2:
        raise _schedule_error(
            text, "weekly needs weekdays and a time, like 'weekly mon,thu 18:00'"
        )
    weekdays = _parse_weekdays(text, " ".join(words[:-1]))
    at = _parse_clock_time(text, words[-1])
    names = ",".join(_WEEKDAY_NAMES[number] for number in sorted(weekdays))
    return f"weekly {names} {at:%H:%M}", _AtTime(at, weekdays)


_PARSERS = {
    "every": _parse_every,
    "cron": _parse_cron,
    "daily": _parse_daily,
    "weekdays": _parse_weekdays_form,
    "weekly": _parse_weekly,
}


def _parse_rule(text: str) -> tuple[str, _Rule]:
    """Return the normalized text and the rule of a schedule text."""
    if not isinstance(text, str):
        raise ScheduleError(f"a schedule must be text like {_FORMS}, got {text!r}")
    words = text.lower().split()
    if not words:
        raise ScheduleError(f"empty schedule: expected one of {_FORMS}")
    parser = _PARSERS.get(words[0])
    if parser is None:
        raise _schedule_error(
            text, f"unknown keyword {words[0]!r}: expected one of {_FORMS}"
        )
    return parser(text, words[1:])


@attrs.frozen
class Schedule:
    """When a recurring job runs: ``every 15m``, ``cron ...``, ``daily 07:30`` ...

    Build one with `Schedule.parse`; ``text`` is the normalized schedule text and
    ``zone`` the name of the zone its wall times are read in.
    """

    text: str
    zone: str
    _rule: _Rule = attrs.field(repr=False)
    _tz: tzinfo = attrs.field(eq=False, repr=False)

    @classmethod
    def parse(cls, text: str, tz: str | tzinfo = "UTC") -> Schedule:
        """Parse a schedule text whose wall times are read in the zone ``tz``.

        Raises `ScheduleError` naming the bad part of ``text``, and
        `TimezoneError` for an unknown zone.
        """
        normalized, rule = _parse_rule(text)
        zone = resolve_zone(tz)
        _check_zone(zone, tz)
        return cls(text=normalized, zone=zone_name(zone), rule=rule, tz=zone)

    def next_after(self, t: datetime) -> datetime:
        """Return the next run strictly after ``t``, as an aware UTC datetime.

        ``t`` must be aware (else `ValidationError`); DST follows RFC 5545 fold=0.
        """
        return self._rule.next_after(as_aware_utc(t), self._tz)

    def __str__(self) -> str:
        return self.text


_INTERVAL_UNITS = (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))


def schedule_or_interval(text: str, tz: str | tzinfo = "UTC") -> Schedule:
    """Parse a schedule text, or a bare interval (``15m``, ``1h30m``) to run every.

    Raises the `ScheduleError` of the schedule reading when neither reading works.
    """
    try:
        return Schedule.parse(text, tz)
    except ScheduleError as error:
        try:
            interval = parse_duration(text)
        except ValidationError:
            raise error from None
    seconds = int(interval.total_seconds())
    if seconds <= 0:
        raise _schedule_error(
            text, "expected an interval greater than zero, like 'every 15m'"
        )
    unit, size = next((u, s) for u, s in _INTERVAL_UNITS if seconds % s == 0)
    return Schedule.parse(f"every {seconds // size}{unit}", tz)


@functools.lru_cache(maxsize=1024)
def schedule_of(text: str, tz: str | None) -> Schedule:
    """Return a calendar's parsed schedule (cached: every sync and status needs it)."""
    return Schedule.parse(text, tz or "UTC")
