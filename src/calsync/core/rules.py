"""Recurrence rules that would make dateutil loop for a very long time or forever.

Shared by the events' expansion and the VTIMEZONE rules: both are charged to
one budget and refuse the same unusable rules. The budget is counted in units
of about 4 microseconds; `periods_affordable` says how far a rule may run on it.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

__all__ = [
    "BUILD_COST",
    "DATE_COST",
    "FREQ_SECONDS",
    "UnusableRule",
    "check_rule",
    "count_periods",
    "distinct",
    "instances_per_period",
    "periods_affordable",
    "rule_part",
]

FREQ_SECONDS = {
    "SECONDLY": 1,
    "MINUTELY": 60,
    "HOURLY": 3_600,
    "DAILY": 86_400,
    "WEEKLY": 7 * 86_400,
    "MONTHLY": 28 * 86_400,
    "YEARLY": 365 * 86_400,
}
_PERIODS_PER = {"WEEKLY": 1, "MONTHLY": 5, "YEARLY": 53}
# dateutil steps through an instance for one unit; an instance that reaches the
# query (it starts in it, or lasts into it from long before) is also built into
# an occurrence by recurring-ical-events and calsync: about 12 units more.
BUILD_COST = 12
# An RDATE or EXDATE value is converted, compared and hashed: about 2 units.
DATE_COST = 2


class UnusableRule(ValueError):
    """An RRULE that would make the expansion loop for a very long time or forever."""


# RFC 5545 3.3.10: parts that MUST NOT be used with these frequencies.
_FORBIDDEN_PARTS = {
    "BYWEEKNO": {"SECONDLY", "MINUTELY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY"},
    "BYYEARDAY": {"DAILY", "WEEKLY", "MONTHLY"},
    "BYMONTHDAY": {"WEEKLY"},
}
_LEAP_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def check_rule(rule: Any, freq: str) -> None:
    """Refuse rules that dateutil would search until the year 9999, or forever.

    dateutil looks for the next instance past the window without a bound, so an
    INTERVAL below one or BY-parts that can never match would stall the parse.
    """
    interval = rule_part(rule, "INTERVAL", 1)
    if not isinstance(interval, int) or interval < 1:
        raise UnusableRule(f"INTERVAL={interval} is not a positive number")
    for part, frequencies in _FORBIDDEN_PARTS.items():
        if rule.get(part) and freq in frequencies:
            raise UnusableRule(f"{part} must not be used with FREQ={freq}")
    day_parts = ("BYMONTH", "BYMONTHDAY", "BYYEARDAY")
    if any(rule.get(part) for part in day_parts) and not _some_day_matches(rule):
        raise UnusableRule("BYMONTH, BYMONTHDAY and BYYEARDAY exclude every day")
    positions = [abs(int(p)) for p in rule.get("BYSETPOS", ())]
    if positions and min(positions) > instances_per_period(rule, freq):
        raise UnusableRule(f"BYSETPOS={min(positions)} exceeds every set of the rule")


def rule_part(rule: Any, name: str, default: Any) -> Any:
    """Return one part of an RRULE (its first value), or `default`."""
    values = rule.get(name)
    if not values:
        return default
    return values[0] if isinstance(values, list) else values


def instances_per_period(rule: Any, freq: str) -> int:
    """Bound from above the instances one FREQ period of the rule yields."""
    seconds = FREQ_SECONDS[freq]
    per_period = 1
    for part, part_seconds in (("BYSECOND", 1), ("BYMINUTE", 60), ("BYHOUR", 3_600)):
        if seconds > part_seconds and rule.get(part):
            per_period *= distinct(rule, part)
    if freq in _PERIODS_PER and rule.get("BYDAY"):
        per_period *= distinct(rule, "BYDAY") * _PERIODS_PER[freq]
    if freq in ("MONTHLY", "YEARLY") and rule.get("BYMONTHDAY"):
        per_period *= distinct(rule, "BYMONTHDAY") * (12 if freq == "YEARLY" else 1)
    if freq == "YEARLY":
        for part in ("BYYEARDAY", "BYWEEKNO", "BYMONTH"):
            if rule.get(part):
                per_period *= distinct(rule, part) * (7 if part == "BYWEEKNO" else 1)
    return max(per_period, 1)


def distinct(rule: Any, part: str) -> int:
    """Return how many distinct values an RRULE part lists."""
    return len({str(value) for value in rule.get(part, ())})


def _some_day_matches(rule: Any) -> bool:
    """Whether BYMONTH, BYMONTHDAY and BYYEARDAY allow any day of some year."""
    months = {int(m) for m in rule.get("BYMONTH", ())} or set(range(1, 13))
    monthdays = {int(d) for d in rule.get("BYMONTHDAY", ())}
    yeardays = {int(d) for d in rule.get("BYYEARDAY", ())}
    for year in (2023, 2024):  # a common and a leap year
        length = (date(year + 1, 1, 1) - date(year, 1, 1)).days
        for yearday in range(1, length + 1):
            day = date(year, 1, 1) + timedelta(days=yearday - 1)
            month_length = _LEAP_MONTH_DAYS[day.month - 1] - (
                day.month == 2 and length == 365
            )
            if day.month not in months:
                continue
            if monthdays and not {day.day, day.day - month_length - 1} & monthdays:
                continue
            if yeardays and not {yearday, yearday - length - 1} & yeardays:
                continue
            return True
    return False


def count_periods(start: datetime, end: datetime, period: timedelta) -> int:
    """Return how many whole periods fit between two times (0 if end <= start)."""
    if end <= start:
        return 0
    return (end - start) // period + 1


def periods_affordable(budget: int, per_period: int, cheap_periods: int) -> int:
    """Return how many periods of a rule ``budget`` units pay for.

    The first ``cheap_periods`` are only stepped through (one unit an
    instance); the instances of the later ones are built too.
    """
    if cheap_periods * per_period >= budget:
        return budget // per_period
    left = budget - cheap_periods * per_period
    return cheap_periods + left // (per_period * (1 + BUILD_COST))
