"""A feed's own VTIMEZONEs: built for that feed alone, bounded, looked up fast.

icalendar keeps VTIMEZONE definitions process-wide by TZID (the first one
wins) and converts through dateutil, which walks a zone's rules from their
start on every conversion, without bound. Here each feed's definitions are
read by calsync itself: the rules are checked, their transitions computed once
(charged to the parse's budget) and found by bisection. icalendar parses
without its cache (`read_components`), and every TZID is placed afterwards
(`FeedZones.place`), so the order feeds are parsed in changes nothing.
"""

from __future__ import annotations

import bisect
import collections
import functools
import math
import re
import threading
import zoneinfo
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

import attrs
import icalendar
from dateutil.rrule import rrulestr  # type: ignore[import-untyped]
from dateutil.tz._common import _tzinfo  # type: ignore[import-untyped]
from icalendar.parser.ical.calendar import CalendarIcalParser
from icalendar.parser.parameter import Parameters
from icalendar.parser.property import unescape_backslash
from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON

from calsync.core.model import Problem
from calsync.core.rules import (
    FREQ_SECONDS,
    UnusableRule,
    check_rule,
    count_periods,
    distinct,
    rule_part,
)
from calsync.core.zones import is_iana

__all__ = [
    "MAX_ZONE_PARTS",
    "MAX_ZONE_WORK",
    "FeedZone",
    "FeedZones",
    "plain_parts",
    "read_components",
]

# Real zones have a few STANDARD/DAYLIGHT parts (tzurl's full histories some
# dozens); an Outlook zone from 1601 costs about 20,000 units (80 ms, once a process).
MAX_ZONE_PARTS = 1_000
MAX_ZONE_WORK = 50_000
# Zone rules recur once a year (RFC 5545 3.6.5 examples), at most once a month.
# dateutil takes about 45 us for a year, 7 us for a month: in budget units of 4 us,
_PERIOD_COST = {"YEARLY": 12, "MONTHLY": 2}
# The Gregorian calendar, weekdays included, repeats every 400 years.
_CYCLE_YEARS = 400
_ZONED = ("DTSTART", "DTEND", "RECURRENCE-ID", "DUE", "RDATE", "EXDATE")
_RANGES = {
    "BYSECOND": (0, 60),
    "BYMINUTE": (0, 59),
    "BYHOUR": (0, 23),
    "BYMONTH": (1, 12),
    "BYMONTHDAY": (-31, 31),
    "BYYEARDAY": (-366, 366),
    "BYWEEKNO": (-53, 53),
    "BYSETPOS": (-366, 366),
}
_ORDINAL = re.compile(r"([+-]?\d{1,3})?(?:MO|TU|WE|TH|FR|SA|SU)$", re.IGNORECASE)
_ZERO = timedelta(0)
_TIME_PARTS = ("BYHOUR", "BYMINUTE", "BYSECOND")
_MAX_TIMES_A_DAY = 24
_UNBOUNDED = 2**62
# A content line without parameters whose name is plain: no blanks, quotes or
# escapes before the colon, so the first colon ends the name.
_PLAIN_LINE = re.compile(r"([A-Z][A-Z0-9-]*):(.*)", re.DOTALL)


class ZoneRefused(ValueError):
    """A VTIMEZONE calsync will not use: unreadable, or too costly to expand."""


class _FeedParser(CalendarIcalParser):
    """icalendar's parser, without its process-wide VTIMEZONE cache.

    It neither registers the VTIMEZONEs it reads nor parses the body twice for
    forward references: calsync places every TZID itself afterwards.
    """

    def handle_end_component(self, vals: str) -> None:
        if not self._stack:
            raise ValueError("END encountered without an accompanying BEGIN!")
        component = self._stack.pop()
        if self._stack:
            self._stack[-1].add_component(component)
        else:
            self._components.append(component)

    def prepare_components(self) -> None:
        return

    def parse_content_lines(self) -> None:
        """Run icalendar's loop, splitting plain lines (``NAME:value``) cheaply.

        A plain line splits into the same name, (empty) parameters and value as
        icalendar's general splitter gives, in a fraction of its time.
        """
        for line in self._content_lines_iterator:
            if not line:
                continue
            try:
                name, params, vals = plain_parts(line) or line.parts()
            except ValueError as error:
                self.handle_line_parse_error(error)
                continue
            uname = name.upper()
            if uname == "BEGIN":
                self.handle_begin_component(vals)
            elif uname == "END":
                self.handle_end_component(vals)
            else:
                self.handle_property(uname, params, vals, line)


def plain_parts(line: str) -> tuple[str, Parameters, str] | None:
    """Split a ``NAME:value`` line as ``Contentline.parts`` does; None if not plain."""
    plain = _PLAIN_LINE.match(line)
    if plain is None:
        return None
    return plain.group(1), Parameters(), unescape_backslash(plain.group(2))


class _FeedCalendar(icalendar.Calendar):
    @classmethod
    def _get_ical_parser(cls, st: str | bytes) -> _FeedParser:
        return _FeedParser(st, cls._get_component_factory(), cls.types_factory)


def read_components(text: str) -> list[Any]:
    """Parse iCalendar text into its top-level components, as icalendar would.

    Raises what icalendar raises; leaves icalendar's process-wide state alone.
    """
    return list(_FeedCalendar.from_ical(text, multiple=True))


@attrs.frozen
class _Part:
    """One STANDARD or DAYLIGHT part of a zone, with its onsets in wall time."""

    offset_from: timedelta
    offset_to: timedelta
    dst: bool
    name: str | None
    onsets: tuple[datetime, ...]

    @property
    def diff(self) -> timedelta:
        return self.offset_to - self.offset_from


class FeedZone(_tzinfo):  # type: ignore[misc]
    """A VTIMEZONE of one feed, read as dateutil's ``tzical`` reads it.

    The part in force at a wall time is the one whose latest onset is not after
    it (the first part on a tie); before every onset, the first STANDARD part.
    Past ``horizon`` the rules repeat every ``cycle`` years, so a wall time is
    moved back by whole cycles instead of expanding the rules further.
    """

    def __init__(
        self,
        tzid: str,
        parts: tuple[_Part, ...],
        horizon: datetime | None,
        cycle: int,
    ) -> None:
        super().__init__()
        self.tzid = tzid
        self._parts = parts
        self._horizon = horizon
        self._cycle = cycle
        merged = sorted(
            (onset, index) for index, part in enumerate(parts) for onset in part.onsets
        )
        self._onsets: list[datetime] = []
        self._owners: list[int] = []
        for onset, index in merged:
            if not self._onsets or self._onsets[-1] != onset:
                self._onsets.append(onset)
                self._owners.append(index)
        standard = [part for part in parts if not part.dst]
        self._before_first = (standard or list(parts))[0]
        self._folds = any(part.diff < _ZERO for part in parts)

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        """Return the offset from UTC at a local time (tzinfo protocol)."""
        if dt is None:
            return None
        return self._part(dt).offset_to

    def dst(self, dt: datetime | None) -> timedelta | None:
        """Return the daylight-saving part of the offset (tzinfo protocol)."""
        if dt is None:
            return None
        part = self._part(dt)
        return part.diff if part.dst else _ZERO

    def tzname(self, dt: datetime | None) -> str | None:
        """Return the zone's name at a local time (tzinfo protocol)."""
        return self._part(dt).name if dt is not None else None

    def __repr__(self) -> str:
        return f"<FeedZone {self.tzid!r}>"

    def _part(self, dt: datetime) -> _Part:
        parts = self._parts
        if len(parts) == 1:
            return parts[0]
        wall = dt.replace(tzinfo=None)
        if self._folds and self._fold(dt):
            return self._part_in_fold(wall)
        index = bisect.bisect_right(self._onsets, self._in_cycle(wall))
        return parts[self._owners[index - 1]] if index else self._before_first

    def _part_in_fold(self, wall: datetime) -> _Part:
        """Find the part for the second of two equal wall times, part by part."""
        best: tuple[datetime, _Part] | None = None
        for part in self._parts:
            moved = self._in_cycle(wall - part.diff if part.diff < _ZERO else wall)
            index = bisect.bisect_right(part.onsets, moved)
            if index and (best is None or part.onsets[index - 1] > best[0]):
                best = (part.onsets[index - 1], part)
        return self._before_first if best is None else best[1]

    def _in_cycle(self, wall: datetime) -> datetime:
        horizon = self._horizon
        if horizon is None or wall < horizon:
            return wall
        cycles = (wall.year - horizon.year) // self._cycle + 1
        return wall.replace(year=wall.year - cycles * self._cycle)


@attrs.frozen
class FeedZones:
    """One feed's usable VTIMEZONEs by TZID, and what reading them cost."""

    zones: Mapping[str, FeedZone] = attrs.field(factory=dict)
    problems: tuple[Problem, ...] = ()
    cost: int = 0

    @classmethod
    def read(cls, components: Iterable[Any], budget: int) -> FeedZones:
        """Build the zones of VTIMEZONE components; the first of a TZID wins.

        A VTIMEZONE named like an IANA zone is never used (tzdata wins), so it is
        not built. Building a zone charges ``budget`` (units of about 4 us).
        """
        zones: dict[str, FeedZone] = {}
        problems = []
        cost = 0
        for component in components:
            tzid = str(component.get("TZID", "")).strip()
            cleaned = tzid.strip("/")
            if not tzid:
                problems.append(_skipped("a VTIMEZONE", "it has no TZID"))
                continue
            if cleaned in zones or is_iana(cleaned) or is_iana(tzid):
                continue
            built = _built(tzid, component)
            if isinstance(built, str):
                problems.append(_skipped(repr(tzid), built))
                continue
            zone, spent = built
            if cost + spent > budget:
                problems.append(_skipped(repr(tzid), "the calendar's budget is spent"))
                continue
            zones[cleaned] = zone
            cost += spent
        return cls(zones, tuple(problems), cost)

    def resolve(self, tzid: str) -> tzinfo | None:
        """Return the zone a TZID names in this feed, or None if unknown.

        The feed's own definition wins unless the TZID is an IANA name, as in
        icalendar; other names go to tzdata (Windows names mapped).
        """
        cleaned = tzid.strip("/")
        zone = self.zones.get(cleaned)
        if zone is not None and not (is_iana(cleaned) or is_iana(tzid)):
            return zone
        return _known_zone(tzid)

    def place(self, components: Iterable[Any]) -> None:
        """Put every TZID'd time of the components in this feed's zone for it."""
        memo: dict[str, tzinfo | None] = {}
        for component in components:
            for part in component.walk():
                for name in _ZONED:
                    values = part.get(name)
                    if values is None:
                        continue
                    for value in values if isinstance(values, list) else [values]:
                        self._place(value, memo)

    def _place(self, value: Any, memo: dict[str, tzinfo | None]) -> None:
        params = getattr(value, "params", None)
        tzid = params.get("TZID") if params else None
        if not tzid or not isinstance(tzid, str):
            return
        if tzid not in memo:
            memo[tzid] = self.resolve(tzid)
        zone = memo[tzid]
        try:
            items = value.dts if isinstance(value, icalendar.vDDDLists) else [value]
            for item in items:
                moment = item.dt
                if isinstance(moment, tuple):
                    item.dt = tuple(_placed(each, zone) for each in moment)
                else:
                    item.dt = _placed(moment, zone)
        except Exception:
            return  # an unreadable value is reported where it is used


def _placed(moment: Any, zone: tzinfo | None) -> Any:
    """Return a wall time in ``zone`` (naive if unknown); UTC times stay UTC."""
    if not isinstance(moment, datetime) or moment.tzinfo is zone:
        return moment
    current = moment.tzinfo
    if current is not None and _is_utc(current):
        return moment
    return moment.replace(tzinfo=zone)


def _is_utc(zone: tzinfo) -> bool:
    return getattr(zone, "key", None) == "UTC" or zone.utcoffset(None) == _ZERO


def _skipped(what: str, why: str) -> Problem:
    return Problem(
        "time zone skipped",
        f"VTIMEZONE {what}: {why}; times with its TZID are read as an IANA or "
        "Windows zone of that name if there is one, else as floating times",
    )


@functools.lru_cache(maxsize=4096)
def _known_zone(tzid: str) -> tzinfo | None:
    """Look a TZID up in tzdata as icalendar does, without its cache."""
    for name in _candidates(tzid):
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            continue
    return None


def _candidates(tzid: str) -> Iterator[str]:
    cleaned = tzid.strip("/")
    yield cleaned
    if cleaned in WINDOWS_TO_OLSON:
        yield WINDOWS_TO_OLSON[cleaned]
    if tzid.startswith("/"):
        parts = cleaned.split("/")
        for start in range(1, len(parts)):
            yield "/".join(parts[start:])
    yield tzid


# --- building a zone --------------------------------------------------------


@attrs.define
class _Draft:
    """A part being read: its fixed onsets, and its rules still to expand."""

    offset_from: timedelta
    offset_to: timedelta
    dst: bool
    name: str | None
    start: datetime
    onsets: set[datetime]
    excluded: set[datetime]
    endless: list[tuple[Any, str]]  # (rule, FREQ) without COUNT or UNTIL


_Built = tuple[FeedZone, int] | str
_BUILT: collections.OrderedDict[bytes, _Built] = collections.OrderedDict()
_BUILT_LOCK = threading.Lock()
_BUILT_SIZE = 128


def _built(tzid: str, component: Any) -> _Built:
    """Return the zone a component defines and its cost, or why it is refused.

    Zones are remembered by their whole text, not their TZID: the same
    definition gives the same zone whichever feed carries it, and a feed can
    reach no definition but its own.
    """
    key = component.to_ical()
    with _BUILT_LOCK:
        built = _BUILT.get(key)
        if built is not None:
            _BUILT.move_to_end(key)
            return built
    try:
        built = _build(tzid, component)
    except ZoneRefused as error:
        built = str(error)
    except Exception as error:
        built = f"unreadable ({type(error).__name__}: {error})"[:300]
    with _BUILT_LOCK:
        _BUILT[key] = built
        while len(_BUILT) > _BUILT_SIZE:
            _BUILT.popitem(last=False)
    return built


def _build(tzid: str, component: Any) -> tuple[FeedZone, int]:
    """Build a zone from its component, with at most MAX_ZONE_WORK of work."""
    subs = list(component.subcomponents)
    if not subs:
        raise ZoneRefused("it has no STANDARD or DAYLIGHT part")
    if len(subs) > MAX_ZONE_PARTS:
        raise ZoneRefused(f"more than {MAX_ZONE_PARTS:,} STANDARD/DAYLIGHT parts")
    budget = _Budget()
    drafts = [_draft(sub, budget) for sub in subs]
    endless = [(rule, freq) for draft in drafts for rule, freq in draft.endless]
    horizon, cycle = None, _CYCLE_YEARS
    if endless:
        cycle *= math.lcm(*(int(rule_part(rule, "INTERVAL", 1)) for rule, _ in endless))
        # Past every start and every ending rule, the endless ones repeat with
        # the cycle: two cycles of them tell every later wall time's part.
        settled = max(onset for draft in drafts for onset in draft.onsets)
        year = settled.year + 2 * cycle + 1
        horizon = datetime(year, 1, 1) if year <= 9999 else None  # noqa: DTZ001
        for draft in drafts:
            for rule, freq in draft.endless:
                draft.onsets.update(_expand(rule, freq, draft.start, horizon, budget))
    parts = tuple(
        _Part(
            draft.offset_from,
            draft.offset_to,
            draft.dst,
            draft.name,
            tuple(sorted(draft.onsets - draft.excluded)),
        )
        for draft in drafts
    )
    return FeedZone(tzid, parts, horizon, cycle), budget.spent


@attrs.define
class _Budget:
    spent: int = 0

    def charge(self, units: int) -> None:
        if self.spent + units > MAX_ZONE_WORK:
            raise ZoneRefused(
                f"its rules need more than {MAX_ZONE_WORK:,} units of work "
                f"(about {MAX_ZONE_WORK * 4 // 1000} ms)"
            )
        self.spent += units


def _draft(sub: Any, budget: _Budget) -> _Draft:
    if sub.name not in ("STANDARD", "DAYLIGHT"):
        raise ZoneRefused(f"unknown part {sub.name}")
    for name in ("DTSTART", "TZOFFSETFROM", "TZOFFSETTO"):
        if name not in sub:
            raise ZoneRefused(f"a {sub.name} part has no {name}")
    start = _wall(sub["DTSTART"].dt)
    names = sub.get("TZNAME")
    name = names[0] if isinstance(names, list) else names
    draft = _Draft(
        offset_from=sub["TZOFFSETFROM"].td,
        offset_to=sub["TZOFFSETTO"].td,
        dst=sub.name == "DAYLIGHT",
        name=None if name is None else str(name),
        start=start,
        onsets={start},
        excluded=set(_dates(sub, "EXDATE")),
        endless=[],
    )
    rdates = list(_dates(sub, "RDATE"))
    budget.charge(len(rdates) + 1)
    draft.onsets.update(rdates)
    for rule in _listed(sub.get("RRULE")):
        freq = _checked(rule)
        if rule.get("COUNT") or rule.get("UNTIL"):
            draft.onsets.update(_expand(rule, freq, start, None, budget))
        else:
            draft.endless.append((rule, freq))
    return draft


def _checked(rule: Any) -> str:
    """Return the rule's FREQ if a zone may use the rule, else refuse it."""
    freq = str(rule_part(rule, "FREQ", "")).upper()
    if freq not in _PERIOD_COST:
        raise ZoneRefused(
            f"RRULE FREQ={freq or '(none)'}: a zone changes at most monthly"
        )
    for part, (low, high) in _RANGES.items():
        for value in rule.get(part, ()):
            signed_zero = value == 0 and low < 0
            if not isinstance(value, int) or not low <= value <= high or signed_zero:
                raise ZoneRefused(f"RRULE {part}={value} is out of range")
    weeks = 53 if freq == "YEARLY" else 5
    for day in rule.get("BYDAY", ()):
        ordinal = _ORDINAL.match(str(day))
        if ordinal is None or abs(int(ordinal.group(1) or 0)) > weeks:
            raise ZoneRefused(f"RRULE BYDAY={day} is out of range")
    try:
        check_rule(rule, freq)
    except UnusableRule as error:
        raise ZoneRefused(f"unusable RRULE: {error}") from None
    return freq


def _expand(
    rule: Any, freq: str, start: datetime, horizon: datetime | None, budget: _Budget
) -> list[datetime]:
    """Expand a rule up to its end or ``horizon``, charging each period and onset.

    dateutil steps through every period of the rule up to the last onset wanted,
    trying each day's times in each (BYHOUR, BYMINUTE, BYSECOND).
    """
    period = timedelta(seconds=FREQ_SECONDS[freq] * int(rule_part(rule, "INTERVAL", 1)))
    until = rule_part(rule, "UNTIL", None)
    end = horizon or datetime.max  # noqa: DTZ901 (a naive wall time)
    if isinstance(until, date):
        end = min(end, _wall(until) + period)
    times = math.prod(distinct(rule, part) or 1 for part in _TIME_PARTS)
    if times > _MAX_TIMES_A_DAY:
        raise ZoneRefused(f"its RRULE changes the offset {times:,} times a day")
    count = int(rule_part(rule, "COUNT", 0))
    periods = min(count_periods(start, end, period), count or _UNBOUNDED)
    budget.charge(periods * _PERIOD_COST[freq])
    text = rule.to_ical().decode("utf-8", "replace")
    onsets: list[datetime] = []
    for onset in rrulestr(f"RRULE:{text}", dtstart=start, ignoretz=True):
        if horizon is not None and onset >= horizon:
            break
        budget.charge(1)
        onsets.append(onset)
    return onsets


def _dates(sub: Any, name: str) -> Iterator[datetime]:
    for value in _listed(sub.get(name)):
        for item in getattr(value, "dts", ()):
            moment = item.dt
            yield _wall(moment[0] if isinstance(moment, tuple) else moment)


def _listed(values: Any) -> list[Any]:
    if values is None:
        return []
    return values if isinstance(values, list) else [values]


def _wall(moment: Any) -> datetime:
    """Return a zone's onset as dateutil reads it: a naive wall time."""
    if isinstance(moment, datetime):
        return moment.replace(tzinfo=None)
    if isinstance(moment, date):
        return datetime.combine(moment, time())
    raise ZoneRefused(f"{moment!r} is not a date or time")
