"""Parse an iCalendar body into the occurrences inside a window.

The body is read by icalendar, repaired for X-WR-TIMEZONE by x-wr-timezone and
expanded by recurring-ical-events, one UID group (a master and its overrides) at
a time, so that one broken event becomes a `Problem` instead of sinking the feed.
Floating times and all-day dates are read in the feed's X-WR-TIMEZONE, else in
``default_tz``; an explicit TZID always wins.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

import attrs
import icalendar
import recurring_ical_events
import x_wr_timezone
from icalendar.timezone.tzid import get_equivalent_tzids, tzid_from_tzinfo
from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON
from recurring_ical_events.adapters.event import EventAdapter
from recurring_ical_events.occurrence import Occurrence as _RieOccurrence
from recurring_ical_events.selection.name import ComponentsWithName

from calsync.core.errors import ParseError, TimezoneError, ValidationError
from calsync.core.model import (
    EventStatus,
    Occurrence,
    OccurrenceKey,
    ParsedCalendar,
    Problem,
    Window,
)
from calsync.core.rules import (
    BUILD_COST,
    DATE_COST,
    FREQ_SECONDS,
    UnusableRule,
    check_rule,
    count_periods,
    distinct,
    instances_per_period,
    periods_affordable,
    rule_part,
)
from calsync.core.sniff import EMPTY, OTHER_BLOCK, SOMETHING_ELSE, kind_of
from calsync.core.vtimezone import FeedZone, FeedZones, read_components
from calsync.core.zones import resolve_zone, zone_name

__all__ = [
    "CALENDAR_INSTANCE_BUDGET",
    "NOTHING",
    "Expander",
    "Expansion",
    "decode_body",
    "expander_for",
    "finish",
    "parse_whole",
    "require_icalendar",
    "text_of",
    "uid_lines",
    "uid_of",
]

# Occurrences are looked up in the window widened by this much, then filtered
# exactly: floating and all-day times are only placed in time after expansion.
_MARGIN = timedelta(days=1)
# Recurrence rules are expanded from DTSTART on, so a dense rule costs time in
# proportion to the instances before the window too. Bound that work, and every
# other expansion (RDATE lists, long events, VTIMEZONE rules), per series and
# per calendar in steps of about 4 microseconds (calsync.core.rules): a series
# may build the 21,000 occurrences a calendar keeps at most, a calendar spends
# about 4 s at most (a Google export of 4,778 events needs some 10,000 steps).
_SERIES_INSTANCE_BUDGET = 400_000
CALENDAR_INSTANCE_BUDGET = 1_000_000
# What makes an event cost more than one instance to expand.
_DATED = ("RRULE", "RDATE", "EXDATE")
# Unreadable properties a series can do without, and what is lost without them.
_DROPPABLE = {
    "EXDATE": "instances it meant to exclude may appear",
    "RDATE": "the extra dates it meant to add are missing",
}
# Properties an occurrence shows; unreadable ones are worth a problem. (Unreadable
# DTSTART, RRULE and the like sink their event and are reported as it is skipped.)
_SHOWN = frozenset({"SUMMARY", "LOCATION", "DESCRIPTION", "STATUS", "SEQUENCE"})
_TOP_LEVEL = frozenset(
    {"VEVENT", "VTODO", "VJOURNAL", "VFREEBUSY", "VTIMEZONE", "VAVAILABILITY"}
)


def parse_whole(
    text: str, window: Window, zone: tzinfo, limit: int, problems: list[Problem]
) -> ParsedCalendar:
    """Parse the whole body with icalendar in one go, then expand it group by group."""
    unread: set[str] = set()
    calendar, events, timezones = _read(text, problems, unread)
    zones = FeedZones.read(timezones, CALENDAR_INSTANCE_BUDGET)
    zones.place(events)
    problems.extend(zones.problems)
    timezone_name = text_of(calendar, "X-WR-TIMEZONE") or None
    expander = expander_for(window, zone, limit, timezone_name, problems, zones.cost)
    groups = _group_by_uid(events, problems)
    expansions = [expander.expand_group(uid, group) for uid, group in groups.items()]
    return finish(
        text, calendar, timezone_name, problems, expansions, limit, unreadable=unread
    )


def expander_for(
    window: Window,
    zone: tzinfo,
    limit: int,
    timezone_name: str | None,
    problems: list[Problem],
    spent: int,
) -> Expander:
    """Return the expander for a calendar, reading floating times in its zone.

    ``spent`` is the budget the feed's VTIMEZONEs used already.
    """
    feed_zone = _feed_zone(timezone_name, problems)
    expander = Expander(window, feed_zone or zone, repair=feed_zone, limit=limit)
    expander.budget -= spent
    return expander


def finish(
    text: str,
    calendar: Any,
    timezone_name: str | None,
    problems: list[Problem],
    expansions: Iterable[Expansion],
    limit: int,
    *,
    unreadable: Iterable[str] = (),
) -> ParsedCalendar:
    """Assemble the groups' expansions into the result, in the calendar's order.

    ``unreadable`` names events skipped before expansion (their block unreadable).
    """
    occurrences: list[Occurrence] = []
    unreadable_uids = set(unreadable)
    capped = False
    for expansion in expansions:
        occurrences.extend(expansion.occurrences)
        problems.extend(expansion.problems)
        unreadable_uids.update(expansion.unreadable)
        capped = capped or expansion.capped
    occurrences = _unique(occurrences, problems)
    occurrences.sort(key=lambda o: (o.start, o.key))
    if len(occurrences) > limit or capped:
        occurrences = occurrences[:limit]
        last = f", up to {occurrences[-1].start.isoformat()}" if occurrences else ""
        problems.append(
            Problem(
                "too many occurrences",
                f"the window holds more than {limit}; kept the earliest "
                f"{len(occurrences)}{last}",
            )
        )
    refresh_interval = _refresh_interval(calendar, problems)
    return ParsedCalendar(
        occurrences=tuple(occurrences),
        problems=tuple(_with_lines(problems, text)),
        name=text_of(calendar, "X-WR-CALNAME") or text_of(calendar, "NAME") or None,
        timezone=timezone_name,
        refresh_interval=refresh_interval,
        unreadable_uids=frozenset(unreadable_uids),
    )


# --- reading the body -------------------------------------------------------


def decode_body(data: bytes | str, problems: list[Problem]) -> str:
    """Return the body as text, recording a Problem for any byte it had to replace."""
    if isinstance(data, str):
        return data
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValidationError(
            f"parse_ics needs bytes or str, got {type(data).__name__}"
        )
    try:
        return bytes(data).decode("utf-8-sig")
    except UnicodeDecodeError as error:
        problems.append(
            Problem(
                "body is not UTF-8",
                f"{error.reason} at byte {error.start}; read as Windows-1252 instead, "
                "so some characters may be wrong",
            )
        )
        return bytes(data).decode("cp1252", errors="replace")


def require_icalendar(text: str) -> None:
    """Raise `ParseError` saying what the body is when it is not iCalendar at all."""
    head = text.lstrip("\ufeff \t\r\n")
    kind = kind_of(head[:64])
    if kind is None:
        return
    first = head.splitlines()[0][:40] if head else ""
    if kind == EMPTY:
        raise ParseError(
            "the body is empty: expected an iCalendar feed (BEGIN:VCALENDAR)"
        )
    if kind == OTHER_BLOCK:
        raise ParseError(f"the body starts with {first!r}, not with BEGIN:VCALENDAR")
    if kind == SOMETHING_ELSE:
        kind = f"text starting with {first!r}"
    raise ParseError(f"the body is {kind}, not an iCalendar feed (no BEGIN:VCALENDAR)")


_Read = tuple[icalendar.Component, list[Any], list[Any]]


def _read(text: str, problems: list[Problem], unread: set[str]) -> _Read:
    """Return the calendar, its VEVENTs and its VTIMEZONEs, by blocks if needed.

    The UIDs of events whose block cannot be read at all are added to ``unread``.
    """
    try:
        parsed = read_components(text)
    except Exception as error:
        problems.append(
            Problem(
                "calendar structure is broken",
                f"{_reason(error)}; read it block by block",
            )
        )
        return _read_block_by_block(text, problems, unread)
    calendars = [c for c in parsed if c.name == "VCALENDAR"]
    if not calendars:
        problems.append(
            Problem(
                "calendar structure is broken",
                "no complete VCALENDAR; read it block by block",
            )
        )
        return _read_block_by_block(text, problems, unread)
    events = [event for c in calendars for event in c.walk("VEVENT")]
    timezones = [zone for c in calendars for zone in c.walk("VTIMEZONE")]
    return calendars[0], events, timezones


def _read_block_by_block(text: str, problems: list[Problem], unread: set[str]) -> _Read:
    header, blocks = _split_blocks(text)
    calendar = _parse_or_none(_wrapped(header)) or icalendar.Calendar()
    timezones = []
    for number, name, lines in blocks:
        if name != "VTIMEZONE":
            continue
        block = _parse_or_none(_wrapped(lines))
        if block is None:
            problems.append(
                Problem("time zone skipped", "unreadable VTIMEZONE", line=number)
            )
        else:
            timezones.extend(block.walk("VTIMEZONE"))
    events = []
    for number, name, lines in blocks:
        if name != "VEVENT":
            continue
        try:
            events.append(_only_component("\r\n".join(lines)))
        except Exception as error:
            problems.append(_unreadable_block(lines, number, _reason(error), unread))
    return calendar, events, timezones


def _split_blocks(text: str) -> tuple[list[str], list[tuple[int, str, list[str]]]]:
    """Split a body into calendar property lines and (line, name, lines) blocks."""
    header: list[str] = []
    blocks: list[tuple[int, str, list[str]]] = []
    current: list[str] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        upper = line.strip().upper()
        if upper.startswith("BEGIN:") and upper[6:] in _TOP_LEVEL:
            # A top-level component cannot nest: an unterminated one ends here.
            current = [line]
            blocks.append((number, upper[6:], current))
        elif current is not None:
            current.append(line)
            if upper.startswith("END:") and upper[4:] == blocks[-1][1]:
                current = None
        elif line.strip() and not upper.startswith(("BEGIN:", "END:")):
            header.append(line)
    return header, blocks


def _wrapped(lines: Sequence[str]) -> str:
    return "\r\n".join(["BEGIN:VCALENDAR", *lines, "END:VCALENDAR"])


def _parse_or_none(text: str) -> Any:
    try:
        return _only_component(text)
    except Exception:
        return None


def _only_component(text: str) -> Any:
    """Read text holding exactly one component, as icalendar's from_ical does."""
    components = read_components(text)
    if len(components) != 1:
        raise ValueError(
            f"Found {len(components)} components where exactly one is required"
        )
    return components[0]


def _unreadable_block(
    lines: Sequence[str], number: int, reason: str, unread: set[str]
) -> Problem:
    """Report an event block icalendar refuses; its UID, if readable, stays known."""
    uid = _uid_in(lines)
    if uid is None:
        return Problem(
            "event skipped",
            f"{reason}; its UID is unreadable too, so what calsync stored of it "
            "is removed as if the feed had dropped it",
            line=number,
        )
    unread.add(uid)
    return Problem("event skipped", reason, uid=uid, line=number)


def _uid_in(lines: Iterable[str]) -> str | None:
    """Return the UID a block's lines carry, or None if none can be read."""
    for line in lines:
        if line.upper().startswith(("UID:", "UID;")):
            _, colon, value = line.partition(":")
            return value.strip() or None if colon else None
    return None


# --- calendar properties ----------------------------------------------------


def _single(component: Any, name: str) -> Any:
    """Return a property's value, the first one if a broken feed repeats it."""
    value = component.get(name)
    if isinstance(value, list):
        return value[0] if value else None
    return value


def text_of(component: Any, name: str) -> str:
    """Return a component's text property, stripped; empty when it is absent."""
    value = _single(component, name)
    return "" if value is None else str(value).strip()


def _feed_zone(name: str | None, problems: list[Problem]) -> tzinfo | None:
    """Resolve X-WR-TIMEZONE; an unknown zone is reported and ignored."""
    if not name:
        return None
    try:
        return resolve_zone(name)
    except TimezoneError:
        problems.append(
            Problem(
                "unknown X-WR-TIMEZONE",
                f"{name!r} is not an IANA zone; floating times are read in the "
                "calendar's own zone instead",
            )
        )
        return None


def _refresh_interval(calendar: Any, problems: list[Problem]) -> timedelta | None:
    for name in ("REFRESH-INTERVAL", "X-PUBLISHED-TTL"):
        raw = calendar.get(name)
        if raw is None:
            continue
        try:
            value = (
                raw.dt
                if hasattr(raw, "dt")
                else icalendar.vDuration.from_ical(str(raw))  # type: ignore[no-untyped-call]
            )
        except Exception as error:
            problems.append(Problem(f"unreadable {name}", _reason(error)))
            continue
        if isinstance(value, timedelta) and value > timedelta(0):
            return value
        problems.append(
            Problem(f"unusable {name}", f"{raw!s} is not a positive duration")
        )
    return None


# --- grouping and expansion -------------------------------------------------


def _group_by_uid(
    events: Iterable[Any], problems: list[Problem]
) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {}
    for event in events:
        uid, missing = uid_of(event)
        if missing is not None:
            problems.append(missing)
        groups.setdefault(uid, []).append(event)
    return groups


def uid_of(event: Any) -> tuple[str, Problem | None]:
    """Return an event's UID, or a stand-in and the problem that reports it."""
    uid = text_of(event, "UID")
    if uid:
        return uid, None
    uid = _stand_in_uid(event)
    return uid, Problem(
        "event without UID",
        f"gave it the stand-in UID {uid!r}, made of its start and summary",
        uid=uid,
    )


def _stand_in_uid(event: Any) -> str:
    seed = f"{_raw(event, 'DTSTART')}\x1f{text_of(event, 'SUMMARY')}"
    return "calsync-no-uid-" + hashlib.blake2b(seed.encode(), digest_size=8).hexdigest()


def _raw(event: Any, name: str) -> str:
    value = _single(event, name)
    if value is None:
        return ""
    text = value.to_ical()  # bytes, or str for a property icalendar could not read
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)


class _Source(EventAdapter):  # type: ignore[misc]
    """recurring-ical-events' event adapter, keeping hold of its component."""

    def __init__(self, component: Any) -> None:
        super().__init__(component)
        self.event = component


class _Instance(_RieOccurrence):  # type: ignore[misc]
    """A raw instance from recurring-ical-events, left uncopied for speed."""

    def __init__(
        self, adapter: _Source, start: Any = None, end: Any = None, sequence: int = -1
    ) -> None:
        super().__init__(adapter, start, end, sequence)
        self.event = adapter.event
        self.is_override = start is None
        # Under a RANGE=THISANDFUTURE override the computed start has been moved;
        # the recurrence id stays the instance's original start.
        self.original_start = (
            None if start is None else start - adapter.move_recurrences_by
        )

    def as_component(self, keep_recurrence_attributes: bool) -> _Instance:
        return self


_SELECTION = ComponentsWithName("VEVENT", adapter=_Source, occurrence=_Instance)


@attrs.frozen
class Expansion:
    """One UID group's share of a parse: its occurrences and problems, in order.

    ``spent`` is the dense-rule budget it used and ``need`` the calendar budget
    that must be left before it for the same result (0: any budget will do).
    ``unreadable`` holds the group's UID when some of its components could not
    be read, so that what was stored of them is kept.
    """

    occurrences: tuple[Occurrence, ...]
    problems: tuple[Problem, ...]
    spent: int = 0
    need: int = 0
    capped: bool = False
    unreadable: tuple[str, ...] = ()


NOTHING = Expansion((), ())


class Expander:
    """Turns UID groups into occurrences, bounding the work of dense rules."""

    def __init__(
        self, window: Window, zone: tzinfo, *, repair: tzinfo | None, limit: int
    ) -> None:
        self.window = window
        self.zone = zone
        self.repair = repair
        self.limit = limit
        self.query_start = window.start - _MARGIN
        self.query_end = window.end + _MARGIN
        self.budget = CALENDAR_INSTANCE_BUDGET
        self.capped = False
        self.problems: list[Problem] = []
        self.unreadable = False  # the group being expanded lost a component
        self._group_budget = self.budget
        self._need = 0

    def expand_group(self, uid: str, group: list[Any]) -> Expansion:
        """Expand one UID group; a group that cannot be expanded becomes a problem."""
        self._group_budget, self._need, self.capped = self.budget, 0, False
        self.unreadable = False
        skipped = []
        try:
            occurrences = self.expand(uid, group)
        except Exception as error:
            occurrences = []
            skipped = [Problem("event skipped", _reason(error), uid=uid)]
            self.unreadable = True
        problems, self.problems = skipped + self.problems, []
        unchanged = self.budget == self._group_budget and not self.capped
        if not occurrences and not problems and unchanged:
            return NOTHING
        return Expansion(
            tuple(occurrences),
            tuple(problems),
            spent=self._group_budget - self.budget,
            need=self._need,
            capped=self.capped,
            unreadable=(uid,) if self.unreadable else (),
        )

    @staticmethod
    def is_recurring(group: Iterable[Any]) -> bool:
        """Whether a group has instances beyond its events' own DTSTARTs."""
        return any(
            "RRULE" in event or "RDATE" in event or "RECURRENCE-ID" in event
            for event in group
        )

    def expand(self, uid: str, group: list[Any]) -> list[Occurrence]:
        """Return the in-window occurrences of one UID's VEVENTs."""
        recurring = self.is_recurring(group)
        if not recurring and all(self._clearly_outside(event) for event in group):
            return []
        self._note_unknown_zones(uid, group)
        self._drop_broken_dates(uid, group)
        calendar = icalendar.Calendar()
        # recurring-ical-events walks into components: a VEVENT nested in one
        # is a group of its own, expanded (and bounded) on its own.
        calendar.subcomponents = [_without_nested_events(event) for event in group]
        if self.repair is not None:
            calendar = x_wr_timezone.to_standard(calendar, timezone=self.repair)
        if len(calendar.subcomponents) > 1:
            # recurring-ical-events meets a group's events in an order of its own
            # (a set): fail on the first broken one in the feed's order instead,
            # so that the problem is the same on every parse.
            for event in calendar.subcomponents:
                _ = _Source(event).span
        query_end = self._bounded_end(uid, calendar.subcomponents)
        if query_end <= self.query_start:
            return []
        instances = recurring_ical_events.of(calendar, components=[_SELECTION]).between(
            self.query_start, query_end
        )
        described: dict[int, _Description] = {}
        occurrences = []
        for instance in instances:
            description = described.get(id(instance.event))
            if description is None:
                description = _describe(instance.event, self._instant)
                described[id(instance.event)] = description
            occurrence = self._occurrence(uid, instance, description, recurring)
            if occurrence is not None:
                occurrences.append(occurrence)
            if len(occurrences) > self.limit + 1_000:
                # Instances that started long before the window and last into
                # it (a DTSTART in year 23) are not bounded by the rule's end.
                self.capped = True
                break
        self._note_broken_properties(uid, group)
        return occurrences

    def _drop_broken_dates(self, uid: str, group: list[Any]) -> None:
        """Drop unreadable EXDATE/RDATE, which would sink the whole series."""
        for event in group:
            for name, why in getattr(event, "errors", ()):
                if name in _DROPPABLE and event.pop(name, None) is not None:
                    self.unreadable = self.unreadable or name == "RDATE"
                    self.problems.append(
                        Problem(
                            f"unreadable {name}",
                            f"{why}; ignored it, so {_DROPPABLE[name]}",
                            uid=uid,
                        )
                    )

    def _note_broken_properties(self, uid: str, group: list[Any]) -> None:
        for event in group:
            for name, why in getattr(event, "errors", ()):
                if name in _SHOWN:
                    self.problems.append(
                        Problem(
                            f"unreadable {name}", f"{why}; the event was kept", uid=uid
                        )
                    )

    def _clearly_outside(self, event: Any) -> bool:
        return self.outside(self.span(event))

    def outside(self, span: tuple[datetime, datetime] | None) -> bool:
        """Whether a single event spanning ``span`` is far from the window."""
        return span is not None and (
            span[1] < self.query_start or span[0] >= self.query_end
        )

    def span(self, event: Any) -> tuple[datetime, datetime] | None:
        """Return the earliest and latest instant of a single event, if readable."""
        try:
            start = self._instant(event["DTSTART"].dt)
            if "DTEND" in event:
                end = self._instant(event["DTEND"].dt)
            elif "DURATION" in event:
                end = start + event["DURATION"].dt
            else:
                end = start
        except Exception:
            return None
        return min(start, end), max(start, end)

    def _note_unknown_zones(self, uid: str, group: list[Any]) -> None:
        for event in group:
            value = event.get("DTSTART")
            tzid = getattr(value, "params", {}).get("TZID")
            dt = getattr(value, "dt", None)
            if tzid and isinstance(dt, datetime) and dt.tzinfo is None:
                self.problems.append(
                    Problem(
                        "unknown TZID",
                        f"{tzid!r} has no VTIMEZONE and is not a known zone; read as "
                        f"local time in {zone_name(self.zone)}",
                        uid=uid,
                    )
                )
                return

    def _bounded_end(self, uid: str, group: Sequence[Any]) -> datetime:
        """Return where to stop expanding, charging the budget for all the work.

        recurring-ical-events widens the query (`_widening`) and builds every
        instance in it; dateutil steps through every instance from DTSTART on,
        and on to the overrides' RECURRENCE-IDs. RDATE and EXDATE values are
        charged too.
        """
        query_end = self.query_end
        if not any(name in event for event in group for name in _DATED):
            return query_end
        before, after = _widening(group)
        checked = self._checked_until(group)
        reach = _Reach(
            _shifted(self.query_start, -before),
            after,
            None if checked is None else _shifted(checked, after),
        )
        for event in group:
            if not self._dates_fit(uid, event, reach, _shifted(query_end, after)):
                return self.query_start
        for event in group:
            rules = event.get("RRULE")
            if rules is None:
                continue
            start = self._rule_start(event)
            for rule in rules if isinstance(rules, list) else [rules]:
                end = self._rule_end(uid, rule, start, query_end, reach)
                query_end = min(query_end, end)
        return query_end

    def _rule_start(self, event: Any) -> datetime:
        """Where recurring-ical-events starts an event's rules.

        At the earlier of its start and end: it swaps them if DTEND comes first.
        """
        start = self._clamped(event["DTSTART"].dt)
        try:
            if "DTEND" in event:
                return min(start, self._clamped(event["DTEND"].dt))
            if "DURATION" in event:
                return min(start, _shifted(start, event["DURATION"].dt))
        except Exception:
            pass  # recurring-ical-events fails on the same event
        return start

    def _clamped(self, value: date | datetime) -> datetime:
        """Place a time like `_instant`, the first or last datetime if out of range."""
        try:
            return self._instant(value)
        except OverflowError:
            return _EARLIEST if value.year < 5000 else _LATEST

    def _checked_until(self, group: Sequence[Any]) -> datetime | None:
        """Return how far recurring-ical-events runs the rules to check overrides.

        An override with rules of its own is looked up in the master's rules,
        which are run from DTSTART to a day past its RECURRENCE-ID, whatever
        the query.
        """
        latest = None
        for event in group:
            if "RECURRENCE-ID" not in event or not any(n in event for n in _DATED):
                continue
            try:
                moment = self._instant(_single(event, "RECURRENCE-ID").dt)
            except Exception:
                continue  # recurring-ical-events fails on the same event
            latest = moment if latest is None else max(latest, moment)
        return None if latest is None else _shifted(latest, timedelta(days=1))

    def _charge(self, wanted: int) -> int | None:
        """Charge ``wanted`` units; past the budget, charge what is left and return it.

        A series may spend at most its own budget and what the calendar has left.
        """
        spent = self._group_budget - self.budget
        self._need = max(self._need, spent + _SERIES_INSTANCE_BUDGET)
        allowed = min(_SERIES_INSTANCE_BUDGET, self.budget)
        if wanted <= allowed:
            self.budget -= wanted
            return None
        self.budget -= allowed
        return allowed

    @staticmethod
    def _over(wanted: int, allowed: int) -> str:
        """Say which budget ``wanted`` units exceed, for a problem."""
        if allowed == _SERIES_INSTANCE_BUDGET:
            limit = f"the parser's budget of {allowed:,} a series"
        else:
            limit = (
                f"the {allowed:,} left of the parser's budget of "
                f"{CALENDAR_INSTANCE_BUDGET:,} a calendar"
            )
        return f"would need about {wanted:,} steps, over {limit}"

    def _dates_fit(
        self, uid: str, event: Any, reach: _Reach, build_to: datetime
    ) -> bool:
        """Charge an event's RDATE and EXDATE values; False if over the budget."""
        rdates = _dates(event, "RDATE")
        exdates = len(_dates(event, "EXDATE"))
        if not rdates and not exdates:
            return True
        built = sum(1 for value in rdates if self._builds(value, reach, build_to))
        wanted = DATE_COST * (len(rdates) + exdates) + BUILD_COST * built
        allowed = self._charge(wanted)
        if allowed is None:
            return True
        self.unreadable = True
        self.problems.append(
            Problem(
                "too many dates",
                f"{len(rdates):,} RDATE and {exdates:,} EXDATE values "
                f"{self._over(wanted, allowed)}; the event was skipped",
                uid=uid,
            )
        )
        return False

    def _builds(self, value: Any, reach: _Reach, build_to: datetime) -> bool:
        """Whether recurring-ical-events builds an instance for an RDATE value."""
        try:
            moment = self._instant(value[0] if isinstance(value, tuple) else value)
        except Exception:
            return True  # charged as built: an estimate never undercharges
        return reach.build_from <= moment <= build_to

    def _rule_end(
        self,
        uid: str,
        rule: Any,
        start: datetime,
        query_end: datetime,
        reach: _Reach,
    ) -> datetime:
        freq = str(rule_part(rule, "FREQ", "")).upper()
        if freq not in FREQ_SECONDS:
            return query_end  # recurring-ical-events reports the bad rule
        check_rule(rule, freq)
        period = timedelta(seconds=FREQ_SECONDS[freq] * rule_part(rule, "INTERVAL", 1))
        per_period = instances_per_period(rule, freq)
        series_end = _LATEST
        count = int(rule_part(rule, "COUNT", 0))
        if count > 0:  # recurring-ical-events ignores a COUNT below one
            kept = min(distinct(rule, "BYSETPOS") or per_period, per_period)
            series_end = _shifted(start, period, -(-count // kept))
        until = rule_part(rule, "UNTIL", None)
        if isinstance(until, date):
            series_end = min(series_end, _shifted(self._instant(until), period))
        # dateutil builds every candidate of a period, even those BYSETPOS drops.
        query_stop = min(_shifted(query_end, reach.after), series_end)
        stop = query_stop
        if reach.checked is not None:
            stop = max(stop, min(reach.checked, series_end))
        periods = count_periods(start, stop, period)
        cheap = min(count_periods(start, reach.build_from, period), periods)
        built = max(count_periods(start, query_stop, period) - cheap, 0)
        wanted = (periods + built * BUILD_COST) * per_period
        allowed = self._charge(wanted)
        end = query_end
        if allowed is not None:
            reached = _shifted(
                start, period, periods_affordable(allowed, per_period, cheap)
            )
            end = min(end, _shifted(reached, -reach.after))
            if reach.checked is not None and reached < min(reach.checked, series_end):
                end = self.query_start  # checking the overrides is past the budget
            self.problems.append(
                Problem(
                    "recurrence too dense",
                    f"FREQ={freq} {self._over(wanted, allowed)}; expanded only "
                    f"up to {reached.isoformat()}",
                    uid=uid,
                )
            )
        # Never build far more instances than the calendar may keep.
        first = max(start, self.window.start)
        keep = count_periods(first, min(end, series_end), period) * per_period
        if keep > self.limit + 1_000:
            end = _shifted(first, period, (self.limit + 1_000) // per_period + 1)
            self.capped = True
        return max(min(end, query_end), self.query_start)

    def _instant(self, value: date | datetime) -> datetime:
        if isinstance(value, datetime):
            if value.tzinfo is None:
                return value.replace(tzinfo=self.zone).astimezone(UTC)
            return value.astimezone(UTC)
        return datetime.combine(value, time(), tzinfo=self.zone).astimezone(UTC)

    def _occurrence(
        self,
        uid: str,
        instance: _Instance,
        description: _Description,
        recurring: bool,
    ) -> Occurrence | None:
        if description.status == EventStatus.CANCELLED:
            return None
        all_day = not isinstance(instance.start, datetime) and not isinstance(
            instance.end, datetime
        )
        start = self._instant(instance.start)
        end = self._end(instance, start, description)
        if end < start:
            start, end = end, start
        if not self.window.overlaps(start, end):
            return None
        return Occurrence(
            key=OccurrenceKey(uid, self._recurrence_id(instance) if recurring else ""),
            start=start,
            end=end,
            all_day=all_day,
            summary=description.summary,
            location=description.location,
            description=description.description,
            status=description.status,
            sequence=description.sequence,
            tzid=None if all_day else self._tzid(instance.start),
            start_date=instance.start if all_day else None,
            end_date=instance.end if all_day else None,
            alarms=description.alarm_leads(start, end, single=not recurring),
        )

    def _tzid(self, value: datetime) -> str | None:
        if value.tzinfo is None:
            return _tzid(value.replace(tzinfo=self.zone))
        return _tzid(value)

    def _end(
        self, instance: _Instance, start: datetime, description: _Description
    ) -> datetime:
        """Place the end in time as RFC 5545 says, across DST changes too."""
        if not isinstance(instance.start, datetime) or not isinstance(
            instance.end, datetime
        ):
            return self._instant(instance.end)
        if instance.end - instance.start != description.wall_length:
            return self._instant(instance.end)  # an RDATE period has its own end
        if description.exact_length is not None:
            return start + description.exact_length
        nominal = description.nominal_length
        if nominal is not None:
            days = self._instant(instance.start + timedelta(days=nominal.days))
            return days + (nominal - timedelta(days=nominal.days))
        return self._instant(instance.end)

    def _recurrence_id(self, instance: _Instance) -> str:
        original = instance.original_start
        if instance.is_override:
            original = _single(instance.event, "RECURRENCE-ID").dt
        if isinstance(original, datetime):
            return self._instant(original).strftime("%Y%m%dT%H%M%SZ")
        return f"{original:%Y%m%d}"


@attrs.frozen
class _Reach:
    """Where recurring-ical-events builds instances and runs a series' rules to.

    It builds those from ``build_from`` to the query's end plus ``after``, and
    runs the rules to ``checked`` (None: the query's end) to check overrides.
    """

    build_from: datetime
    after: timedelta
    checked: datetime | None


_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


def _shifted(moment: datetime, period: timedelta, times: int = 1) -> datetime:
    """Return ``moment + period * times``, kept within the datetimes there are."""
    try:
        return moment + period * times
    except OverflowError:
        return _LATEST if (period > timedelta(0)) == (times > 0) else _EARLIEST


def _widening(group: Iterable[Any]) -> tuple[timedelta, timedelta]:
    """How far recurring-ical-events widens a query, back and ahead.

    Back by the longest event of the series, ahead by the farthest a
    RANGE=THISANDFUTURE override moved (other overrides do not widen it).
    """
    before = after = timedelta(0)
    for event in group:
        try:
            adapter = _Source(event)
            if "RECURRENCE-ID" in event and not adapter.this_and_future:
                continue
            back, ahead = adapter.extend_query_span_by
            before, after = max(before, back), max(after, ahead)
        except Exception:
            continue  # recurring-ical-events fails on the same event
    return before, after


def _dates(event: Any, name: str) -> list[Any]:
    """Return the values of all of an event's RDATE or EXDATE properties."""
    values = event.get(name)
    if values is None:
        return []
    return [
        item.dt
        for value in (values if isinstance(values, list) else [values])
        for item in getattr(value, "dts", ())
    ]


def _sequence(event: Any) -> int:
    try:
        return int(rule_part(event, "SEQUENCE", 0))
    except (TypeError, ValueError):
        return 0


def _without_nested_events(component: Any) -> Any:
    """Return the component, or a shallow copy of it without VEVENTs inside."""
    if not component.subcomponents:
        return component
    kept = [
        _without_nested_events(sub)
        for sub in component.subcomponents
        if sub.name != "VEVENT"
    ]
    if len(kept) == len(component.subcomponents) and all(
        new is old for new, old in zip(kept, component.subcomponents, strict=True)
    ):
        return component
    trimmed = copy.copy(component)
    trimmed.subcomponents = kept
    return trimmed


def _tzid(value: date | datetime) -> str | None:
    """Name the zone of a start: IANA where known (Windows names mapped), else TZID."""
    zone = getattr(value, "tzinfo", None)
    if zone is None:
        return None
    if isinstance(zone, FeedZone):
        name = zone.tzid
        name = "UTC" if "UTC" in get_equivalent_tzids(name) else name
    else:
        name = tzid_from_tzinfo(zone) or str(zone)
    name = WINDOWS_TO_OLSON.get(name, name)
    return None if name in ("UTC", "Etc/UTC", "Z") else name


@attrs.frozen
class _Description:
    """What an event says about itself, read once for all of its instances."""

    summary: str
    location: str
    description: str
    status: str
    sequence: int
    triggers: tuple[tuple[timedelta, bool], ...]  # (offset, relative to the end)
    fire_times: tuple[datetime, ...]  # absolute triggers, in UTC
    # recurring-ical-events adds lengths in wall-clock time; RFC 5545 wants the
    # exact length of DTEND - DTSTART, and DURATION's days nominal, its time exact.
    wall_length: timedelta | None = None
    exact_length: timedelta | None = None
    nominal_length: timedelta | None = None

    def alarm_leads(
        self, start: datetime, end: datetime, *, single: bool
    ) -> tuple[timedelta, ...]:
        """How long before the start each VALARM fires; later ones are dropped.

        An absolute trigger counts for a single, non-recurring event only.
        """
        leads = []
        for offset, from_end in self.triggers:
            fires = offset + (end - start) if from_end else offset
            if fires <= timedelta(0):
                leads.append(-fires)
        if single:
            leads += [start - fires for fires in self.fire_times if fires <= start]
        return tuple(leads)


def _describe(
    event: Any, to_utc: Callable[[date | datetime], datetime]
) -> _Description:
    description = _Description(
        summary=text_of(event, "SUMMARY"),
        location=text_of(event, "LOCATION"),
        description=text_of(event, "DESCRIPTION"),
        status=text_of(event, "STATUS").upper(),
        sequence=_sequence(event),
        triggers=tuple(_relative_triggers(event)),
        fire_times=tuple(to_utc(at) for at in _absolute_triggers(event)),
    )
    start = getattr(event.get("DTSTART"), "dt", None)
    end = getattr(event.get("DTEND"), "dt", None)
    duration = getattr(event.get("DURATION"), "dt", None)
    if not isinstance(start, datetime):
        return description
    if isinstance(end, datetime):
        if start.tzinfo is None and end.tzinfo is not None:
            return description  # recurring-ical-events already placed the start
        if end.tzinfo is None:
            # recurring-ical-events reads a floating end in the start's zone.
            wall = end.replace(tzinfo=start.tzinfo) - start
        else:
            wall = end - start
        exact = to_utc(end) - to_utc(start)
        return attrs.evolve(description, wall_length=wall, exact_length=exact)
    if isinstance(duration, timedelta) and duration >= timedelta(0):
        return attrs.evolve(description, wall_length=duration, nominal_length=duration)
    return description


def _triggers(event: Any) -> Iterator[Any]:
    for alarm in event.subcomponents:
        if alarm.name == "VALARM" and "TRIGGER" in alarm:
            yield alarm["TRIGGER"]


def _relative_triggers(event: Any) -> Iterator[tuple[timedelta, bool]]:
    for trigger in _triggers(event):
        offset = getattr(trigger, "dt", None)
        if isinstance(offset, timedelta):
            related = str(trigger.params.get("RELATED", "START")).upper()
            yield offset, related == "END"


def _absolute_triggers(event: Any) -> Iterator[datetime]:
    for trigger in _triggers(event):
        at = getattr(trigger, "dt", None)
        if isinstance(at, datetime):
            yield at


# --- results ----------------------------------------------------------------


def _unique(occurrences: list[Occurrence], problems: list[Problem]) -> list[Occurrence]:
    seen: dict[OccurrenceKey, Occurrence] = {}
    for occurrence in occurrences:
        if occurrence.key in seen:
            problems.append(
                Problem(
                    "duplicate occurrence",
                    f"two instances share the recurrence id "
                    f"{occurrence.key.recurrence_id!r}; kept the first",
                    uid=occurrence.key.uid,
                )
            )
            continue
        seen[occurrence.key] = occurrence
    return list(seen.values())


def _reason(error: BaseException) -> str:
    if isinstance(error, UnusableRule):
        return f"unusable RRULE: {error}"
    message = str(error).strip() or "no details"
    if isinstance(error, KeyError):
        message = f"missing property {message}"
    return f"{type(error).__name__}: {message}"[:300]


_UID_LINE = re.compile(r"^UID[;:]([^\r\n]*)", re.IGNORECASE | re.MULTILINE)


def uid_lines(text: str) -> Iterator[tuple[int, str]]:
    """Yield where each line that looks like a UID line starts, and its UID.

    Problems are numbered by the first such line of their UID (`_with_lines`).
    """
    for match in _UID_LINE.finditer(text):
        value = match.group(1)
        if match.group(0)[3] == ";":
            value = value.split(":", 1)[-1]
        yield match.start(), value.strip()


def _with_lines(problems: list[Problem], text: str) -> list[Problem]:
    """Add the line of each problem's event, scanning the text only when needed."""
    if not any(p.uid is not None and p.line is None for p in problems):
        return problems
    wanted = {p.uid for p in problems if p.uid is not None and p.line is None}
    lines: dict[str, int] = {}
    line, position = 1, 0
    for start, uid in uid_lines(text):
        if uid in wanted and uid not in lines:
            line += text.count("\n", position, start)
            position = start
            lines[uid] = line
    return [
        Problem(p.what, p.why, uid=p.uid, line=lines.get(p.uid))
        if p.uid is not None and p.line is None
        else p
        for p in problems
    ]
