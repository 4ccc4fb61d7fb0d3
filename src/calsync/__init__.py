"""calsync: keep many ICS calendars in sync and know which events need a notification.

The pure core (`parse_ics`, `diff`, `notifications_due`, `Schedule`) takes every
input as an argument, the current time included; it never touches the clock, the
network or a database.
"""

from __future__ import annotations

from ._auth import BasicAuth, BearerAuth
from ._config import Config, ConfigError, load_config
from ._diff import diff
from ._engine import Engine
from ._errors import (
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
from ._handlers import (
    Delivery,
    DeliveryError,
    Handler,
    LoggingHandler,
    WebhookHandler,
    WebhookVerificationError,
    sign_webhook,
    verify_webhook,
)
from ._incremental import ParseCache, ParseCacheStats
from ._insight import Explanation, Upcoming
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
from ._parse import parse_ics
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
from ._results import (
    CalendarStatus,
    CheckResult,
    CleanupResult,
    DispatchResult,
    EngineStatus,
    JobStats,
    SyncDueResult,
    SyncOutcome,
    SyncResult,
)
from ._runner import Runner, Triggers
from ._schedule import Schedule
from ._settings import Settings
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
    "CalendarStatus",
    "CalsyncError",
    "ChangeSet",
    "CheckResult",
    "Circuit",
    "CircuitBreaker",
    "CircuitState",
    "CleanupResult",
    "Config",
    "ConfigError",
    "Delivery",
    "DeliveryError",
    "DispatchResult",
    "Engine",
    "EngineStatus",
    "Explanation",
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
    "Handler",
    "HostLimiter",
    "HttpFetcher",
    "JobOutcome",
    "JobRun",
    "JobStats",
    "Lease",
    "LeaseLost",
    "LoggingHandler",
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
    "Runner",
    "SQLiteStore",
    "Schedule",
    "ScheduleError",
    "SchemaVersionError",
    "Settings",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "SyncDueResult",
    "SyncOutcome",
    "SyncResult",
    "SyncState",
    "SyncWrite",
    "TimezoneError",
    "Triggers",
    "Upcoming",
    "ValidationError",
    "WebhookHandler",
    "WebhookVerificationError",
    "Window",
    "diff",
    "load_config",
    "next_sync_at",
    "notification_id",
    "notifications_due",
    "parse_ics",
    "redact",
    "sign_webhook",
    "verify_webhook",
]
