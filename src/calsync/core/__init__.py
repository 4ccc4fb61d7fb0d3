"""The pure core: parsing, diffing, reminders, schedules and policies.

The edges apply these policies; nothing here reads the clock, the network or a database.
"""

from __future__ import annotations

from calsync.core.auth import (
    BasicAuth,
    BearerAuth,
)
from calsync.core.breaker import (
    Circuit,
    CircuitBreaker,
    CircuitState,
    HostCircuits,
)
from calsync.core.diff import diff
from calsync.core.errors import (
    CalendarExists,
    CalendarNotFound,
    CalsyncError,
    LeaseLost,
    ParseError,
    ScheduleError,
    SchemaVersionError,
    StoreError,
    StoreUnavailable,
    TimezoneError,
    ValidationError,
)
from calsync.core.incremental import (
    ParseCache,
    ParseCacheStats,
)
from calsync.core.model import (
    ChangeSet,
    EventStatus,
    Notification,
    Occurrence,
    OccurrenceKey,
    ParsedCalendar,
    Problem,
    Window,
)
from calsync.core.notify import notifications_due
from calsync.core.parse import parse_ics
from calsync.core.redact import redact
from calsync.core.retry import (
    RetryPolicy,
    next_sync_at,
)
from calsync.core.schedule import Schedule
from calsync.core.settings import HttpSettings, Settings

__all__ = [
    "BasicAuth",
    "BearerAuth",
    "CalendarExists",
    "CalendarNotFound",
    "CalsyncError",
    "ChangeSet",
    "Circuit",
    "CircuitBreaker",
    "CircuitState",
    "EventStatus",
    "HostCircuits",
    "HttpSettings",
    "LeaseLost",
    "Notification",
    "Occurrence",
    "OccurrenceKey",
    "ParseCache",
    "ParseCacheStats",
    "ParseError",
    "ParsedCalendar",
    "Problem",
    "RetryPolicy",
    "Schedule",
    "ScheduleError",
    "SchemaVersionError",
    "Settings",
    "StoreError",
    "StoreUnavailable",
    "TimezoneError",
    "ValidationError",
    "Window",
    "diff",
    "next_sync_at",
    "notifications_due",
    "parse_ics",
    "redact",
]
