"""What the Engine's jobs return: plain attrs values a host can log, count or show."""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import attrs

from calsync.core.model import Problem, as_aware_utc, optional_aware_utc
from calsync.core.redact import redact
from calsync.engine.jobs import Job
from calsync.stores.records import Calendar, CircuitState, JobOutcome, Lease

__all__ = [
    "CalendarStatus",
    "CheckResult",
    "ClaimResult",
    "CleanupResult",
    "DispatchResult",
    "EngineStatus",
    "FeedState",
    "JobResult",
    "JobStats",
    "SyncDueResult",
    "SyncOutcome",
    "SyncResult",
]


def _problems(values: Iterable[Problem]) -> tuple[Problem, ...]:
    return tuple(values)


def _results(values: Iterable[SyncResult]) -> tuple[SyncResult, ...]:
    return tuple(values)


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _floats(values: Iterable[float]) -> tuple[float, ...]:
    return tuple(values)


def _leases(values: Iterable[Lease]) -> tuple[Lease, ...]:
    return tuple(values)


# Wake a little after a reminder's fire time, never a hair before it.
_WAKE_MARGIN = timedelta(milliseconds=50)


def _follow_ups(*, check: bool, dispatch: bool) -> tuple[Job, ...]:
    return (Job.CHECK_NOTIFICATIONS,) * check + (Job.DISPATCH_NOTIFICATIONS,) * dispatch


def _wake_at(next_fire_at: datetime | None) -> datetime | None:
    return None if next_fire_at is None else next_fire_at + _WAKE_MARGIN


def _earliest(instants: Iterable[datetime | None]) -> datetime | None:
    return min((instant for instant in instants if instant is not None), default=None)


class JobResult:
    """What every job's result tells its runtime: how it ended and what comes next.

    A runtime needs no more than these to chain the jobs: it runs the
    ``follow_ups`` at once and `Job.CHECK_NOTIFICATIONS` at ``wake_at``.
    """

    __slots__ = ()

    @property
    def ok(self) -> bool:
        """Whether all of the job succeeded; its run is recorded PARTIAL if not."""
        return True

    @property
    def outcome(self) -> JobOutcome | SyncOutcome:
        """How the job ended: OK or PARTIAL (a `SyncResult` names its `SyncOutcome`)."""
        return JobOutcome.OK if self.ok else JobOutcome.PARTIAL

    @property
    def follow_ups(self) -> tuple[Job, ...]:
        """The jobs worth running at once because of this run (new reminders...)."""
        return ()

    @property
    def wake_at(self) -> datetime | None:
        """When to check for a reminder that fires before the check's next trigger."""
        return None


class SyncOutcome(enum.StrEnum):
    """How one calendar's sync ended."""

    CHANGED = "changed"
    """Occurrences were added, updated, removed or expired."""
    UNCHANGED = "unchanged"
    """304, the same body, or a new body with the same occurrences."""
    FAILED = "failed"
    """The fetch or the parse failed; nothing stored was touched."""
    HELD = "held"
    """The mass-deletion guard held removals back; the rest was applied."""
    BUSY = "busy"
    """Another worker holds the calendar's lease; nothing was done."""
    LOST = "lost"
    """The lease was lost before the write; nothing was written."""
    SKIPPED = "skipped"
    """A handed-off sync found the calendar not due any more; nothing was done."""


@attrs.frozen
class SyncResult(JobResult):
    """The outcome of syncing one calendar.

    ``next_fire_at`` is the earliest reminder still ahead among the events this
    sync added or changed, so a runtime that checks on a coarse trigger can wake
    up just in time for it.
    """

    calendar_id: str
    label: str
    outcome: SyncOutcome = attrs.field(converter=SyncOutcome)
    added: int = 0
    updated: int = 0
    removed: int = 0
    expired: int = 0
    unchanged: int = 0
    held_removals: int = 0
    problems: tuple[Problem, ...] = attrs.field(default=(), converter=_problems)
    error: str | None = None
    not_modified: bool = False
    notifications_created: int = 0
    notifications_cancelled: int = 0
    next_sync_at: datetime | None = attrs.field(
        default=None, converter=optional_aware_utc
    )
    elapsed: timedelta = timedelta(0)
    next_fire_at: datetime | None = attrs.field(
        default=None, converter=optional_aware_utc
    )
    bytes_read: int = 0
    """Bytes the fetch transferred (compressed, if the server compressed)."""

    @property
    def ok(self) -> bool:
        """Whether the sync did its job (also when held back or busy elsewhere)."""
        return self.outcome not in (SyncOutcome.FAILED, SyncOutcome.LOST)

    @property
    def follow_ups(self) -> tuple[Job, ...]:
        """Jobs worth running at once: dispatch new reminders, check changed events."""
        return _follow_ups(
            check=self.added > 0 or self.updated > 0,
            dispatch=self.notifications_created > 0,
        )

    @property
    def wake_at(self) -> datetime | None:
        """When to run a check for `next_fire_at`: just after it, never before."""
        return _wake_at(self.next_fire_at)


@attrs.frozen
class SyncDueResult(JobResult):
    """The outcome of one `Engine.sync_due` cycle: one `SyncResult` per calendar."""

    results: tuple[SyncResult, ...] = attrs.field(converter=_results)
    started_at: datetime = attrs.field(converter=as_aware_utc)
    finished_at: datetime = attrs.field(converter=as_aware_utc)

    @property
    def counts(self) -> dict[str, int]:
        """How many calendars ended in each outcome, plus ``synced`` in all."""
        counts = Counter(str(result.outcome) for result in self.results)
        return {"synced": len(self.results), **counts}

    @property
    def ok(self) -> bool:
        """Whether every calendar's sync did its job."""
        return not self.failed

    @property
    def follow_ups(self) -> tuple[Job, ...]:
        """Jobs worth running at once, over all the cycle's calendars."""
        wanted = {job for result in self.results for job in result.follow_ups}
        return _follow_ups(
            check=Job.CHECK_NOTIFICATIONS in wanted,
            dispatch=Job.DISPATCH_NOTIFICATIONS in wanted,
        )

    @property
    def wake_at(self) -> datetime | None:
        """The earliest `SyncResult.wake_at` of the cycle's calendars."""
        return _earliest(result.wake_at for result in self.results)

    @property
    def failed(self) -> tuple[SyncResult, ...]:
        """The calendars whose sync failed."""
        return tuple(result for result in self.results if not result.ok)


@attrs.frozen
class CheckResult(JobResult):
    """The outcome of `Engine.check_notifications`.

    ``next_fire_at`` is the earliest fire time still ahead among the occurrences
    scanned, so a runner can wake up just in time for it. ``errors`` names the
    calendars that could not be checked (one line each); the others were.
    """

    created: int = 0
    missed: int = 0
    scanned: int = 0
    next_fire_at: datetime | None = attrs.field(
        default=None, converter=optional_aware_utc
    )
    errors: tuple[str, ...] = attrs.field(default=(), converter=_strings)

    @property
    def ok(self) -> bool:
        """Whether every calendar could be checked."""
        return not self.errors

    @property
    def follow_ups(self) -> tuple[Job, ...]:
        """Jobs worth running at once: dispatch the reminders just created."""
        return _follow_ups(check=False, dispatch=self.created > 0)

    @property
    def wake_at(self) -> datetime | None:
        """When to check for `next_fire_at`: just after it, never before."""
        return _wake_at(self.next_fire_at)


@attrs.frozen
class DispatchResult(JobResult):
    """The outcome of `Engine.dispatch_notifications`.

    ``held`` counts claimed notifications left without an attempt (their claim
    would end before the handler's timeout, or their calendar is gone); they
    come back when the claim ends. ``lags`` holds, per delivered notification,
    the seconds from its fire time to its delivery.
    """

    delivered: int = 0
    retried: int = 0
    dead: int = 0
    held: int = 0
    errors: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    lags: tuple[float, ...] = attrs.field(default=(), converter=_floats)

    @property
    def ok(self) -> bool:
        """Whether every attempted delivery succeeded (none to retry, none dead)."""
        return not (self.retried or self.dead)


@attrs.frozen
class CleanupResult(JobResult):
    """How many rows `Engine.cleanup` removed, by kind."""

    occurrences: int = 0
    notifications: int = 0
    job_runs: int = 0


@attrs.frozen
class ClaimResult(JobResult):
    """The leases `Job.CLAIM_DUE` handed out: sync each with its ``handoff``."""

    leases: tuple[Lease, ...] = attrs.field(converter=_leases)


class FeedState(enum.StrEnum):
    """A calendar's health in one word, as metrics and `calsync status` count it.

    Each calendar is in exactly one state, the first that applies, in this order.
    """

    PAUSED = "paused"
    """Paused by the host: not synced, so never stale or failing."""
    CIRCUIT_OPEN = "circuit_open"
    """Its feed failed too often in a row: rested until a probe."""
    FAILING = "failing"
    """Its last sync failed."""
    STALE = "stale"
    """No successful sync for a few cadences (``stale_factor``)."""
    OK = "ok"
    """Synced recently and without error."""


@attrs.frozen
class CalendarStatus:
    """A calendar and its health: ``stale`` if no success in a few cadences."""

    calendar: Calendar
    stale: bool

    @property
    def feed_state(self) -> FeedState:
        """The calendar's health in one word (see `FeedState`)."""
        state = self.calendar.state
        if self.calendar.paused:
            return FeedState.PAUSED
        if state.circuit is CircuitState.OPEN:
            return FeedState.CIRCUIT_OPEN
        if state.consecutive_failures:
            return FeedState.FAILING
        return FeedState.STALE if self.stale else FeedState.OK

    @property
    def id(self) -> str:
        """The calendar's id."""
        return self.calendar.id

    @property
    def label(self) -> str:
        """The calendar's name or redacted URL, with its id."""
        return self.calendar.label

    @property
    def circuit(self) -> CircuitState:
        """Whether the calendar's feed is fetched normally, rested or probed."""
        return self.calendar.state.circuit


@attrs.frozen
class JobStats:
    """Recent runs of one job: how many, how the last ended, durations p50/p95."""

    job: str
    runs: int
    last_outcome: JobOutcome | None
    last_finished_at: datetime | None
    p50: timedelta
    p95: timedelta
    last_error: str | None = None


@attrs.frozen
class EngineStatus:
    """A snapshot for dashboards and `calsync status`.

    ``parse_cache_bytes`` is this process's parse caches' estimated size, within
    ``parse_cache_budget`` (``parse_cache_memory``), over ``parse_cached`` calendars.
    """

    calendars: tuple[CalendarStatus, ...]
    pending: int
    failed: int
    missed: int
    jobs: tuple[JobStats, ...]
    checked_at: datetime = attrs.field(converter=as_aware_utc)
    parse_cache_bytes: int = 0
    parse_cache_budget: int = 0
    parse_cached: int = 0

    @property
    def stale(self) -> tuple[CalendarStatus, ...]:
        """The calendars without a recent successful sync."""
        return tuple(status for status in self.calendars if status.stale)

    @property
    def feeds(self) -> dict[FeedState, int]:
        """How many calendars are in each `FeedState` (every state a key)."""
        counts = Counter(status.feed_state for status in self.calendars)
        return {state: counts[state] for state in FeedState}

    @property
    def healthy(self) -> bool:
        """No stale or failing calendar, and nothing in the dead letter."""
        failing = any(
            status.calendar.state.consecutive_failures for status in self.calendars
        )
        return not (self.stale or failing or self.failed)

    def to_dict(self) -> dict[str, Any]:
        """Return the status as JSON-ready data (for a health endpoint or a script).

        URLs are redacted; instants are ISO 8601 UTC strings; durations seconds.
        """
        return {
            "checked_at": self.checked_at.isoformat(),
            "healthy": self.healthy,
            "notifications": {
                "pending": self.pending,
                "failed": self.failed,
                "missed": self.missed,
            },
            "feeds": {str(state): count for state, count in self.feeds.items()},
            "calendars": [_calendar_dict(status) for status in self.calendars],
            "jobs": [_job_dict(job) for job in self.jobs],
            "parse_cache": {
                "bytes": self.parse_cache_bytes,
                "budget": self.parse_cache_budget,
                "calendars": self.parse_cached,
            },
        }


def _iso(instant: datetime | None) -> str | None:
    return None if instant is None else instant.isoformat()


def _calendar_dict(status: CalendarStatus) -> dict[str, Any]:
    calendar, state = status.calendar, status.calendar.state
    return {
        "id": calendar.id,
        "name": calendar.name,
        "owner": calendar.owner,
        "url": redact(calendar.url),
        "paused": calendar.paused,
        "stale": status.stale,
        "state": str(status.feed_state),
        "circuit": str(state.circuit),
        "consecutive_failures": state.consecutive_failures,
        "last_success_at": _iso(state.last_success_at),
        "last_attempt_at": _iso(state.last_attempt_at),
        "next_sync_at": _iso(state.next_sync_at),
        "last_error": state.last_error,
        "held_removals": state.held_removals,
    }


def _job_dict(job: JobStats) -> dict[str, Any]:
    return {
        "job": job.job,
        "runs": job.runs,
        "last_outcome": None if job.last_outcome is None else str(job.last_outcome),
        "last_finished_at": _iso(job.last_finished_at),
        "p50_seconds": job.p50.total_seconds(),
        "p95_seconds": job.p95.total_seconds(),
        "last_error": job.last_error,
    }
