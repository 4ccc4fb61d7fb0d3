"""The Engine, its jobs' results, and the bundled asyncio runner."""

from __future__ import annotations

from calsync.engine.insight import (
    Explanation,
    Upcoming,
)
from calsync.engine.jobs import Job
from calsync.engine.results import (
    CalendarStatus,
    CheckResult,
    ClaimResult,
    CleanupResult,
    DispatchResult,
    EngineStatus,
    FeedState,
    JobResult,
    JobStats,
    SyncDueResult,
    SyncOutcome,
    SyncResult,
)
from calsync.engine.runner import (
    Runner,
    Triggers,
)
from calsync.engine.service import Engine, JobListener
from calsync.engine.thread import EngineThread

__all__ = [
    "CalendarStatus",
    "CheckResult",
    "ClaimResult",
    "CleanupResult",
    "DispatchResult",
    "Engine",
    "EngineStatus",
    "EngineThread",
    "Explanation",
    "FeedState",
    "Job",
    "JobListener",
    "JobResult",
    "JobStats",
    "Runner",
    "SyncDueResult",
    "SyncOutcome",
    "SyncResult",
    "Triggers",
    "Upcoming",
]
