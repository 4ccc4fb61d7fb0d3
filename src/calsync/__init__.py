"""calsync: keep many ICS calendars in sync and know which events need a notification.

The names a host application needs live here; the rest are in the packages that
tell the architecture: `calsync.core` (pure: parse, diff, reminders, schedules,
policies), `calsync.fetch`, `calsync.stores`, `calsync.engine`,
`calsync.handlers`, `calsync.config` and `calsync.testing`.

Names are imported on first use, so ``import calsync.core`` loads no network or
database code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from calsync.config import (
        ConfigError,
        load_config,
    )
    from calsync.core import (
        BasicAuth,
        BearerAuth,
        CalsyncError,
        Notification,
        Occurrence,
        ParseCache,
        ParsedCalendar,
        ParseError,
        Problem,
        Schedule,
        Settings,
        StoreError,
        ValidationError,
        Window,
        diff,
        notifications_due,
        parse_ics,
    )
    from calsync.engine import (
        CheckResult,
        DispatchResult,
        Engine,
        EngineStatus,
        Job,
        Runner,
        SyncResult,
        Triggers,
    )
    from calsync.fetch import (
        FetchError,
        FileFetcher,
        HttpFetcher,
    )
    from calsync.handlers import (
        Delivery,
        Handler,
        LoggingHandler,
        WebhookHandler,
        verify_webhook,
    )
    from calsync.stores import (
        Calendar,
        MariaDBStore,
        MemoryStore,
        PostgresStore,
        SQLiteStore,
        Store,
    )

__all__ = [
    "BasicAuth",
    "BearerAuth",
    "Calendar",
    "CalsyncError",
    "CheckResult",
    "ConfigError",
    "Delivery",
    "DispatchResult",
    "Engine",
    "EngineStatus",
    "FetchError",
    "FileFetcher",
    "Handler",
    "HttpFetcher",
    "Job",
    "LoggingHandler",
    "MariaDBStore",
    "MemoryStore",
    "Notification",
    "Occurrence",
    "ParseCache",
    "ParseError",
    "ParsedCalendar",
    "PostgresStore",
    "Problem",
    "Runner",
    "SQLiteStore",
    "Schedule",
    "Settings",
    "Store",
    "StoreError",
    "SyncResult",
    "Triggers",
    "ValidationError",
    "WebhookHandler",
    "Window",
    "diff",
    "load_config",
    "notifications_due",
    "parse_ics",
    "verify_webhook",
]

# Where a root name lives: the first of these packages whose __all__ holds it.
_PACKAGES = (
    "calsync.core",
    "calsync.stores",
    "calsync.fetch",
    "calsync.handlers",
    "calsync.engine",
    "calsync.config",
)


def __getattr__(name: str) -> Any:
    """Import a root name from its package on first use (PEP 562)."""
    if name in __all__:
        for package in _PACKAGES:
            module = importlib.import_module(package)
            if name in module.__all__:
                value = getattr(module, name)
                globals()[name] = value
                return value
    raise AttributeError(f"module 'calsync' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
