"""The Engine, its jobs' results, and the bundled asyncio runner."""

from __future__ import annotations

from calsync.engine.insight import (
    Explanation,
    Upcoming,
)
from calsync.engine.results import (
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
from calsync.engine.runner import (
    Runner,
    Triggers,
)
from calsync.engine.service import Engine

__all__ = [
    "CalendarStatus",
    "CheckResult",
    "CleanupResult",
    "DispatchResult",
    "Engine",
    "EngineStatus",
    "Explanation",
    "JobStats",
    "Runner",
    "SyncDueResult",
    "SyncOutcome",
    "SyncResult",
    "Triggers",
    "Upcoming",
]
