"""Parse a feed body group by group, and remember what a `ParseCache` may reuse.

The body is cut at the text level (`calsync.core.split`) into its calendar
properties, VTIMEZONEs, events and other blocks. Events are grouped by UID (a
master with its overrides), learnt from the UID line of their text where it is
plain; icalendar then reads a few groups' blocks at a time (about 64 KB of
text), which are expanded and dropped. Whatever the size of a feed, only those
few groups' components are alive at once.

A `ParseCache` remembers, for one calendar, a digest of each UID group's texts
and the group's expansion (no icalendar objects): a new body's groups whose
texts are unchanged are neither read nor expanded again. A group is expanded
`_AHEAD` further than the window asks, then filtered to it, so its expansion
still holds when the window slides (a sync every 15 minutes); one with a
problem or cut short by a budget is kept for its exact window only. Everything
a group's result depends on besides its own text (the VTIMEZONEs, the zone
floating times are read in, ``max_occurrences``) is compared first; a change
drops what depends on it. Bodies the split does not
understand, and bodies with a component icalendar refuses, are parsed whole by
`calsync.core.ics.parse_whole`, which the result here always equals.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, tzinfo
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

__all__ = ["ParseCache", "ParseCacheStats", "parse_groups"]

_Span = tuple[datetime, datetime] | None
_Context = tuple[bytes, tzinfo, tzinfo | None, int]
# Characters of block text icalendar reads in one go: its components are alive
# together, about 25 bytes of memory a character.
_CHUNK = 64 * 1024
# Any line icalendar may read as a UID property (it drops blanks in names and
# upper-cases them: a dotless i is an I). A block's first line is its BEGIN.
_UID_LINE = re.compile("\n[ \t]*[Uu][ \t]*[Ii\u0131][ \t]*[Dd][ \t]*[:;]")
# The plain form, not folded on: its value is the UID as icalendar reads it.
_PLAIN_UID = re.compile(r"UID:([^\\\r\n]*)\r?\n(?!(?:\r?\n)*[ \t])")
# How much further ahead than the window a group is expanded for the cache: its
# expansion holds while the window's end slides this far (a week of syncs).
_AHEAD = timedelta(days=7)


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
    # Of a non-recurring group: from its earliest start to its latest end
    # (None if one is unreadable). Far from the window, it needs no expanding.
    span: _Span
    expansion: Expansion | None  # in ``cover``, if it holds for reuse
    # The window the expansion was made in; None: none kept.
    cover: Window | None = None
    # Whether it holds, filtered, for any window inside ``cover`` (else only for
    # ``cover`` itself): it has no problem and was not cut short.
    wide: bool = False
    # Its occurrences' latest start and earliest end: a window that holds them
    # all needs no filtering.
    latest_start: datetime | None = None
    earliest_end: datetime | None = None


@attrs.define(repr=False)
class ParseCache:
    """One calendar's memory of its last parse, for `parse_ics` (``cache=``).

    Holds what the latest body needs and nothing of older ones: a digest of each
    UID group's texts with the group's expansion in the last window, and the
    feed's VTIMEZONEs, no icalendar objects: a few times the body's size (2.3x
    for a 20 MiB feed of 143,200 events, 2.7 MB for the 1.6 MB Google export
    in a year's window). Not thread-safe: use one per calendar, and `clear` it
    (or drop it) to free the memory.
    """

    _context: _Context | None = attrs.field(default=None, init=False)
    _window: Window | None = attrs.field(default=None, init=False)
    _known: set[bytes] = attrs.field(factory=set, init=False)
    _uids: dict[bytes, tuple[str, Problem | None]] = attrs.field(
        factory=dict, init=False
    )
    _groups: dict[bytes, _Group] = attrs.field(factory=dict, init=False)
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

    @property
    def nbytes(self) -> int:
        """Estimated bytes held, for a memory budget over many caches; O(groups)."""
        return _estimated_bytes(self)

    def clear(self) -> None:
        """Forget everything; the next parse reads the whole body."""
        self._context = self._window = None
        self._known, self._uids, self._groups = set(), {}, {}
        self._zones = FeedZones()


def parse_groups(
    text: str,
    window: Window,
    zone: tzinfo,
    limit: int,
    problems: list[Problem],
    limits: Limits,
    cache: ParseCache | None = None,
) -> ParsedCalendar | None:
    """Parse ``text`` group by group, through ``cache`` if given.

    ``None`` means: parse the whole body with `parse_whole` (the cache is
    cleared then). ``problems`` holds those found so far (decoding); it is left
    untouched when the answer is ``None``. Raises `ParseError` past
    ``limits``, as the whole parse does.
    """
    fresh = ParseCache() if cache is None else cache
    run = _Run(fresh, window, remember=cache is not None)
    parsed = run.parse(text, zone, limit, list(problems), limits)
    if cache is not None:
        if parsed is None:
            cache.clear()
        cache._stats = run.stats()
    return parsed


class _Run:
    """One parse, group by group; on any surprise it gives up (returns None)."""

    def __init__(self, cache: ParseCache, window: Window, *, remember: bool) -> None:
        self.cache = cache
        self.window = window
        self.remember = remember
        self.zones = FeedZones()
        self.groups: dict[bytes, _Group] = {}
        self.uids: dict[bytes, tuple[str, Problem | None]] = {}
        self.events_read = self.expanded = self.reused = 0
        self.whole = True
        # Set once a group's expansion in a wider window is used: it may have
        # spent more of the calendar's budget than the window's own would, so a
        # later group that finds the budget short gives the parse up (rare).
        self.drift = False
        self.wide: Expander | None = None
        # The groups to expand, in order, and the ones read ahead of their turn.
        self.order: list[tuple[str, list[str]]] = []
        self.unread: list[int] = []
        self.ahead: dict[int, list[Any]] = {}

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
        zone_key = _digest(layout.timezones)
        zones = self._zones(zone_key, layout.timezones)
        if zones is None:
            return None
        self.zones = zones
        problems.extend(zones.problems)
        timezone_name = text_of(calendar, "X-WR-TIMEZONE") or None
        expander = expander_for(
            self.window, zone, limit, timezone_name, problems, zones.cost
        )
        self._enter((zone_key, expander.zone, expander.repair, limit))
        if self.remember:
            wider = Window(self.window.start, _later(self.window.end, _AHEAD))
            self.wide = Expander(
                wider, expander.zone, repair=expander.repair, limit=limit
            )
        if not self._check_others(layout.others):
            return None
        if not self._group(layout.events, problems):
            return None
        keys: list[bytes] = []
        self.unread = list(range(len(self.order)))
        if self.remember:
            keys = [_digest(texts) for _, texts in self.order]  # texts tell the UID
            cached = self.cache._groups
            self.unread = [
                position
                for position, key in enumerate(keys)
                if _unsure(cached.get(key), expander, self.window)
            ]
        expansions = []
        for position, (uid, _) in enumerate(self.order):
            key = keys[position] if keys else None
            expansion = self._expand(expander, position, uid, key)
            if expansion is None:
                return None
            expansions.append(expansion)
        self._keep(layout)
        self.whole = False
        return finish(text, calendar, timezone_name, problems, expansions, limit)

    def _zones(self, key: bytes, blocks: list[str]) -> FeedZones | None:
        """Build the body's VTIMEZONEs, or reuse them if their texts are the same."""
        cache = self.cache
        if cache._context is not None and cache._context[0] == key:
            return cache._zones
        components = _read_blocks(blocks) if blocks else []
        if components is None:
            return None
        # Nested ones too, as a whole parse reads them (found by nox -s fuzz).
        zones = [zone for block in components for zone in block.walk("VTIMEZONE")]
        return FeedZones.read(zones, CALENDAR_INSTANCE_BUDGET)

    def _enter(self, context: _Context) -> None:
        """Drop what depends on the context if it changed (not on the window)."""
        cache = self.cache
        if cache._context is None or not _same_context(cache._context, context):
            cache._context = context
            cache._uids, cache._groups = {}, {}
        cache._zones = self.zones
        cache._window = self.window

    def _check_others(self, blocks: list[str]) -> bool:
        """Check that icalendar reads the other blocks not seen yet (VTODO, ...)."""
        known = self.cache._known
        new = [block for block in blocks if _digest([block]) not in known]
        return all(_read_blocks(chunk) is not None for chunk in _chunks(new))

    def _group(self, events: list[str], problems: list[Problem]) -> bool:
        """Group the events by UID in the body's order, as the whole parse does.

        An event whose UID line is not plain is read (a chunk at a time) to
        learn its UID; the components are dropped again.
        """
        uids: list[tuple[str, Problem | None] | None] = []
        unsure: list[int] = []
        known = self.cache._uids
        for index, event in enumerate(events):
            uid = _plain_uid(event)
            if uid is not None:
                uids.append((uid, None))
                continue
            learnt = known.get(_digest([event]))
            uids.append(learnt)
            if learnt is None:
                unsure.append(index)
            else:
                self.uids[_digest([event])] = learnt
        for chunk in _chunks([events[index] for index in unsure]):
            components = _read_blocks(chunk)
            if components is None:
                return False
            self.zones.place(components)
            for event, component in zip(chunk, components, strict=True):
                self.uids[_digest([event])] = uid_of(component)
            self.events_read += len(chunk)
        groups: dict[str, list[str]] = {}
        for event, known_uid in zip(events, uids, strict=True):
            uid, missing = known_uid or self.uids[_digest([event])]
            if missing is not None:
                problems.append(missing)
            groups.setdefault(uid, []).append(event)
        self.order = list(groups.items())
        return True

    def _expand(
        self, expander: Expander, position: int, uid: str, key: bytes | None
    ) -> Expansion | None:
        group = None if key is None else self.cache._groups.get(key)
        if group is not None:
            expansion = self._reuse(group, expander)
            if expansion is not None:
                self.ahead.pop(position, None)
                self.reused += 1
                self.groups[key] = group  # type: ignore[index]
                return expansion
        components = self._components(position)
        if components is None:
            return None
        self.expanded += 1
        if key is None or self.wide is None:
            return expander.expand_group(uid, components)
        remembered = _remember(expander, components)
        budget = expander.budget
        wide = self.wide
        wide.budget = budget
        expansion = wide.expand_group(uid, components)
        if _holds_wide(expansion, budget):
            expander.budget = wide.budget
            self.drift = True
            _cover(remembered, expansion, wide.window, wide=True)
            self.groups[key] = remembered
            return _narrowed(remembered, self.window)
        # A problem or a budget may depend on the window: expand in it exactly,
        # from the texts again (expanding may have changed the components).
        read = _read_blocks(self.order[position][1])
        if read is None:
            return None
        self.zones.place(read)
        expander.budget = budget
        expansion = expander.expand_group(uid, read)
        if budget < expansion.need:
            if self.drift:
                return None  # the budget is short only for the wider windows
        else:
            _cover(remembered, expansion, self.window, wide=False)
        self.groups[key] = remembered
        return expansion

    def _reuse(self, group: _Group, expander: Expander) -> Expansion | None:
        """Return the group's expansion if its texts alone tell it, else None."""
        expansion = group.expansion
        if (
            expansion is not None
            and _fits(group, self.window)
            and expander.budget >= expansion.need
        ):
            expander.budget -= expansion.spent
            if not group.wide:
                return expansion
            self.drift = True
            return _narrowed(group, self.window)
        if not group.recurring and expander.outside(group.span):
            return NOTHING
        return None

    def _components(self, position: int) -> list[Any] | None:
        """Return a group's components, reading the next groups' along with them.

        None if icalendar refuses a block, or reads a UID other than the one
        the group was formed by.
        """
        components = self.ahead.pop(position, None)
        if components is not None:
            return components
        chosen = [position]
        size = sum(map(len, self.order[position][1]))
        after = bisect.bisect_right(self.unread, position)
        while size < _CHUNK and after < len(self.unread):
            chosen.append(self.unread[after])
            size += sum(map(len, self.order[self.unread[after]][1]))
            after += 1
        blocks = [text for later in chosen for text in self.order[later][1]]
        read = _read_blocks(blocks)
        if read is None:
            return None
        self.zones.place(read)
        self.events_read += len(blocks)
        parts = iter(read)
        for later in chosen:
            uid, texts = self.order[later]
            group = [next(parts) for _ in texts]
            if any(uid_of(component)[0] != uid for component in group):
                return None
            self.ahead[later] = group
        return self.ahead.pop(position)

    def _keep(self, layout: Layout) -> None:
        """Keep what the latest body needs, and forget everything else."""
        if not self.remember:
            return
        cache = self.cache
        cache._groups = self.groups
        cache._uids = self.uids
        cache._known = {_digest([block]) for block in layout.others}


def _digest(texts: Sequence[str]) -> bytes:
    """Return a digest of a sequence of texts (lengths included: no ambiguity)."""
    if len(texts) == 1:
        data = texts[0].encode("utf-8", "surrogatepass")
        return hashlib.blake2b(data, digest_size=16).digest()
    digest = hashlib.blake2b(len(texts).to_bytes(8, "little"), digest_size=16)
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.digest()


# What one kept item costs besides its texts (measured with tracemalloc).
_GROUP_BYTES = 300
_OCCURRENCE_BYTES = 720
_ENTRY_BYTES = 200
_ZONE_BYTES = 16 * 1024


def _estimated_bytes(cache: ParseCache) -> int:
    """Estimate a cache's bytes; a group's occurrences priced as its first one."""
    total = _GROUP_BYTES * len(cache._groups) + _ZONE_BYTES * len(cache._zones.zones)
    total += _ENTRY_BYTES * (len(cache._uids) + len(cache._known))
    for group in cache._groups.values():
        occurrences = () if group.expansion is None else group.expansion.occurrences
        if occurrences:
            first = occurrences[0]
            texts = len(first.summary) + len(first.description) + len(first.location)
            total += len(occurrences) * (_OCCURRENCE_BYTES + texts + len(first.key.uid))
    return total


def _chunks(blocks: list[str]) -> Iterable[list[str]]:
    """Cut blocks into runs of about `_CHUNK` characters, for one read each."""
    chunk: list[str] = []
    size = 0
    for block in blocks:
        chunk.append(block)
        size += len(block)
        if size >= _CHUNK:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _plain_uid(block: str) -> str | None:
    """Return the UID a VEVENT block's text states plainly, else None.

    Plain: one UID line in the block, ``UID:`` and a value without backslash
    escapes, not folded, before any nested component (a VALARM may have a UID).
    What icalendar reads is checked again when the block is read.
    """
    line = _UID_LINE.search(block)
    if line is None or _UID_LINE.search(block, line.end()) is not None:
        return None
    start = line.start() + 1
    plain = _PLAIN_UID.match(block, start)
    if plain is None or block.find("\nBEGIN:", 0, start) != -1:
        return None
    return plain.group(1).strip() or None


def _unsure(group: _Group | None, expander: Expander, window: Window) -> bool:
    """Whether a group will likely have to be read: not known, or out of its cover."""
    if group is None:
        return True
    if _fits(group, window):
        return False
    return group.recurring or not expander.outside(group.span)


def _fits(group: _Group, window: Window) -> bool:
    """Whether the group's kept expansion holds for ``window`` (filtered if wide)."""
    cover = group.cover
    if group.expansion is None or cover is None:
        return False
    if group.wide:
        return cover.start <= window.start and window.end <= cover.end
    return cover == window


def _holds_wide(expansion: Expansion, budget: int) -> bool:
    """Whether an expansion in a wider window, filtered, is the window's own.

    Its occurrences are then a superset of the window's, each the same; a
    problem, a cap or a budget cut could depend on the window.
    """
    return (
        not expansion.problems
        and not expansion.capped
        and not expansion.unreadable
        and budget >= expansion.need
    )


def _cover(group: _Group, expansion: Expansion, window: Window, *, wide: bool) -> None:
    """Remember ``expansion``, made in ``window``, on the group."""
    group.expansion, group.cover, group.wide = expansion, window, wide
    occurrences = expansion.occurrences
    if occurrences:
        group.latest_start = max(o.start for o in occurrences)
        group.earliest_end = min(o.end for o in occurrences)


def _narrowed(group: _Group, window: Window) -> Expansion:
    """Return a wide group's expansion filtered to ``window`` (the same objects)."""
    expansion = group.expansion
    assert expansion is not None
    occurrences = expansion.occurrences
    if not occurrences or (
        group.earliest_end is not None
        and group.latest_start is not None
        and group.earliest_end > window.start
        and group.latest_start < window.end
    ):
        return expansion
    kept = tuple(o for o in occurrences if window.overlaps(o.start, o.end))
    return attrs.evolve(expansion, occurrences=kept)


def _later(moment: datetime, by: timedelta) -> datetime:
    """Return ``moment + by``, or the last datetime there is."""
    try:
        return moment + by
    except OverflowError:
        return datetime.max.replace(tzinfo=moment.tzinfo)


def _remember(expander: Expander, components: list[Any]) -> _Group:
    """Describe a group from its unexpanded components (expanding may change them)."""
    recurring = expander.is_recurring(components)
    span: _Span = None
    if not recurring:
        spans = [expander.span(event) for event in components]
        if None not in spans:
            starts, ends = zip(*spans, strict=True)
            span = (min(starts), max(ends))
    return _Group(recurring, span, None)


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
