"""The exception hierarchy: every error calsync raises is a `CalsyncError`."""

from __future__ import annotations

from typing import Any

__all__ = [
    "CalendarExists",
    "CalendarNotFound",
    "CalsyncError",
    "LeaseLost",
    "ParseError",
    "ScheduleError",
    "SchemaVersionError",
    "StoreError",
    "StoreUnavailable",
    "TimezoneError",
    "ValidationError",
]


def _restore(
    cls: type[CalsyncError], args: tuple[Any, ...], state: dict[str, Any]
) -> CalsyncError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class CalsyncError(Exception):
    """Root of every error calsync raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take keyword arguments; pickle the state, not the call.
        return (_restore, (type(self), self.args, dict(self.__dict__)))


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


class StoreError(CalsyncError):
    """A store refused an operation or could not complete it."""


class StoreUnavailable(StoreError):
    """The store could not be reached or stayed busy; nothing was written.

    Transient: the same call may succeed later (a task queue may retry it).
    Every other `StoreError` is permanent for that call.
    """


class CalendarNotFound(StoreError, LookupError):
    """No calendar with that id (for that owner) is in the store."""


class CalendarExists(StoreError):
    """A calendar with that id, or that URL for that owner, is already stored."""


class LeaseLost(StoreError):
    """The lease this write relies on expired and was taken over, or released.

    The write is refused whole: another worker owns the calendar (or the
    notification) now, and two writers must never both succeed.
    """


class SchemaVersionError(StoreError):
    """The database holds a schema this version of calsync does not know."""
