"""Re-parse a changed feed body by reading only the events whose text changed.

A `ParseCache` remembers, for one calendar, what the last parse learnt from each
VEVENT block's text (its UID) and from each UID group's texts (a master with its
overrides): the parsed components where a window slide may need them again, and
the group's expansion in the last window. A new body is split at the text level
(`calsync.core.split`), blocks whose exact text is known are not read again, and
groups whose texts are unchanged are not expanded again. Everything a group's
result depends on besides its own text (the VTIMEZONEs, the zone floating times
are read in, ``max_occurrences``, the window) is compared first; a change drops
what depends on it. Bodies the split does not understand, and bodies with a
component icalendar refuses, are parsed whole, as without a cache.
"""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any

import attrs

from calsync.core.ics import (
    CALENDAR_INSTANCE_BUDGET,
    NOTHING,
    Expander,
    Expansion,
    expander_for,
    finish,
    text_of,
    uid_of,
)
from calsync.core.limits import Limits
from calsync.core.model import ParsedCalendar, Problem, Window
from calsync.core.split import Layout, split_calendar, wrapped
from calsync.core.vtimezone import FeedZones, read_components

__all__ = ["ParseCache", "ParseCacheStats", "reparse"]

_Span = tuple[datetime, datetime] | None
_Context = tuple[tuple[str, ...], tzinfo, tzinfo | None, int]


@attrs.frozen
class ParseCacheStats:
    """What the last `parse_ics` with a `ParseCache` did, for metrics and tests.

    ``whole`` is true when the body was parsed whole (its structure is not one
    the cache can split, or a component in it is refused by icalendar).
    """

    whole: bool = False
    events_read: int = 0
    groups_expanded: int = 0
    groups_reused: int = 0


@attrs.define
class _Group:
    """What one UID group's texts gave, kept for the next parse of the calendar."""

    recurring: bool
    spans: tuple[_Span, ...]  # of a non-recurring group's events
    components: list[Any] | None  # None: read the texts again when needed
    expansion: Expansion | None  # in the cache's window, if it holds for reuse


@attrs.define(repr=False)
class ParseCache:
    """One calendar's memory of its last parse, for `parse_ics` (``cache=``).

    Holds what the latest body needs and nothing of older ones: the texts of its
    blocks, the UID of each event, the expansion of each UID group in the last
    window, and the parsed components of recurring and in-window groups (for
    the 4,778-event Google export about 10 MB). Not thread-safe: use one per
    calendar, and `clear` it (or drop it) to free the memory.
    """

    _context: _Context | None = attrs.field(default=None, init=False)
    _window: Window | None = attrs.field(default=None, init=False)
    _known: set[str] = attrs.field(factory=set, init=False)
    _uids: dict[str, tuple[str, Problem | None]] = attrs.field(factory=dict, init=False)
    _groups: dict[tuple[str, tuple[str, ...]], _Group] = attrs.field(
        factory=dict, init=False
    )
    _stats: ParseCacheStats = attrs.field(factory=ParseCacheStats, init=False)
    _zones: FeedZones = attrs.field(factory=FeedZones, init=False)

    @property
    def stats(self) -> ParseCacheStats:
        """What the last parse through this cache read again and what it reused."""
        return self._stats

    def __len__(self) -> int:
        """Return the number of UID groups remembered."""
        return len(self._groups)

    def __repr__(self) -> str:
        return f"<ParseCache of {len(self._groups)} UID groups>"

    def clear(self) -> None:
        """Forget everything; the next parse reads the whole body."""
        self._context = self._window = None
        self._known, self._uids, self._groups = set(), {}, {}
        self._zones = FeedZones()


@attrs.define
class _Event:
    """A VEVENT block of the body being parsed, read or not yet."""

    text: str
    uid: str = ""
    missing_uid: Problem | None = None
    component: Any = None


def reparse(
    cache: ParseCache,
    text: str,
    window: Window,
    zone: tzinfo,
    limit: int,
    problems: list[Problem],
    limits: Limits,
) -> ParsedCalendar | None:
    """Parse ``text`` through ``cache``; ``None`` means: parse the whole body.

    ``problems`` holds those found so far (decoding); it is left untouched
    when the answer is ``None``. Raises `ParseError` past ``limits``, as the
    whole parse does.
    """
    run = _Run(cache, window)
    parsed = run.parse(text, zone, limit, list(problems), limits)
    cache._stats = run.stats()
    return parsed


class _Run:
    """One parse through a cache; on any surprise it gives up (returns None)."""

    def __init__(self, cache: ParseCache, window: Window) -> None:
        self.cache = cache
        self.window = window
        self.groups: dict[tuple[str, tuple[str, ...]], _Group] = {}
        self.events_read = self.expanded = self.reused = 0
        self.whole = True

    def stats(self) -> ParseCacheStats:
        return ParseCacheStats(
            whole=self.whole,
            events_read=self.events_read,
            groups_expanded=self.expanded,
            groups_reused=self.reused,
        )

    def parse(
        self,
        text: str,
        zone: tzinfo,
        limit: int,
        problems: list[Problem],
        limits: Limits,
    ) -> ParsedCalendar | None:
        layout = split_calendar(text)
        if layout is None:
            return None
        limits.check_components(layout.components, layout.depth)
        calendar = _read_header(layout.header)
        if calendar is None:
            return None
        zones = self._zones(layout.timezones)
        if zones is None:
            return None
        problems.extend(zones.problems)
        timezone_name = text_of(calendar, "X-WR-TIMEZONE") or None
        expander = expander_for(
            self.window, zone, limit, timezone_name, problems, zones.cost
        )
        self._enter((tuple(layout.timezones), expander.zone, expander.repair, limit))
        self.cache._zones = zones
        if not self._check_blocks(layout):
            return None
        events = [_Event(block) for block in layout.events]
        if not self._read_new(events):
            return None
        expansions = []
        for uid, members in _grouped(events, problems).items():
            expansion = self._expand(expander, uid, members)
            if expansion is None:
                return None
            expansions.append(expansion)
        self._keep(layout, events)
        self.whole = False
        return finish(text, calendar, timezone_name, problems, expansions, limit)

    def _zones(self, blocks: list[str]) -> FeedZones | None:
        """Build the body's VTIMEZONEs, or reuse them if their texts are the same."""
        cache = self.cache
        if cache._context is not None and cache._context[0] == tuple(blocks):
            return cache._zones
        components = _read_blocks(blocks) if blocks else []
        if components is None:
            return None
        # Nested ones too, as a whole parse reads them (found by nox -s fuzz).
        zones = [zone for block in components for zone in block.walk("VTIMEZONE")]
        return FeedZones.read(zones, CALENDAR_INSTANCE_BUDGET)

    def _enter(self, context: _Context) -> None:
        """Drop what depends on the context or the window if either changed."""
        cache = self.cache
        if cache._context is None or not _same_context(cache._context, context):
            cache._context = context
            cache._uids, cache._groups = {}, {}
        if cache._window != self.window:
            cache._window = self.window
            for group in cache._groups.values():
                group.expansion = None

    def _check_blocks(self, layout: Layout) -> bool:
        """Check that icalendar reads the other blocks not seen yet."""
        new = [block for block in layout.others if block not in self.cache._known]
        if new and _read_blocks(new) is None:
            return False
        self.cache._known.update(new)
        return True

    def _read_new(self, events: list[_Event]) -> bool:
        """Read the events whose text is new, all at once, and learn their UIDs."""
        uids = self.cache._uids
        new = [event for event in events if event.text not in uids]
        if new and not self._read(new):
            return False
        for event in events:
            if event.component is None:
                event.uid, event.missing_uid = uids[event.text]
                continue
            event.uid, event.missing_uid = uid_of(event.component)
            uids[event.text] = (event.uid, event.missing_uid)
        return True

    def _read(self, events: list[_Event]) -> bool:
        components = _read_blocks([event.text for event in events])
        if components is None:
            return False
        self.cache._zones.place(components)
        for event, component in zip(events, components, strict=True):
            event.component = component
        self.events_read += len(events)
        return True

    def _expand(
        self, expander: Expander, uid: str, members: list[_Event]
    ) -> Expansion | None:
        key = (uid, tuple(event.text for event in members))
        group = self.cache._groups.get(key)
        if group is not None:
            expansion = _reuse(group, expander)
            if expansion is not None:
                self.reused += 1
                self.groups[key] = group
                return expansion
        components = None if group is None else group.components
        if components is None:
            unread = [event for event in members if event.component is None]
            if unread and not self._read(unread):
                return None
            components = [event.component for event in members]
        self.expanded += 1
        remembered = _remember(expander, components)
        budget = expander.budget
        expansion = expander.expand_group(uid, list(components))
        remembered.expansion = expansion if budget >= expansion.need else None
        self.groups[key] = remembered
        return expansion

    def _keep(self, layout: Layout, events: list[_Event]) -> None:
        """Keep what the latest body needs, and forget everything else."""
        cache = self.cache
        cache._groups = self.groups
        cache._uids = {
            event.text: cache._uids[event.text]
            for event in events
            if event.text in cache._uids
        }
        cache._known = {*layout.timezones, *layout.others}


def _reuse(group: _Group, expander: Expander) -> Expansion | None:
    """Return the group's expansion if its texts alone tell it, else None."""
    expansion = group.expansion
    if expansion is not None and expander.budget >= expansion.need:
        expander.budget -= expansion.spent
        return expansion
    if not group.recurring and all(expander.outside(span) for span in group.spans):
        group.expansion = NOTHING
        return NOTHING
    return None


def _remember(expander: Expander, components: list[Any]) -> _Group:
    """Describe a group from its unexpanded components (expanding may change them)."""
    recurring = expander.is_recurring(components)
    spans = () if recurring else tuple(expander.span(event) for event in components)
    far = not recurring and all(expander.outside(span) for span in spans)
    kept = None if far or _has_errors(components) else components
    return _Group(recurring, spans, kept, None)


def _has_errors(components: list[Any]) -> bool:
    """Whether icalendar kept an unreadable property in the group.

    Expanding may drop it, and its error's traceback holds on to the whole text
    the component was read from.
    """
    return any(part.errors for event in components for part in event.walk())


def _grouped(events: list[_Event], problems: list[Problem]) -> dict[str, list[_Event]]:
    """Group events by UID in the body's order, as the whole parse does."""
    groups: dict[str, list[_Event]] = {}
    for event in events:
        if event.missing_uid is not None:
            problems.append(event.missing_uid)
        groups.setdefault(event.uid, []).append(event)
    return groups


def _same_context(old: _Context, new: _Context) -> bool:
    # Zones by identity: equal fixed offsets may still carry different names.
    return (
        old[0] == new[0]
        and old[1] is new[1]
        and old[2] is new[2]
        and (old[3] == new[3])
    )


def _read_header(header: str) -> Any:
    """Return the VCALENDAR of the header lines, or None if icalendar refuses them."""
    calendar = _read_calendar(header)
    return None if calendar is None or calendar.subcomponents else calendar


def _read_blocks(blocks: list[str]) -> list[Any] | None:
    """Read blocks as one VCALENDAR; None if icalendar refuses any of them.

    A whole parse would then fail too and read the body block by block.
    """
    calendar = _read_calendar(wrapped(blocks))
    if calendar is None or len(calendar.subcomponents) != len(blocks):
        return None
    return list(calendar.subcomponents)


def _read_calendar(text: str) -> Any:
    try:
        parsed = read_components(text)
    except Exception:
        return None
    if len(parsed) != 1 or parsed[0].name != "VCALENDAR":
        return None
    return parsed[0]
