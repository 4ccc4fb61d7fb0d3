"""Run calsync's jobs as Celery tasks: beat triggers them, workers run them.

`install` registers the tasks on your Celery app and merges their beat entries.
Each worker process opens one `calsync.Engine` on one event loop of its own;
the tasks only translate a trigger into an Engine call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from celery import Celery, signals
from celery.app.task import Task
from celery.schedules import BaseSchedule, schedstate

import calsync

__all__ = ["CalsyncSchedule", "install"]

logger = logging.getLogger("calsync_celery")

_R = TypeVar("_R")
# Any instant will do to measure a schedule's period (for a beat entry's expiry).
_REFERENCE = datetime(2026, 1, 5, tzinfo=UTC)


class CalsyncSchedule(BaseSchedule):
    """A beat schedule read from a `calsync.Schedule` text: exact across DST.

    Picklable (beat's PersistentScheduler stores it). Missed runs coalesce: after
    downtime the entry is due once, then follows the schedule from now on.
    """

    def __init__(self, text: str, tz: str = "UTC", **options: Any) -> None:
        self._schedule = calsync.Schedule.parse(text, tz)
        self.text = self._schedule.text
        self.zone = tz
        super().__init__(**options)

    def next_after(self, t: datetime) -> datetime:
        """Return the next run strictly after the aware ``t``, in UTC."""
        return self._schedule.next_after(self.maybe_make_aware(t))

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        """Return how long until the run after ``last_run_at`` (zero if due)."""
        return max(self.next_after(last_run_at) - self.now(), timedelta(0))

    def is_due(self, last_run_at: datetime) -> schedstate:
        """Return whether a run is due now, and the seconds until beat looks again."""
        now = self.now()
        if self.next_after(last_run_at) <= now:
            return schedstate(True, (self.next_after(now) - now).total_seconds())
        return schedstate(False, self.remaining_estimate(last_run_at).total_seconds())

    def __reduce__(self) -> tuple[type[CalsyncSchedule], tuple[str, str]]:
        return (type(self), (self.text, self.zone))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CalsyncSchedule):
            return (self.text, self.zone) == (other.text, other.zone)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.text, self.zone))

    def __repr__(self) -> str:
        return f"<calsync schedule {self.text} ({self.zone})>"


class _Runtime:
    """One Engine on one event loop per process; a forked child starts afresh.

    The loop runs in a daemon thread; tasks (from any pool thread) submit their
    Engine calls to it and wait, so the Engine's clients live on one loop.
    """

    def __init__(self, engine_factory: Callable[[], calsync.Engine]) -> None:
        self._factory = engine_factory
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening: Future[calsync.Engine] | None = None

    def start(self) -> Future[calsync.Engine]:
        """Begin opening this process's Engine, unless it is open or opening."""
        with self._lock:
            if self._pid != os.getpid():
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=_run_forever, args=(loop,), name="calsync", daemon=True
                ).start()
                self._pid, self._loop, self._opening = os.getpid(), loop, None
            failed = (
                self._opening is not None
                and self._opening.done()
                and (self._opening.cancelled() or self._opening.exception() is not None)
            )
            if self._opening is None or failed:
                assert self._loop is not None
                self._opening = asyncio.run_coroutine_threadsafe(
                    self._open(), self._loop
                )
            return self._opening

    def run(self, job: Callable[[calsync.Engine], Awaitable[_R]]) -> _R:
        """Run ``job(engine)`` on the process's loop and wait for its result."""
        engine = self.start().result()
        assert self._loop is not None
        return _wait(self._loop, job(engine))

    async def _open(self) -> calsync.Engine:
        engine = self._factory()
        try:
            await engine.open()
        except BaseException:
            await engine.close()
            raise
        return engine

    def stop(self) -> None:
        """Close this process's Engine and stop its loop (no-op if it has none)."""
        with self._lock:
            if self._pid != os.getpid():
                return
            loop, opening = self._loop, self._opening
            self._pid, self._opening = None, None
        if loop is None:
            return
        try:
            if opening is not None:
                _wait(loop, opening.result().close())
        except Exception:
            logger.exception("closing the calsync engine failed")
        finally:
            loop.call_soon_threadsafe(loop.stop)


def _run_forever(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.close()


def _wait(loop: asyncio.AbstractEventLoop, job: Awaitable[_R]) -> _R:
    """Run ``job`` on ``loop`` (another thread's) and block until it ends."""

    async def call() -> _R:
        return await job

    future = asyncio.run_coroutine_threadsafe(call(), loop)
    try:
        return future.result()
    except BaseException:
        future.cancel()  # a time limit or a shutdown interrupted the wait
        raise


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
    runtime = _Runtime(engine_factory)
    triggers = schedules if schedules is not None else calsync.Triggers()
    check_schedule = triggers.schedule("check_notifications")

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

    @task("sync_due")
    def sync_due() -> int:
        leases = runtime.run(lambda engine: engine.claim_due())
        for lease in leases:
            sync_calendar.apply_async((lease.calendar_id,), {"handoff": lease.handoff})
        if leases:
            logger.info("handed out %d calendar(s) to sync", len(leases))
        return len(leases)

    @task("sync_calendar", reject_on_worker_lost=True)
    def sync_calendar(
        calendar_id: str, handoff: str | None = None, force: bool = False
    ) -> str:
        result = runtime.run(
            lambda engine: engine.sync_calendar(
                calendar_id, force=force, handoff=handoff
            )
        )
        if "dispatch_notifications" in result.follow_ups:
            dispatch_notifications.delay()
        wake_check(result.wake_at, until=None)
        return str(result.outcome)

    @task("check_notifications")
    def check_notifications(until: str | None = None) -> int:
        result = runtime.run(lambda engine: engine.check_notifications())
        if "dispatch_notifications" in result.follow_ups:
            dispatch_notifications.delay()
        wake_check(result.wake_at, until)
        return result.created

    def wake_check(wake_at: datetime | None, until: str | None) -> None:
        """Check at a reminder's fire time if that comes before beat's next check.

        A wake-up's own wake-ups stop at that same tick, so chains never pile up.
        """
        horizon = (
            datetime.fromisoformat(until)
            if until
            else check_schedule.next_after(runtime.start().result().now())
        )
        if wake_at is not None and wake_at < horizon:
            check_notifications.apply_async(
                kwargs={"until": horizon.isoformat()}, eta=wake_at
            )

    @task("dispatch_notifications")
    def dispatch_notifications() -> int:
        result = runtime.run(lambda engine: engine.dispatch_notifications(handler))
        return result.delivered

    @task("cleanup")
    def cleanup() -> dict[str, int]:
        result = runtime.run(lambda engine: engine.cleanup())
        return {
            "occurrences": result.occurrences,
            "notifications": result.notifications,
            "job_runs": result.job_runs,
        }

    _connect(runtime)
    tasks = {
        "sync_due": sync_due,
        "sync_calendar": sync_calendar,
        "check_notifications": check_notifications,
        "dispatch_notifications": dispatch_notifications,
        "cleanup": cleanup,
    }
    app.conf.beat_schedule = {**_beat_entries(triggers), **app.conf.beat_schedule}
    return tasks


def _connect(runtime: _Runtime) -> None:
    """Open the Engine in each pool process, and close it when the process ends."""

    def open_engine(**_: object) -> None:
        runtime.start()  # without waiting: the first task waits (and may retry)

    def close_engine(**_: object) -> None:
        runtime.stop()

    signals.worker_process_init.connect(open_engine, weak=False)
    signals.worker_process_shutdown.connect(close_engine, weak=False)
    signals.worker_shutdown.connect(close_engine, weak=False)


def _beat_entries(triggers: calsync.Triggers) -> dict[str, dict[str, Any]]:
    """One beat entry per job; a run that has not started by the next one expires."""
    entries = {}
    for job in calsync.Triggers.JOBS:
        schedule = triggers.schedule(job)
        first = schedule.next_after(_REFERENCE)
        period = schedule.next_after(first) - first
        entries[f"calsync.{job}"] = {
            "task": f"calsync.{job}",
            "schedule": CalsyncSchedule(schedule.text, triggers.tz),
            "options": {"expires": period.total_seconds()},
        }
    return entries
