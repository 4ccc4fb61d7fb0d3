"""Decide whether a fetched body is an iCalendar feed, by its bytes, not its label."""

from __future__ import annotations

import re

from calsync.core.sniff import kind_of

__all__ = ["CALENDAR_TYPES", "describe_non_calendar", "is_calendar", "media_type"]

CALENDAR_TYPES = frozenset(
    {"text/calendar", "application/ics", "text/x-vcalendar", "application/x-ical"}
)
_BOM = b"\xef\xbb\xbf"
_CONTENT = re.compile(rb"[^ \t\r\n]")


def _head(body: bytes) -> bytes:
    """Return the first bytes after the BOM and leading whitespace, without copying."""
    start = len(_BOM) if body.startswith(_BOM) else 0
    found = _CONTENT.search(body, start)
    return b"" if found is None else body[found.start() : found.start() + 64]


def is_calendar(body: bytes) -> bool:
    """Whether *body* starts with BEGIN:VCALENDAR after an optional BOM and whitespace.

    The same judgement `parse_ics` makes before it raises `ParseError`, so a
    login or error page fails here, at the edge, with the HTTP context at hand.
    """
    return kind_of(_head(body).decode("latin-1")) is None


def describe_non_calendar(body: bytes) -> str:
    """Name what a non-iCalendar body looks like, never quoting it (secrets)."""
    return kind_of(_head(body).decode("latin-1")) or "an iCalendar feed"


def media_type(content_type: str | None) -> str | None:
    """Return the lower-case media type of a Content-Type value, without parameters."""
    if content_type is None:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None
