"""Run calsync's jobs as Celery tasks: beat triggers them, workers run them.

`install` registers the tasks on your Celery app and merges their beat entries.
Each worker process opens one `calsync.Engine` on a `calsync.engine.EngineThread`;
each task only translates a trigger into one `calsync.Engine.run_job` call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Celery, signals
from celery.app.task import Task
from celery.schedules import BaseSchedule, schedstate

import calsync
from calsync.engine import ClaimResult, EngineThread, JobResult

__all__ = ["CalsyncSchedule", "install"]

logger = logging.getLogger("calsync_celery")

# Any instant will do to measure a schedule's period (for a beat entry's expiry).
_REFERENCE = datetime(2026, 1, 5, tzinfo=UTC)


class CalsyncSchedule(BaseSchedule):
    """A beat schedule read from a `calsync.Schedule` text: exact across DST.

    Picklable (beat's PersistentScheduler stores it). Missed runs coalesce: after
    downtime the entry is due once, then follows the schedule from now on.
    """

    def __init__(self, text: str, tz: str = "UTC", **options: Any) -> None:
        self.schedule = calsync.Schedule.parse(text, tz)
        super().__init__(**options)

    def next_after(self, t: datetime) -> datetime:
        """Return the next run strictly after the aware ``t``, in UTC."""
        return self.schedule.next_after(self.maybe_make_aware(t))

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        """Return how long until the run after ``last_run_at`` (zero if due)."""
        return max(self.next_after(last_run_at) - self.now(), timedelta(0))

    def is_due(self, last_run_at: datetime) -> schedstate:
        """Return whether a run is due now, and the seconds until beat looks again."""
        now = self.now()
        due = self.next_after(last_run_at) <= now
        upcoming = self.next_after(now if due else last_run_at)
        return schedstate(due, (upcoming - now).total_seconds())

    def __reduce__(self) -> tuple[type[CalsyncSchedule], tuple[str, str]]:
        return (type(self), (self.schedule.text, self.schedule.zone))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CalsyncSchedule):
            return self.schedule == other.schedule
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.schedule)

    def __repr__(self) -> str:
        return f"<calsync schedule {self.schedule} ({self.schedule.zone})>"


def install(
    app: Celery,
    engine_factory: Callable[[], calsync.Engine],
    *,
    handler: calsync.Handler,
    schedules: calsync.Triggers | None = None,
) -> dict[str, Task[Any, Any]]:
    """Register calsync's tasks on ``app`` and add their beat entries.

    ``engine_factory`` makes an unopened `calsync.Engine`; it is called once in
    each worker process (after the fork). ``handler`` delivers the reminders;
    ``schedules`` says when beat sends each job (default `calsync.Triggers()`).
    Beat entries already in ``app.conf.beat_schedule`` are kept. Returns the
    tasks by job name. Raises `calsync.ValidationError` for a bad handler and
    `calsync.core.ScheduleError` for a bad schedule.
    """
    if not callable(handler):
        raise calsync.ValidationError(f"handler must be callable, got {handler!r}")
    engine = EngineThread(engine_factory)
    triggers = schedules if schedules is not None else calsync.Triggers()
    check_schedule = triggers.schedule(calsync.Job.CHECK_NOTIFICATIONS)

    def task(
        name: str, **options: Any
    ) -> Callable[[Callable[..., Any]], Task[Any, Any]]:
        return app.task(
            name=f"calsync.{name}",
            shared=False,  # this app's tasks, not every app's
            acks_late=True,
            autoretry_for=(calsync.core.StoreUnavailable,),
            retry_backoff=True,
            retry_backoff_max=60,
            retry_jitter=True,
            max_retries=8,
            **options,
        )

    def run(job: calsync.Job, until: str | None = None, **arguments: Any) -> JobResult:
        """Run one job, then send the dispatch it asks for and its wake-up check."""
        result = engine.run_job(job, handler=handler, **arguments)
        if calsync.Job.DISPATCH_NOTIFICATIONS in result.follow_ups:
            dispatch_notifications.delay()
        if result.wake_at is not None:
            wake_check(result.wake_at, until)
        return result

    def wake_check(wake_at: datetime, until: str | None) -> None:
        """Check at a reminder's fire time if that comes before beat's next check.

        A wake-up's own wake-ups stop at that same tick, so chains never pile up.
        """
        horizon = (
            datetime.fromisoformat(until)
            if until
            else check_schedule.next_after(engine.now())
        )
        if wake_at < horizon:
            check_notifications.apply_async(
                kwargs={"until": horizon.isoformat()}, eta=wake_at
            )

    @task("sync_due")
    def sync_due() -> int:
        result = run(calsync.Job.CLAIM_DUE)
        assert isinstance(result, ClaimResult)
        for lease in result.leases:
            sync_calendar.apply_async((lease.calendar_id,), {"handoff": lease.handoff})
        if result.leases:
            logger.info("handed out %d calendar(s) to sync", len(result.leases))
        return len(result.leases)

    @task("sync_calendar", reject_on_worker_lost=True)
    def sync_calendar(
        calendar_id: str, handoff: str | None = None, force: bool = False
    ) -> str:
        job = calsync.Job.SYNC_CALENDAR
        result = run(job, calendar_id=calendar_id, handoff=handoff, force=force)
        return str(result.outcome)

    @task("check_notifications")
    def check_notifications(until: str | None = None) -> str:
        return str(run(calsync.Job.CHECK_NOTIFICATIONS, until).outcome)

    @task("dispatch_notifications")
    def dispatch_notifications() -> str:
        return str(run(calsync.Job.DISPATCH_NOTIFICATIONS).outcome)

    @task("cleanup")
    def cleanup() -> str:
        return str(run(calsync.Job.CLEANUP).outcome)

    _connect(engine)
    every = (sync_due, sync_calendar, check_notifications, dispatch_notifications)
    tasks = {task.name.removeprefix("calsync."): task for task in (*every, cleanup)}
    app.conf.beat_schedule = {**_beat_entries(triggers), **app.conf.beat_schedule}
    return tasks


def _connect(engine: EngineThread) -> None:
    """Open the Engine in each pool process, and close it when the process ends.

    Opening does not wait: the first task waits for it (and may retry).
    """
    signals.worker_process_init.connect(lambda **_: engine.start(), weak=False)
    for ended in (signals.worker_process_shutdown, signals.worker_shutdown):
        ended.connect(lambda **_: engine.stop(), weak=False)


def _beat_entries(triggers: calsync.Triggers) -> dict[str, dict[str, Any]]:
    """One beat entry per job; a run that has not started by the next one expires."""
    entries = {}
    for job in calsync.Job.periodic():
        schedule = triggers.schedule(job)
        first = schedule.next_after(_REFERENCE)
        period = schedule.next_after(first) - first
        entries[f"calsync.{job}"] = {
            "task": f"calsync.{job}",
            "schedule": CalsyncSchedule(schedule.text, triggers.tz),
            "options": {"expires": period.total_seconds()},
        }
    return entries
