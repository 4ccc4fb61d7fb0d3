"""Run calsync's jobs on the APScheduler 3 ``AsyncIOScheduler`` a host app already has.

`install` adds the periodic jobs (``calsync.sync_due``,
``calsync.check_notifications``, ``calsync.dispatch_notifications``,
``calsync.cleanup``) and `uninstall` takes them out again. The adapter only
translates: each run is one `calsync.Engine.run_job`, its trigger is a
`calsync.Schedule`, and the follow-ups and wake-up a result names are brought
forward.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable
from datetime import datetime

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.executors.asyncio import AsyncIOExecutor
from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.util import undefined

import calsync
from calsync.engine import JobResult

__all__ = ["ALIAS", "JOBS", "ScheduleTrigger", "install", "uninstall"]

ALIAS = "calsync"
"""The alias of the job store and the executor that calsync's jobs live in."""

JOBS = calsync.Job.periodic()
"""The Engine jobs `install` schedules; job ids are ``calsync.<job>``."""

_installed: weakref.WeakKeyDictionary[AsyncIOScheduler, _Jobs] = (
    weakref.WeakKeyDictionary()
)


class ScheduleTrigger(BaseTrigger):  # type: ignore[misc]  # APScheduler 3 is untyped
    """An APScheduler trigger that fires on a `calsync.Schedule`.

    Fire times (DST, cron, elapsed intervals) are calsync's, so a job fires on
    APScheduler exactly when it would under ``calsync run``.
    """

    __slots__ = ("schedule",)

    def __init__(self, schedule: calsync.Schedule) -> None:
        self.schedule = schedule

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime:
        """Return the schedule's next instant after the previous fire time, or now."""
        after = previous_fire_time if previous_fire_time is not None else now
        return self.schedule.next_after(after)

    def __str__(self) -> str:
        return f"calsync[{self.schedule.text} ({self.schedule.zone})]"

    def __repr__(self) -> str:
        return f"<ScheduleTrigger {self.schedule.text!r} tz={self.schedule.zone!r}>"


def install(
    scheduler: AsyncIOScheduler,
    engine: calsync.Engine,
    *,
    handler: calsync.Handler,
    schedules: calsync.Triggers | None = None,
) -> list[Job]:
    """Add calsync's four jobs to ``scheduler`` and return them; safe to repeat.

    The jobs live in a `MemoryJobStore` and run on an `AsyncIOExecutor`, both
    under the alias ``"calsync"`` (added if missing), so the host's own stores
    never have to pickle the Engine and coroutines always run on the loop. Each
    job has the id ``calsync.<job>`` and ``replace_existing=True``,
    ``max_instances=1``, ``coalesce=True`` and ``misfire_grace_time=None``: a
    late run is never skipped, since every job works out from the store what is
    due or was missed. ``schedules`` defaults to ``calsync.Triggers()``; the
    sync, the check and the dispatch also run at once. Raises
    `calsync.ValidationError` for another kind of scheduler or a handler that is
    not callable.
    """
    if not isinstance(scheduler, AsyncIOScheduler):
        raise calsync.ValidationError(
            f"calsync-apscheduler needs an AsyncIOScheduler, got {scheduler!r}"
        )
    if not callable(handler):
        raise calsync.ValidationError(f"handler must be callable, got {handler!r}")
    triggers = schedules if schedules is not None else calsync.Triggers()
    _add_missing(scheduler.add_jobstore, MemoryJobStore())
    _add_missing(scheduler.add_executor, AsyncIOExecutor())
    _forget(scheduler)
    jobs = _installed[scheduler] = _Jobs(scheduler, engine, handler)
    scheduler.add_listener(jobs.ended, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    now = datetime.now(scheduler.timezone)
    return [
        scheduler.add_job(
            jobs.run,
            ScheduleTrigger(triggers.schedule(job)),
            args=(job,),
            id=_job_id(job),
            name=_job_id(job),
            jobstore=ALIAS,
            executor=ALIAS,
            replace_existing=True,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            next_run_time=now if job.at_start else undefined,
        )
        for job in JOBS
    ]


def uninstall(scheduler: AsyncIOScheduler) -> None:
    """Remove calsync's jobs, and the ``"calsync"`` store once empty; idempotent.

    Host jobs stay. A calsync job that is running finishes its current run.
    """
    _forget(scheduler)
    for job in JOBS:
        with contextlib.suppress(JobLookupError):
            scheduler.remove_job(_job_id(job), jobstore=ALIAS)
    if scheduler.get_jobs(jobstore=ALIAS):
        return  # someone else's jobs share the alias: leave store and executor.
    for remove in (scheduler.remove_jobstore, scheduler.remove_executor):
        with contextlib.suppress(KeyError):  # not there: uninstalled before.
            remove(ALIAS, shutdown=False)


def _forget(scheduler: AsyncIOScheduler) -> None:
    """Stop listening for the runs of the jobs an earlier `install` added."""
    jobs = _installed.pop(scheduler, None)
    if jobs is not None:
        scheduler.remove_listener(jobs.ended)


def _job_id(job: str) -> str:
    return f"calsync.{job}"


def _add_missing(add: Callable[..., None], plugin: object) -> None:
    """Add a job store or executor under `ALIAS` unless one is there already."""
    with contextlib.suppress(ValueError):  # there already: keep it and its jobs.
        add(plugin, alias=ALIAS)


class _Jobs:
    """The job function: one Engine call, then the follow-ups its result names."""

    def __init__(
        self,
        scheduler: AsyncIOScheduler,
        engine: calsync.Engine,
        handler: calsync.Handler,
    ) -> None:
        self._scheduler = scheduler
        self._engine = engine
        self._handler = handler
        self._running: set[str] = set()  # until APScheduler counts the run as ended
        self._deferred: dict[str, datetime] = {}

    async def run(self, job: calsync.Job) -> JobResult:
        """Run one Engine job; its result is the APScheduler event's ``retval``."""
        self._running.add(job)
        result = await self._engine.run_job(job, handler=self._handler)
        now = datetime.now(self._scheduler.timezone)
        for follow_up in result.follow_ups:
            self._bring_forward(follow_up, now)
        if result.wake_at is not None:
            self._bring_forward(calsync.Job.CHECK_NOTIFICATIONS, result.wake_at)
        return result

    def ended(self, event: JobExecutionEvent) -> None:
        """Bring a job forward to the wake-ups that came while it ran."""
        job = event.job_id.removeprefix(f"{ALIAS}.")
        self._running.discard(job)
        when = self._deferred.pop(job, None)
        if when is not None:
            self._bring_forward(job, when)

    def _bring_forward(self, job: str, when: datetime) -> None:
        """Run ``job`` at ``when`` if that is before its next run (not if paused).

        While the job runs, APScheduler would skip a run that comes due
        (``max_instances=1``): the earliest such wake-up waits for `ended`.
        """
        if job in self._running:
            self._deferred[job] = min(when, self._deferred.get(job, when))
            return
        found = self._scheduler.get_job(_job_id(job), jobstore=ALIAS)
        if found is None or found.next_run_time is None:
            return  # uninstalled, or paused by the host.
        if when < found.next_run_time:
            found.modify(next_run_time=when)
