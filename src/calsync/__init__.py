"""calsync: keep many ICS calendars in sync and know which events need a notification.

The pure core (`parse_ics`, `diff`, `notifications_due`, `Schedule`) takes every
input as an argument, the current time included; it never touches the clock, the
network or a database.
"""

from __future__ import annotations

from ._diff import diff
from ._errors import (
    CalsyncError,
    ParseError,
    ScheduleError,
    TimezoneError,
    ValidationError,
)
from ._ics import parse_ics
from ._model import (
    ChangeSet,
    Notification,
    Occurrence,
    OccurrenceKey,
    ParsedCalendar,
    Problem,
    Window,
)
from ._notify import notifications_due
from ._schedule import Schedule

__all__ = [
    "CalsyncError",
    "ChangeSet",
    "Notification",
    "Occurrence",
    "OccurrenceKey",
    "ParseError",
    "ParsedCalendar",
    "Problem",
    "Schedule",
    "ScheduleError",
    "TimezoneError",
    "ValidationError",
    "Window",
    "diff",
    "notifications_due",
    "parse_ics",
]
