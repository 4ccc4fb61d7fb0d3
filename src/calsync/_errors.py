"""The exception hierarchy: every error calsync raises is a `CalsyncError`."""

from __future__ import annotations

__all__ = [
    "CalsyncError",
    "ParseError",
    "ScheduleError",
    "TimezoneError",
    "ValidationError",
]


class CalsyncError(Exception):
    """Root of every error calsync raises on purpose."""


class ParseError(CalsyncError):
    """A feed body is not iCalendar at all (empty, an HTML page, JSON, ...).

    A feed that *is* iCalendar but has broken components never raises this: each
    broken component becomes a `Problem` on the parse result instead.
    """


class ValidationError(CalsyncError, ValueError):
    """A value handed to calsync (a window, a lead, a schedule, a zone) is invalid."""


class ScheduleError(ValidationError):
    """A schedule text such as ``every 15m`` or ``daily 07:30`` cannot be understood."""


class TimezoneError(ValidationError):
    """A time zone name is not in the IANA database shipped with calsync."""
