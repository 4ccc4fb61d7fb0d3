"""`parse_ics`: the one way into parsing, whole or through a `ParseCache`."""

from __future__ import annotations

from datetime import timezone, tzinfo
from zoneinfo import ZoneInfo

from calsync.core.errors import ValidationError
from calsync.core.ics import decode_body, parse_whole, require_icalendar
from calsync.core.incremental import ParseCache, parse_groups
from calsync.core.limits import MAX_BYTES, MAX_COMPONENTS, MAX_LINE, Limits
from calsync.core.model import ParsedCalendar, Problem, Window
from calsync.core.split import blank_far_events, split_calendar
from calsync.core.zones import resolve_zone

__all__ = ["parse_ics"]


def parse_ics(
    data: bytes | str,
    window: Window,
    *,
    default_tz: str | tzinfo = "UTC",
    max_occurrences: int = 20_000,
    cache: ParseCache | None = None,
    max_bytes: int = MAX_BYTES,
    max_components: int = MAX_COMPONENTS,
    max_line: int = MAX_LINE,
) -> ParsedCalendar:
    """Expand a feed body's events (VEVENTs) into their occurrences inside ``window``.

    Raises `ParseError` when the body is not iCalendar at all, `TimezoneError`
    for an unknown ``default_tz``. Broken components, an unknown X-WR-TIMEZONE
    and hitting ``max_occurrences`` become `Problem` entries on the result.
    icalendar reads a few UID groups at a time, so a parse holds a few times
    the body's size, not the 20x of a whole icalendar tree. With a `ParseCache`
    (one per calendar), only the events whose text changed since the last parse
    are read again; the result is the same as without it.

    The parser's own limits protect a service from one feed: a body over
    ``max_bytes`` (20 MiB; characters for a ``str``), with more than
    ``max_components`` components (250,000) or nested more than 32 deep raises
    `ParseError`; a content line over ``max_line`` characters (1 MiB, unfolded)
    is dropped and reported as a `Problem`.
    """
    if not isinstance(window, Window):
        raise ValidationError(f"window must be a calsync.Window, got {window!r}")
    if max_occurrences < 1:
        raise ValidationError(f"max_occurrences must be >= 1, got {max_occurrences}")
    limits = Limits(max_bytes, max_components, max_line)
    zone = resolve_zone(default_tz)
    if isinstance(data, bytes | bytearray | memoryview | str):
        limits.check_size(len(data))
    problems: list[Problem] = []
    text = decode_body(data, problems)
    require_icalendar(text)
    text = limits.check_lines(text, problems)
    if cache is not None and not isinstance(cache, ParseCache):
        raise ValidationError(f"cache must be a calsync.ParseCache, got {cache!r}")
    uncached = cache is None  # a cache reads far events once, to skip them later
    body = _without_far_events(text, window, zone, limits) if uncached else text
    parsed = parse_groups(body, window, zone, max_occurrences, problems, limits, cache)
    if parsed is not None:
        return parsed
    limits.check_components(*limits.count(text))
    return parse_whole(text, window, zone, max_occurrences, problems)


def _without_far_events(text: str, window: Window, zone: tzinfo, limits: Limits) -> str:
    """Return the body with the events the text places far from the window blanked.

    The expander would drop them unexpanded; not reading them at all saves
    most of a parse of a long history. Floating times are placed in ``zone``
    (or the feed's X-WR-TIMEZONE), so only a tzdata or fixed-offset zone, whose
    offsets stay within a day, lets the text place them.
    """
    if not isinstance(zone, ZoneInfo | timezone):
        return text
    layout = split_calendar(text)
    if layout is None:
        return text
    limits.check_components(layout.components, layout.depth)
    return blank_far_events(text, layout, window.start, window.end) or text
