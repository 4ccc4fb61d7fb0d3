"""calsync: keep many ICS calendars in sync and know which events need a notification.

The pure core (`parse_ics`, `diff`, `notifications_due`, `Schedule`) takes every
input as an argument, the current time included; it never touches the clock, the
network or a database.
"""

from __future__ import annotations

from ._auth import BasicAuth, BearerAuth
from ._diff import diff
from ._errors import (
    CalendarExists,
    CalendarNotFound,
    CalsyncError,
    LeaseLost,
    ParseError,
    ScheduleError,
    SchemaVersionError,
    StoreError,
    TimezoneError,
    ValidationError,
)
from ._fetch import (
    Circuit,
    CircuitBreaker,
    FetchBlocked,
    FetchConnectionError,
    Fetcher,
    FetchError,
    FetchInvalidURL,
    FetchNotCalendar,
    FetchResult,
    FetchStatusError,
    FetchTimeout,
    FetchTooLarge,
    FetchTooManyRedirects,
    FileFetcher,
    HostLimiter,
    HttpFetcher,
    RetryPolicy,
    next_sync_at,
)
from ._ics import parse_ics
from ._incremental import ParseCache, ParseCacheStats
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
from ._records import (
    AppliedSync,
    Calendar,
    CircuitState,
    JobOutcome,
    JobRun,
    Lease,
    NotificationClaim,
    NotificationRecord,
    NotificationStatus,
    PruneCounts,
    SyncState,
    SyncWrite,
    notification_id,
)
from ._redact import redact
from ._schedule import Schedule
from ._store.memory import MemoryStore
from ._store.postgres import PostgresStore
from ._store.protocol import Store
from ._store.sqlite import SQLiteStore

__all__ = [
    "AppliedSync",
    "BasicAuth",
    "BearerAuth",
    "Calendar",
    "CalendarExists",
    "CalendarNotFound",
    "CalsyncError",
    "ChangeSet",
    "Circuit",
    "CircuitBreaker",
    "CircuitState",
    "FetchBlocked",
    "FetchConnectionError",
    "FetchError",
    "FetchInvalidURL",
    "FetchNotCalendar",
    "FetchResult",
    "FetchStatusError",
    "FetchTimeout",
    "FetchTooLarge",
    "FetchTooManyRedirects",
    "Fetcher",
    "FileFetcher",
    "HostLimiter",
    "HttpFetcher",
    "JobOutcome",
    "JobRun",
    "Lease",
    "LeaseLost",
    "MemoryStore",
    "Notification",
    "NotificationClaim",
    "NotificationRecord",
    "NotificationStatus",
    "Occurrence",
    "OccurrenceKey",
    "ParseCache",
    "ParseCacheStats",
    "ParseError",
    "ParsedCalendar",
    "PostgresStore",
    "Problem",
    "PruneCounts",
    "RetryPolicy",
    "SQLiteStore",
    "Schedule",
    "ScheduleError",
    "SchemaVersionError",
    "Store",
    "StoreError",
    "SyncState",
    "SyncWrite",
    "TimezoneError",
    "ValidationError",
    "Window",
    "diff",
    "next_sync_at",
    "notification_id",
    "notifications_due",
    "parse_ics",
    "redact",
]
