"""The bundled asyncio runner: the Engine's jobs on their triggers, stopped gracefully.

It needs nothing but the standard library, so a host app can embed it in its own
event loop (``async with Runner(engine, handler): ...``) or run it as a service
(``calsync run``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar, Self, TypeVar

import attrs

from calsync.core.errors import ValidationError
from calsync.core.schedule import Schedule
from calsync.engine.jobs import Job
from calsync.engine.results import DispatchResult, JobResult, SyncDueResult
from calsync.engine.service import Engine
from calsync.handlers.delivery import Handler

__all__ = ["Runner", "Triggers"]

logger = logging.getLogger("calsync.runner")

# Sleep in slices this long at most, so clock jumps and suspends are noticed.
_LONGEST_SLEEP = 60.0
_WATCH_EVERY = 5.0

_F = TypeVar("_F", bound="asyncio.Future[Any]")


def _schedule(instance: Triggers, attribute: attrs.Attribute[str], value: str) -> None:
    Schedule.parse(value, instance.tz)


# How `calsync.config` reads a trigger: a schedule text, or a bare interval.
_TEXT = {"kind": "schedule"}


@attrs.frozen
class Triggers:
    """When the runner runs each job: `Schedule` texts, read in ``tz``."""

    JOBS: ClassVar[tuple[Job, ...]] = Job.periodic()
    """The periodic jobs, by name: a runtime schedules each on its trigger."""

    sync_due: str = attrs.field(
        default="every 30s", validator=_schedule, metadata=_TEXT
    )
    check_notifications: str = attrs.field(
        default="every 60s", validator=_schedule, metadata=_TEXT
    )
    dispatch_notifications: str = attrs.field(
        default="every 10s", validator=_schedule, metadata=_TEXT
    )
    cleanup: str = attrs.field(
        default="daily 03:00", validator=_schedule, metadata=_TEXT
    )
    tz: str = attrs.field(default="UTC", kw_only=True, metadata={"kind": "zone"})

    def schedule(self, job: str) -> Schedule:
        """Return the parsed schedule of one job."""
        text: str = getattr(self, job)
        return Schedule.parse(text, self.tz)


@attrs.frozen
class _Deadlines:
    """How long a job may run before the watchdog logs it as stuck."""

    sync_due: timedelta = timedelta(minutes=10)
    check_notifications: timedelta = timedelta(minutes=2)
    dispatch_notifications: timedelta = timedelta(minutes=5)
    cleanup: timedelta = timedelta(minutes=30)


class Runner:
    """Run an Engine's jobs on their triggers until stopped; an async context manager.

    The first cycle syncs everything due (missed runs coalesce into one), checks
    and dispatches at once. Stopping lets running jobs finish for
    ``shutdown_timeout``, then cancels them; a cancelled sync gives its lease back.
    A job running past its entry in ``deadlines`` (by job name) is logged as stuck.

    Every wait (triggers, the watchdog, the shutdown timeout) goes through ``sleep``
    (default `asyncio.sleep`) and measures with ``monotonic`` (default
    `time.monotonic`); a test passes a `calsync.testing.ManualClock`'s ``sleep`` and
    ``monotonic``, with the same clock as the Engine's, to run the runner on virtual
    time.
    """

    def __init__(
        self,
        engine: Engine,
        handler: Handler,
        *,
        triggers: Triggers | None = None,
        shutdown_timeout: timedelta = timedelta(seconds=8),
        deadlines: Mapping[str, timedelta] | None = None,
        sleep: Callable[[float], Awaitable[object]] | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        if not callable(handler):
            raise ValidationError(f"handler must be callable, got {handler!r}")
        if shutdown_timeout <= timedelta(0):
            raise ValidationError("shutdown_timeout must be positive")
        self._engine = engine
        self._handler = handler
        self._triggers = triggers if triggers is not None else Triggers()
        self._shutdown_timeout = shutdown_timeout.total_seconds()
        self._deadlines = attrs.evolve(_Deadlines(), **(deadlines or {}))
        self._sleep = asyncio.sleep if sleep is None else sleep
        self._monotonic = time.monotonic if monotonic is None else monotonic
        self._stopping = asyncio.Event()
        self._wake = {job: asyncio.Event() for job in Job.periodic()}
        self._next: dict[Job, datetime] = {}  # by trigger; replaced after each run
        self._wakes: dict[Job, set[datetime]] = {job: set() for job in self._wake}
        self._running: dict[str, float] = {}
        self._warned: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._listeners: list[Callable[[str, object], object]] = []

    @property
    def triggers(self) -> Triggers:
        """When each job runs."""
        return self._triggers

    def on_result(self, listener: Callable[[str, object], object]) -> None:
        """Call ``listener(job, result)`` after every job run (displays, metrics)."""
        self._listeners.append(listener)

    def start(self) -> None:
        """Start the job loops and the watchdog on the running event loop."""
        if self._tasks:
            raise RuntimeError("the runner is already started")
        self._stopping.clear()
        self._next.clear()
        for wakes in self._wakes.values():
            wakes.clear()
        for job in Job.periodic():
            self._tasks.append(
                asyncio.create_task(self._loop(job), name=f"calsync.{job}")
            )
        self._tasks.append(
            asyncio.create_task(self._watchdog(), name="calsync.watchdog")
        )
        logger.info(
            "runner started as worker %s",
            self._engine.settings.worker,
            extra={"calsync_worker": self._engine.settings.worker},
        )

    def request_stop(self) -> None:
        """Ask the runner to stop; `run` then returns after a graceful shutdown."""
        self._stopping.set()
        for event in self._wake.values():
            event.set()

    def wake(self, job: Job | str) -> None:
        """Run ``job`` now instead of at its next trigger (a webhook, a button)."""
        self._bring_forward(Job(job), self._engine.now())

    async def stop(self) -> None:
        """Stop: let running jobs finish for ``shutdown_timeout``, then cancel them."""
        self.request_stop()
        tasks = list(self._tasks)  # kept in self._tasks: a second signal cancels them
        if not tasks:
            return
        if self._running:
            logger.info(
                "stopping: waiting up to %.0f s for %s",
                self._shutdown_timeout,
                ", ".join(sorted(self._running)),
            )
        try:
            pending = await self._wait_for(tasks, self._shutdown_timeout)
            for task in pending:
                task.cancel()
            if pending:
                logger.warning(
                    "cancelled %d job(s) still running after %.0f s: %s",
                    len(pending),
                    self._shutdown_timeout,
                    ", ".join(task.get_name() for task in pending),
                )
                await self._wait_for(pending, 1.5)
        finally:
            self._tasks = []
        logger.info("runner stopped")

    async def run(self, *, install_signal_handlers: bool = False) -> None:
        """Run until `request_stop` (or SIGTERM/SIGINT, if asked to handle them)."""
        loop = asyncio.get_running_loop()
        handled: list[signal.Signals] = []
        if install_signal_handlers:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self._on_signal, signum)
                handled.append(signum)
        self.start()
        try:
            await self._stopping.wait()
        finally:
            try:
                await self.stop()
            finally:
                for signum in handled:
                    loop.remove_signal_handler(signum)

    def _on_signal(self, signum: signal.Signals) -> None:
        if self._stopping.is_set():
            logger.warning("%s again: cancelling running jobs now", signum.name)
            for task in self._tasks:
                task.cancel()
            return
        logger.info("%s received: stopping gracefully", signum.name)
        self.request_stop()

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- loops -------------------------------------------------------------

    async def _loop(self, job: Job) -> None:
        schedule = self._triggers.schedule(job)
        if job.at_start:
            self._next[job] = self._engine.now()
        else:
            self._next[job] = await self._first_run(job, schedule)
        while await self._until_due(job):
            await self._run(job)
            self._next[job] = schedule.next_after(self._engine.now())

    def _bring_forward(self, job: Job, when: datetime) -> None:
        """Run ``job`` at ``when`` too, besides its trigger (once, if it is past)."""
        self._wakes[job].add(when)
        self._wake[job].set()

    async def _until_due(self, job: Job) -> bool:
        """Sleep until ``job``'s trigger or an earlier wake-up; False on stop."""
        wake, wakes = self._wake[job], self._wakes[job]
        while not self._stopping.is_set():
            now = self._engine.now()
            seconds = (min([self._next[job], *wakes]) - now).total_seconds()
            if seconds <= 0:
                wakes.difference_update([when for when in wakes if when <= now])
                return True
            wake.clear()
            await self._wait_event(wake, min(seconds, _LONGEST_SLEEP))
        return False

    async def _first_run(self, job: Job, schedule: Schedule) -> datetime:
        """Return when a job first runs: now if a run was missed, else its next time."""
        now = self._engine.now()
        try:
            runs = await self._engine.store.recent_job_runs(job=job.value, limit=1)
        except Exception:
            logger.exception("could not read the history of %s; it runs on time", job)
            runs = []
        if runs and schedule.next_after(runs[0].started_at) <= now:
            return now
        return schedule.next_after(now)

    async def _wait_event(self, event: asyncio.Event, seconds: float) -> None:
        """Wait until ``event`` is set or ``seconds`` passed on the runner's sleep."""
        waiter = asyncio.create_task(event.wait())
        try:
            await self._wait_for([waiter], seconds)
        finally:
            waiter.cancel()

    async def _wait_for(self, tasks: Iterable[_F], seconds: float) -> set[_F]:
        """Wait for ``tasks``, ``seconds`` at most (runner time); those unfinished."""
        pending = set(tasks)
        timer = asyncio.ensure_future(self._sleep(seconds))
        try:
            while pending and not timer.done():
                waiting: set[asyncio.Future[Any]] = {*pending, timer}
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                pending = {task for task in pending if not task.done()}
        finally:
            timer.cancel()
        return pending

    async def _run(self, job: Job) -> None:
        self._running[job] = self._monotonic()
        try:
            result = await self._engine.run_job(job, handler=self._handler)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("job %s failed", job, extra={"calsync_job": job})
            return
        finally:
            self._running.pop(job, None)
            self._warned.discard(job)
        self._after(job, result)

    def _after(self, job: Job, result: JobResult) -> None:
        """Chain the jobs: follow-ups run at once, a check at the result's wake_at."""
        if isinstance(result, SyncDueResult):
            _log_sync(result)
        now = self._engine.now()
        for follow_up in result.follow_ups:
            self._bring_forward(follow_up, now)
        if result.wake_at is not None:
            self._bring_forward(Job.CHECK_NOTIFICATIONS, result.wake_at)
        if isinstance(result, DispatchResult) and (result.delivered or result.dead):
            logger.info(
                "dispatched: %d delivered, %d to retry, %d dead",
                result.delivered,
                result.retried,
                result.dead,
                extra={"calsync_job": job},
            )
        for listener in self._listeners:
            try:
                listener(job, result)
            except Exception:
                logger.exception("a runner listener failed on %s", job)

    async def _watchdog(self) -> None:
        while not self._stopping.is_set():
            now = self._monotonic()
            for job, started in list(self._running.items()):
                limit: timedelta = getattr(self._deadlines, job)
                running = now - started
                if running > limit.total_seconds() and job not in self._warned:
                    self._warned.add(job)
                    logger.warning(
                        "job %s has been running for %.0f s, past its %.0f s deadline",
                        job,
                        running,
                        limit.total_seconds(),
                        extra={"calsync_job": job, "calsync_running_s": running},
                    )
            await self._wait_event(self._stopping, self._watch_every())

    def _watch_every(self) -> float:
        shortest: timedelta = min(attrs.astuple(self._deadlines))
        return min(_WATCH_EVERY, max(shortest.total_seconds() / 2, 0.05))


def _log_sync(result: SyncDueResult) -> None:
    if not result.results:
        return
    counts = result.counts
    logger.info(
        "synced %d calendar(s): %s",
        counts["synced"],
        ", ".join(
            f"{count} {name}" for name, count in counts.items() if name != "synced"
        ),
        extra={"calsync_job": "sync_due", "calsync_counts": counts},
    )
