"""The Engine: calsync's jobs, composed from the pure core, a Fetcher and a Store.

Nothing here knows which runtime calls it. Every job is idempotent, safe to run
from many processes at once over one store, and returns an attrs result.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Self, TypeVar

import attrs

from calsync.core.auth import BasicAuth, BearerAuth
from calsync.core.durations import as_duration
from calsync.core.errors import LeaseLost, ValidationError
from calsync.core.model import Occurrence, Window, as_aware_utc
from calsync.core.redact import redact_text
from calsync.core.schedule import schedule_of, schedule_or_interval
from calsync.core.settings import Settings
from calsync.core.zones import resolve_zone
from calsync.engine import tracing
from calsync.engine.check import check
from calsync.engine.dispatch import dispatch
from calsync.engine.insight import Explanation, Upcoming, explain, upcoming
from calsync.engine.jobs import Job
from calsync.engine.parsepool import ParsePoolStats
from calsync.engine.results import (
    CalendarStatus,
    CheckResult,
    ClaimResult,
    CleanupResult,
    DispatchResult,
    EngineStatus,
    JobResult,
    JobStats,
    SyncDueResult,
    SyncOutcome,
    SyncResult,
)
from calsync.engine.sync import Syncer, setting_problem
from calsync.fetch.fetcher import Fetcher
from calsync.fetch.http import HttpFetcher
from calsync.handlers.delivery import Handler
from calsync.stores.records import (
    Calendar,
    JobOutcome,
    JobRun,
    Lease,
    NotificationRecord,
    NotificationStatus,
    SyncWrite,
)
from calsync.stores.store import Store, check_limit

__all__ = ["Clock", "Engine", "JobListener", "utc_now"]

logger = logging.getLogger("calsync.engine")

Clock = Callable[[], datetime]
"""Returns the current time as an aware datetime."""

JobListener = Callable[[JobRun, JobResult | None], object]
"""Called with each job run as recorded, and its result (None if the job raised)."""

_R = TypeVar("_R", bound=JobResult)
_CLAIM_BATCH = 100
_FAILED = NotificationStatus.FAILED
_MANY = 100_000  # the most dead letters an owner-scoped page reads
_SETTABLE = frozenset(
    {
        "url",
        "name",
        "every",
        "leads",
        "tz",
        "window_past",
        "horizon",
        "use_alarms",
        "auth",
    }
)


def utc_now() -> datetime:
    """Return the current time in UTC: the real clock."""
    return datetime.now(UTC)


class Engine:
    """calsync's jobs over one `Store` and one `Fetcher`; an async context manager.

    Entering opens the store; leaving closes the store and the fetcher and ends
    the parse worker processes. ``clock`` is the only source of the current
    time (tests pass a `calsync.testing.ManualClock`).
    """

    def __init__(
        self,
        store: Store,
        fetcher: Fetcher | None = None,
        *,
        settings: Settings | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._store = store
        self._fetcher = fetcher if fetcher is not None else HttpFetcher()
        self._settings = settings if settings is not None else Settings()
        self._clock = clock if clock is not None else utc_now
        self._syncer = Syncer(store, self._fetcher, self._settings, self._now)
        self._listeners: tuple[JobListener, ...] = ()

    def __repr__(self) -> str:
        return f"Engine(store={self._store!r}, worker={self._settings.worker!r})"

    @property
    def store(self) -> Store:
        """The store the engine keeps its state in."""
        return self._store

    @property
    def fetcher(self) -> Fetcher:
        """The fetcher the engine reads feeds with."""
        return self._fetcher

    @property
    def settings(self) -> Settings:
        """The engine's settings."""
        return self._settings

    @property
    def parse_stats(self) -> ParsePoolStats | None:
        """What the parse worker processes did so far; None with parse_isolation off."""
        pool = self._syncer.parse_pool
        return None if pool is None else pool.stats

    def observe(self, listener: JobListener) -> Callable[[], None]:
        """Call ``listener(run, result)`` after every job run; return the unsubscribe.

        For metrics and health: ``run`` is the `JobRun` as recorded, ``result``
        the job's result (None if it raised). A listener must be quick; one that
        raises is logged and the job's outcome stands. Without listeners a job
        pays nothing.
        """
        self._listeners = (*self._listeners, listener)

        def unsubscribe() -> None:
            self._listeners = tuple(
                known for known in self._listeners if known is not listener
            )

        return unsubscribe

    def now(self) -> datetime:
        """Return the current time by the engine's clock, aware UTC."""
        return self._now()

    def _now(self) -> datetime:
        return as_aware_utc(self._clock())

    async def open(self) -> None:
        """Open the store (create or migrate its schema)."""
        await self._store.open()

    async def close(self) -> None:
        """Close the fetcher and the store, and end the parse worker processes."""
        try:
            await self._fetcher.aclose()
        finally:
            try:
                await self._store.close()
            finally:
                await self._syncer.aclose()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- calendars ---------------------------------------------------------

    async def add_calendar(
        self,
        url: str,
        *,
        name: str | None = None,
        owner: str = "default",
        every: str | None = None,
        leads: Iterable[timedelta | str] | None = None,
        tz: str | None = None,
        window_past: timedelta | str | None = None,
        horizon: timedelta | str | None = None,
        use_alarms: bool = False,
        auth: BasicAuth | BearerAuth | None = None,
        paused: bool = False,
    ) -> Calendar:
        """Subscribe to a feed; it is synced by the next `sync_due`.

        An option left None keeps the `Calendar` default (every 15m, a 10m lead,
        a day back, 90 days ahead).

        ``every`` is a `Schedule` text, or a bare interval such as ``15m``; leads
        and spans may be written as ``10m``. Everything is validated first: a bad
        URL, schedule, lead or zone raises `ValidationError` (or a `FetchError`
        subclass for the URL) and nothing is stored. Raises `CalendarExists`
        if the owner already has that URL.
        """
        calendar = self._new_calendar(
            url,
            name=name,
            owner=owner,
            every=every,
            leads=leads,
            tz=tz,
            window_past=window_past,
            horizon=horizon,
            use_alarms=use_alarms,
            auth=auth,
            paused=paused,
        )
        stored = await self._store.add_calendar(calendar)
        logger.info(
            "added calendar %s", stored.label, extra={"calsync_calendar_id": stored.id}
        )
        return stored

    async def ensure_calendar(
        self, url: str, *, owner: str = "default", **settings: Any
    ) -> tuple[Calendar, bool]:
        """Add a calendar unless ``owner`` has ``url``; return it, and if it was added.

        Takes the keywords of `add_calendar`, validated the same way. A stored
        calendar comes back as it is (`update_calendar` changes it). Safe to
        call from several processes at once: one calendar is stored, and each
        caller gets it back.
        """
        calendar = self._new_calendar(url, owner=owner, **settings)
        stored, added = await self._store.ensure_calendar(calendar)
        if added:
            logger.info(
                "added calendar %s",
                stored.label,
                extra={"calsync_calendar_id": stored.id},
            )
        return stored, added

    def _new_calendar(self, url: str, **options: Any) -> Calendar:
        """Return a new, validated calendar (not stored) for `add_calendar`.

        Options left out or None keep the `Calendar` defaults, declared there only.
        """
        unknown = sorted(set(options) - _CALENDAR_OPTIONS)
        if unknown:
            raise TypeError(f"unexpected calendar option(s): {', '.join(unknown)}")
        given = {key: value for key, value in options.items() if value is not None}
        fields: dict[str, Any] = {}
        if "every" in given:
            fields["schedule"] = _schedule_text(given.pop("every"), given.get("tz"))
        if "leads" in given:
            fields["leads"] = self._leads(given.pop("leads"))
        if "tz" in given:
            fields["tz"] = _zone(given.pop("tz"))
        for span in ("window_past", "horizon"):
            if span in given:
                fields[span] = as_duration(given.pop(span))
        return Calendar(
            url=self._checked_url(url), created_at=self._now(), **given, **fields
        )

    async def get_calendar(
        self, calendar_id: str, *, owner: str | None = None
    ) -> Calendar:
        """Return one calendar; raises `CalendarNotFound`."""
        return await self._store.get_calendar(calendar_id, owner=owner)

    async def list_calendars(self, *, owner: str | None = None) -> list[Calendar]:
        """Return the calendars of ``owner`` (all if None), oldest first."""
        return await self._store.list_calendars(owner=owner)

    async def update_calendar(
        self, calendar_id: str, *, owner: str | None = None, **changes: Any
    ) -> Calendar:
        """Change a calendar's settings, by the keyword names of `add_calendar`.

        Settable: url, name, every, leads, tz, window_past, horizon, use_alarms, auth.
        Validated like `add_calendar`. Pending reminders of a lead that was
        removed (or of VALARMs, when ``use_alarms`` is turned off) are
        cancelled, and the calendar is synced again soon.
        """
        unknown = set(changes) - _SETTABLE
        if unknown:
            raise ValidationError(
                f"cannot update {', '.join(sorted(unknown))}: settable are "
                f"{', '.join(sorted(_SETTABLE))}"
            )
        calendar = await self._store.get_calendar(calendar_id, owner=owner)
        updated = attrs.evolve(calendar, **self._converted(calendar, changes))
        stored = await self._store.update_calendar(updated)
        leads_changed = set(stored.leads) != set(calendar.leads)
        if leads_changed or stored.use_alarms != calendar.use_alarms:
            await self._cancel_removed_leads(stored)
        await self._store.request_sync(stored.id, self._now())
        return stored

    def _converted(self, calendar: Calendar, changes: dict[str, Any]) -> dict[str, Any]:
        converted = dict(changes)
        tz = converted.get("tz", calendar.tz)
        if "tz" in converted:
            converted["tz"] = _zone(tz)
        if "url" in converted:
            converted["url"] = self._checked_url(converted["url"])
        if "every" in converted or "tz" in converted:
            every = converted.pop("every", calendar.schedule)
            converted["schedule"] = _schedule_text(every, tz)
        if "leads" in converted:
            converted["leads"] = self._leads(converted["leads"])
        for span in ("window_past", "horizon"):
            if span in converted:
                converted[span] = as_duration(converted[span])
        return converted

    async def _cancel_removed_leads(self, calendar: Calendar) -> None:
        lease = await self._claim(calendar.id)
        if lease is None:
            return  # syncing now; the sync after it cancels them.
        cancel = await self._syncer.stale_leads(lease.calendar)
        await self._store.apply_sync(
            lease, SyncWrite(lease.calendar.state, cancel=cancel), self._now()
        )

    async def pause(self, calendar_id: str, *, owner: str | None = None) -> Calendar:
        """Stop syncing a calendar and creating its reminders; pending ones still go."""
        return await self._set_paused(calendar_id, owner, paused=True)

    async def resume(self, calendar_id: str, *, owner: str | None = None) -> Calendar:
        """Sync a paused calendar again, starting now."""
        calendar = await self._set_paused(calendar_id, owner, paused=False)
        await self._store.request_sync(calendar.id, self._now())
        return calendar

    async def _set_paused(
        self, calendar_id: str, owner: str | None, *, paused: bool
    ) -> Calendar:
        calendar = await self._store.get_calendar(calendar_id, owner=owner)
        if calendar.paused == paused:
            return calendar
        return await self._store.update_calendar(attrs.evolve(calendar, paused=paused))

    async def remove_calendar(
        self, calendar_id: str, *, owner: str | None = None
    ) -> None:
        """Delete a calendar with its occurrences and notifications."""
        await self._store.remove_calendar(calendar_id, owner=owner)

    async def request_sync(self, calendar_id: str, *, owner: str | None = None) -> None:
        """Ask for a sync ahead of periodic ones; the next `sync_due` runs it."""
        calendar = await self._store.get_calendar(calendar_id, owner=owner)
        await self._store.request_sync(calendar.id, self._now())

    async def requeue(
        self, notification_ids: Iterable[str], *, owner: str | None = None
    ) -> int:
        """Make dead-letter notifications pending again; return how many.

        With ``owner``, only that owner's failed notifications are requeued.
        """
        wanted = list(notification_ids)
        if owner is not None:
            mine = {
                record.id
                for record in await self._dead_letters(owner, (_FAILED,), _MANY)
            }
            wanted = [
                notification_id for notification_id in wanted if notification_id in mine
            ]
        return await self._store.requeue(wanted, self._now())

    async def reseal_secrets(self) -> int:
        """Encrypt every stored feed secret with the store's first key; return how many.

        Raises `ValidationError` for a store that keeps nothing on disk (memory).
        """
        reseal = getattr(self._store, "reseal_secrets", None)
        if reseal is None:
            raise ValidationError(
                "this store keeps nothing on disk: there are no secrets to reseal"
            )
        count: int = await reseal()
        return count

    # -- jobs --------------------------------------------------------------

    async def run_job(
        self,
        job: Job | str,
        *,
        handler: Handler | None = None,
        calendar_id: str | None = None,
        handoff: str | None = None,
        force: bool = False,
    ) -> JobResult:
        """Run one job by name, as every runtime does; the result says what is next.

        `Job.DISPATCH_NOTIFICATIONS` needs the ``handler``; `Job.SYNC_CALENDAR`
        a ``calendar_id``, and the ``handoff`` of a lease `Job.CLAIM_DUE` gave
        out, if any; ``force`` is the syncs' (see `sync_calendar`). Raises
        `ValidationError` for an unknown job or a missing argument.
        """
        match _job(job):
            case Job.SYNC_DUE:
                return await self.sync_due(force=force)
            case Job.CLAIM_DUE:
                return await self._claimed(None)
            case Job.SYNC_CALENDAR:
                if calendar_id is None:
                    raise ValidationError("the sync_calendar job needs a calendar_id")
                return await self.sync_calendar(
                    calendar_id, force=force, handoff=handoff
                )
            case Job.CHECK_NOTIFICATIONS:
                return await self.check_notifications()
            case Job.DISPATCH_NOTIFICATIONS:
                if handler is None:
                    raise ValidationError("dispatch_notifications needs a handler")
                return await self.dispatch_notifications(handler)
            case Job.CLEANUP:
                return await self.cleanup()

    async def sync_calendar(
        self,
        calendar_id: str,
        *,
        force: bool = False,
        confirm_removals: bool = False,
        handoff: str | None = None,
    ) -> SyncResult:
        """Sync one calendar now, paused or not; BUSY if another worker is syncing it.

        ``force`` fetches without validators and parses even an unchanged body;
        ``confirm_removals`` applies removals the mass-deletion guard would hold.
        ``handoff`` is a `Lease.handoff` from `claim_due`: the sync takes that
        lease over. If it is gone (used by an earlier delivery of the same task,
        or expired), the calendar is synced only if it is still due, else SKIPPED.
        """
        handed = None if handoff is None else _parse_handoff(calendar_id, handoff)

        async def job() -> SyncResult:
            if handed is None:
                lease = await self._claim(calendar_id)
            else:
                lease = await self._take_over(calendar_id, *handed)
            if lease is None:
                calendar = await self._store.get_calendar(calendar_id)
                return SyncResult(calendar.id, calendar.label, SyncOutcome.BUSY)
            fresh = handed is not None and lease.token != handed[0]
            if fresh and not self._due(lease.calendar):
                await self._store.release_lease(lease)
                return SyncResult(
                    lease.calendar_id, lease.calendar.label, SyncOutcome.SKIPPED
                )
            return await self._syncer.sync(
                lease, force=force, confirm_removals=confirm_removals
            )

        return await self._recorded(Job.SYNC_CALENDAR, job, _sync_counts)

    async def _take_over(
        self, calendar_id: str, token: int, worker: str
    ) -> Lease | None:
        """Renew the handed-off lease, or claim the calendar afresh if it is gone.

        A fresh claim always has a newer token than the handed-off one.
        """
        now = self._now()
        calendar = await self._store.get_calendar(calendar_id)
        handed = Lease(calendar, worker, token, now)
        try:
            return await self._store.renew_lease(handed, now, self._settings.lease_ttl)
        except LeaseLost:
            return await self._claim(calendar_id)

    def _due(self, calendar: Calendar) -> bool:
        """Whether the calendar's schedule says it is due (manual requests aside)."""
        next_sync_at = calendar.state.next_sync_at
        now = self._now()
        return not calendar.paused and (next_sync_at is None or next_sync_at <= now)

    async def _claim(self, calendar_id: str) -> Lease | None:
        return await self._store.claim_calendar(
            calendar_id,
            self._now(),
            worker=self._settings.worker,
            lease_ttl=self._settings.lease_ttl,
        )

    async def _claim_due(self, size: int) -> list[Lease]:
        return await self._store.claim_due_calendars(
            self._now(),
            limit=size,
            worker=self._settings.worker,
            lease_ttl=self._settings.lease_ttl,
        )

    async def claim_due(self, *, limit: int | None = None) -> list[Lease]:
        """Lease the calendars that are due (manual requests first), to sync elsewhere.

        For a task queue's fan-out: send each lease's `calendar_id` and `handoff`
        to a worker that calls ``sync_calendar(calendar_id, handoff=...)``. A
        calendar is handed out once while its lease lasts (``settings.lease_ttl``).
        """
        return list((await self._claimed(limit)).leases)

    async def _claimed(self, limit: int | None) -> ClaimResult:
        _check_limit(limit)

        async def job() -> ClaimResult:
            leases: list[Lease] = []
            while limit is None or len(leases) < limit:
                remaining = _CLAIM_BATCH if limit is None else limit - len(leases)
                size = min(_CLAIM_BATCH, remaining)
                claimed = await self._claim_due(size)
                leases.extend(claimed)
                if len(claimed) < size:
                    break
            return ClaimResult(leases)

        return await self._recorded(
            Job.CLAIM_DUE, job, lambda result: {"claimed": len(result.leases)}
        )

    async def sync_due(
        self,
        *,
        limit: int | None = None,
        force: bool = False,
        progress: Callable[[SyncResult], object] | None = None,
    ) -> SyncDueResult:
        """Sync every calendar that is due (manual requests first), concurrently.

        At most ``settings.sync_concurrency`` at once and ``per_host_concurrency``
        per host; one calendar's failure never affects another. ``progress`` is
        called with each calendar's result as it finishes.
        """
        _check_limit(limit)
        started = self._now()

        async def job() -> SyncDueResult:
            results = await _SyncRound(self, self._syncer, limit, force, progress).run()
            return SyncDueResult(tuple(results), started, self._now())

        return await self._recorded(Job.SYNC_DUE, job, lambda result: result.counts)

    async def check_notifications(self) -> CheckResult:
        """Create the pending notifications whose fire time has come (start - lead).

        Reminders that could not fire because nothing ran during their whole
        window (downtime past the late grace) are recorded as missed.
        """

        async def job() -> CheckResult:
            previous = await self._previous_check()
            return await check(self._store, self._settings, self._now(), previous)

        return await self._recorded(
            Job.CHECK_NOTIFICATIONS,
            job,
            lambda result: attrs.asdict(result, filter=_ints),
        )

    async def _previous_check(self) -> datetime | None:
        runs = await self._store.recent_job_runs(
            job=Job.CHECK_NOTIFICATIONS.value, limit=20
        )
        for run in runs:
            if run.outcome is not JobOutcome.ERROR:
                return run.started_at
        return None

    async def dispatch_notifications(
        self, handler: Handler, *, limit: int | None = None
    ) -> DispatchResult:
        """Deliver due notifications through ``handler``, each at least once.

        ``handler`` gets a `Delivery`; its ``id`` is the idempotency key. A
        raising handler's notification is retried with backoff and dead-lettered
        after ``settings.max_attempts`` (see `status` and `requeue`).
        """
        if not callable(handler):
            raise ValidationError(f"handler must be callable, got {handler!r}")
        batch = limit if limit is not None else 10 * self._settings.dispatch_batch

        async def job() -> DispatchResult:
            return await dispatch(
                self._store, self._settings, self._now, handler, batch
            )

        return await self._recorded(
            Job.DISPATCH_NOTIFICATIONS,
            job,
            lambda result: attrs.asdict(result, filter=_ints),
        )

    async def cleanup(self) -> CleanupResult:
        """Prune expired occurrences, old notifications and job history (retention)."""

        async def job() -> CleanupResult:
            now = self._now()
            settings = self._settings
            counts = await self._store.prune(
                occurrences_before=now - settings.keep_expired_occurrences,
                notifications_before=now - settings.keep_notifications,
                job_runs_before=now - settings.keep_job_runs,
            )
            return CleanupResult(
                counts.occurrences, counts.notifications, counts.job_runs
            )

        return await self._recorded(
            Job.CLEANUP, job, lambda result: attrs.asdict(result, filter=_ints)
        )

    async def _recorded(
        self,
        job: Job,
        run: Callable[[], Awaitable[_R]],
        counts: Callable[[_R], dict[str, Any]],
    ) -> _R:
        """Run a job and append it to the store's history (outcome, counts, error)."""
        name, started = job.value, self._now()
        try:
            with tracing.span(f"calsync {name}", _job_attributes(name)) as current:
                result = await run()
                tracing.annotate(current, {"calsync.job.outcome": str(result.outcome)})
        except asyncio.CancelledError:
            raise
        except Exception as error:
            failed = JobRun(
                name, started, self._now(), JobOutcome.ERROR, {}, _text(error)
            )
            await self._record(failed, None)
            raise
        outcome = JobOutcome.OK if result.ok else JobOutcome.PARTIAL
        finished = JobRun(name, started, self._now(), outcome, counts(result))
        await self._record(finished, result)
        return result

    async def _record(self, run: JobRun, result: JobResult | None) -> None:
        try:
            await self._store.record_job_run(run)
        except Exception:
            logger.exception("could not record a run of %s", run.job)
        for listener in self._listeners:
            try:
                listener(run, result)
            except Exception:
                logger.exception("a job listener failed on a run of %s", run.job)

    # -- reading -----------------------------------------------------------

    async def status(self, *, owner: str | None = None) -> EngineStatus:
        """Return each calendar's health, the queue depth and job durations."""
        now = self._now()
        calendars = await self._store.list_calendars(owner=owner)
        statuses = tuple(
            CalendarStatus(calendar, self._stale(calendar, now))
            for calendar in calendars
        )
        counts = await self._store.notification_counts(owner=owner)
        jobs = []
        for job in Job:
            runs = await self._store.recent_job_runs(job=job.value, limit=100)
            jobs.append(_job_stats(job.value, runs))
        return EngineStatus(
            calendars=statuses,
            pending=counts[NotificationStatus.PENDING],
            failed=counts[NotificationStatus.FAILED],
            missed=counts[NotificationStatus.MISSED],
            jobs=tuple(jobs),
            checked_at=now,
            parse_cache_bytes=self._syncer.parse_cache_bytes,
            parse_cache_budget=self._syncer.parse_cache_budget,
            parse_cached=self._syncer.parse_cached_calendars,
        )

    async def notifications(
        self,
        *,
        calendar_id: str | None = None,
        status: NotificationStatus | None = None,
        uid: str | None = None,
        limit: int = 1000,
    ) -> list[NotificationRecord]:
        """Return up to ``limit`` notifications, filtered, earliest fire time first."""
        return await self._store.list_notifications(
            calendar_id=calendar_id, status=status, uid=uid, limit=limit
        )

    async def occurrences(
        self,
        calendar_id: str,
        window: Window | None = None,
        *,
        owner: str | None = None,
    ) -> list[Occurrence]:
        """Return a calendar's stored occurrences overlapping ``window`` (all if None).

        Sorted by start; raises `CalendarNotFound` (also when ``owner`` differs).
        """
        if owner is not None:
            await self._store.get_calendar(calendar_id, owner=owner)
        return await self._store.list_occurrences(calendar_id, window)

    async def dead_letters(
        self,
        *,
        owner: str | None = None,
        missed: bool = True,
        offset: int = 0,
        limit: int = 100,
    ) -> list[NotificationRecord]:
        """Return failed (and, with ``missed``, missed) reminders, earliest fire first.

        One page of ``limit`` after ``offset``, for a dashboard or an API; the
        totals are in `status`. Failed ones can be `requeue`d; missed ones cannot.
        """
        check_limit(limit)
        check_limit(offset)
        statuses = (_FAILED, NotificationStatus.MISSED) if missed else (_FAILED,)
        records = await self._dead_letters(owner, statuses, offset + limit)
        return records[offset : offset + limit]

    async def _dead_letters(
        self,
        owner: str | None,
        statuses: tuple[NotificationStatus, ...],
        size: int,
    ) -> list[NotificationRecord]:
        """Return the first ``size`` in ``statuses`` of ``owner``, by fire time."""
        ids = None
        if owner is not None:
            ids = {c.id for c in await self._store.list_calendars(owner=owner)}
            size = _MANY
        records = [
            record
            for status in statuses
            for record in await self._store.list_notifications(
                status=status, limit=size
            )
            if ids is None or record.calendar_id in ids
        ]
        return sorted(records, key=lambda record: (record.fire_at, record.id))[:size]

    async def job_runs(
        self, *, job: Job | str | None = None, limit: int = 100
    ) -> list[JobRun]:
        """Return the latest recorded runs (of one ``job``, or all), newest first."""
        check_limit(limit)
        name = None if job is None else _job(job).value
        return await self._store.recent_job_runs(job=name, limit=limit)

    def calendar_status(self, calendar: Calendar) -> CalendarStatus:
        """Return a calendar's health now, as `status` reports it for each one."""
        return CalendarStatus(calendar, self._stale(calendar, self._now()))

    def _stale(self, calendar: Calendar, now: datetime) -> bool:
        if calendar.paused:
            return False
        if setting_problem(calendar, now) is not None:
            return True  # its syncs fail on the setting; the others are shown
        schedule = schedule_of(calendar.schedule, calendar.tz)
        first = schedule.next_after(now)
        cadence = schedule.next_after(first) - first
        since = calendar.state.last_success_at or calendar.created_at
        return now - since > cadence * self._settings.stale_factor

    async def upcoming(
        self, *, days: float = 7, owner: str | None = None
    ) -> list[Upcoming]:
        """Return the next ``days``' occurrences and their reminders, from the store."""
        return await upcoming(
            self._store,
            self._now(),
            days=days,
            owner=owner,
            late_grace=self._settings.late_grace,
            alarm_lookahead=self._settings.alarm_lookahead,
        )

    async def explain(self, query: str) -> list[Explanation]:
        """Why reminders for a calendar id or an event UID will fire, or will not."""
        return await explain(
            self._store,
            self._now(),
            query,
            late_grace=self._settings.late_grace,
            alarm_lookahead=self._settings.alarm_lookahead,
        )

    def _leads(self, leads: Iterable[timedelta | str]) -> tuple[timedelta, ...]:
        """Parse leads; refuse a lead of 0 that the late grace would never let fire."""
        parsed = _leads(leads)
        if timedelta(0) in parsed and self._settings.late_grace <= timedelta(0):
            raise ValidationError(
                "a lead of 0 means 'at the start', but with a late grace of 0 an "
                "event that has started gets no reminder, so it would never fire: "
                "use a lead such as 1m, or set [engine] late_grace "
                "(CALSYNC_ENGINE_LATE_GRACE), e.g. '2m'"
            )
        return parsed

    def _checked_url(self, url: str) -> str:
        if not isinstance(url, str) or not url.strip():
            raise ValidationError("a calendar needs a URL, got an empty one")
        self._fetcher.check_url(url.strip())
        return url.strip()


class _SyncRound:
    """One `sync_due` cycle: claim in small batches, sync with bounded concurrency."""

    def __init__(
        self,
        engine: Engine,
        syncer: Syncer,
        limit: int | None,
        force: bool,
        progress: Callable[[SyncResult], object] | None,
    ) -> None:
        self._engine = engine
        self._syncer = syncer
        self._settings = engine.settings
        self._remaining = limit
        self._force = force
        self._progress = progress
        self._buffer: list[Lease] = []
        self._exhausted = False
        self._lock = asyncio.Lock()
        self._results: list[SyncResult] = []

    async def run(self) -> list[SyncResult]:
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(self._settings.sync_concurrency):
                    group.create_task(self._work())
        except ExceptionGroup as failed:
            # The workers share one store: report its error once, not a group of
            # copies, so `except StoreUnavailable` works as for the other jobs.
            raise _first_error(failed) from None
        finally:
            await asyncio.shield(self._release_unstarted())
        return self._results

    async def _work(self) -> None:
        while (lease := await self._next()) is not None:
            result = await self._syncer.sync(lease, force=self._force)
            self._results.append(result)
            if self._progress is not None:
                try:
                    self._progress(result)
                except Exception:
                    logger.exception("the sync_due progress callback failed")

    async def _next(self) -> Lease | None:
        async with self._lock:
            if not self._buffer and not self._exhausted:
                await self._claim()
            return self._buffer.pop(0) if self._buffer else None

    async def _claim(self) -> None:
        size = self._settings.sync_concurrency
        if self._remaining is not None:
            size = min(size, self._remaining)
        if size <= 0:
            self._exhausted = True
            return
        leases = await self._engine._claim_due(size)
        if self._remaining is not None:
            self._remaining -= len(leases)
        if len(leases) < size:
            self._exhausted = True
        self._buffer.extend(leases)

    async def _release_unstarted(self) -> None:
        while self._buffer:
            lease = self._buffer.pop()
            await self._engine.store.release_lease(lease)


def _job(job: Job | str) -> Job:
    try:
        return Job(job)
    except ValueError:
        known = ", ".join(Job)
        raise ValidationError(f"unknown job {job!r}; the jobs are {known}") from None


def _first_error(group: ExceptionGroup[Exception]) -> Exception:
    first = group.exceptions[0]
    return _first_error(first) if isinstance(first, ExceptionGroup) else first


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or limit < 1):
        raise ValidationError(f"limit must be None or an int >= 1, got {limit!r}")


def _parse_handoff(calendar_id: str, handoff: str) -> tuple[int, str]:
    """Split a `Lease.handoff` text into its token and worker."""
    token, _, worker = str(handoff).partition(":")
    if not (token.isascii() and token.isdigit()) or not worker:
        raise ValidationError(
            f"calendar {calendar_id}: {handoff!r} is not a lease handoff; pass "
            "the handoff text of a lease from Engine.claim_due"
        )
    return int(token), worker


_CALENDAR_OPTIONS = frozenset(
    {"name", "owner", "every", "leads", "tz", "window_past", "horizon"}
    | {"use_alarms", "auth", "paused"}
)


def _schedule_text(every: str, tz: str | None) -> str:
    if not isinstance(every, str) or not every.strip():
        raise ValidationError("every must be a schedule such as 'every 15m' or '15m'")
    return schedule_or_interval(every.strip(), tz or "UTC").text


def _leads(leads: Iterable[timedelta | str]) -> tuple[timedelta, ...]:
    if isinstance(leads, str | timedelta):
        leads = (leads,)
    return tuple(as_duration(lead) for lead in leads)


def _zone(tz: str | None) -> str | None:
    if tz is None:
        return None
    resolve_zone(tz)
    return tz


def _job_attributes(name: str) -> dict[str, str]:
    return {
        "messaging.system": "calsync",
        "messaging.operation.type": "process",
        "messaging.operation.name": name,
    }


def _text(error: BaseException) -> str:
    return redact_text(f"{type(error).__name__}: {error}")[:500]


def _ints(attribute: attrs.Attribute[Any], value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _sync_counts(result: SyncResult) -> dict[str, int]:
    return {
        "added": result.added,
        "updated": result.updated,
        "removed": result.removed,
        "held_removals": result.held_removals,
        "failed": int(not result.ok),
    }


def _job_stats(job: str, runs: list[JobRun]) -> JobStats:
    if not runs:
        return JobStats(job, 0, None, None, timedelta(0), timedelta(0))
    durations = sorted(run.duration.total_seconds() for run in runs)
    p50 = statistics.median(durations)
    p95 = durations[min(len(durations) - 1, round(0.95 * (len(durations) - 1)))]
    last = runs[0]
    return JobStats(
        job,
        len(runs),
        last.outcome,
        last.finished_at,
        timedelta(seconds=p50),
        timedelta(seconds=p95),
        last.error,
    )
