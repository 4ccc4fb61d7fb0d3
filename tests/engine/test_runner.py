"""The bundled Runner in this process on a virtual clock: real feeds, real SQLite.

The Engine and the Runner share one `ManualClock`, so time moves only when a test
moves it. A test waits for what the runner did (a job's result, a delivery, a log
line), with a generous safety timeout that fails only when it never happens; no
assertion depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web

from calsync import (
    CheckResult,
    Delivery,
    Engine,
    HttpFetcher,
    Job,
    Runner,
    SQLiteStore,
    Triggers,
    ValidationError,
)
from calsync.engine import SyncDueResult
from calsync.stores import JobOutcome, JobRun
from calsync.testing import FeedServer, ManualClock

from .conftest import T0, Recorder, event, ics, settings

# Long enough for any machine; reached only when what is awaited never happens.
SAFETY = 60.0
HOURLY = Triggers(
    sync_due="every 1h",
    check_notifications="every 1h",
    dispatch_notifications="every 1h",
)


@pytest.fixture
async def live(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Engine]:
    store = SQLiteStore(tmp_path / "runner.db")
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    async with Engine(store, fetcher, settings=settings(), clock=clock) as engine:
        yield engine


def virtual_runner(
    engine: Engine, clock: ManualClock, handler: object = None, **options: object
) -> Runner:
    """A Runner on the test's clock: it sleeps and measures on ``clock`` alone."""
    return Runner(
        engine,
        handler if handler is not None else Recorder(),  # type: ignore[arg-type]
        sleep=clock.sleep,
        monotonic=clock.monotonic,
        **options,  # type: ignore[arg-type]
    )


class Results:
    """A runner listener: every job result, and a way to wait for the next one."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, object]] = []
        self._changed = asyncio.Condition()

    def __call__(self, job: str, result: object) -> None:
        self.runs.append((job, result))
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def of(self, job: str) -> list[object]:
        return [result for name, result in self.runs if name == job]

    async def wait(self, what: str, check: Callable[[], object]) -> None:
        """Wait until ``check()`` holds, re-checked after every job run."""

        async def holds() -> None:
            async with self._changed:
                await self._changed.wait_for(check)

        try:
            await asyncio.wait_for(holds(), SAFETY)
        except TimeoutError:
            pytest.fail(f"never happened: {what}; runs: {[n for n, _ in self.runs]}")


def hourly_runner(
    engine: Engine, clock: ManualClock
) -> tuple[Runner, Results, list[datetime]]:
    """A runner on hourly triggers, its results, and when each delivery came."""
    delivered_at: list[datetime] = []

    async def handler(delivery: Delivery) -> None:
        delivered_at.append(clock.now)

    results = Results()
    runner = virtual_runner(engine, clock, handler, triggers=HOURLY)
    runner.on_result(results)
    return runner, results, delivered_at


class HangingFeed:
    """A real HTTP server whose feed never answers; ``arrived`` is set on a request."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _hang(self, request: web.Request) -> web.Response:
        self.arrived.set()
        await asyncio.Event().wait()  # until the client goes away
        raise AssertionError("unreachable")

    async def __aenter__(self) -> HangingFeed:
        app = web.Application()
        app.router.add_get("/slow.ics", self._hang)
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=0.1
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/slow.ics"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def wait_for_request(self) -> None:
        await asyncio.wait_for(self.arrived.wait(), SAFETY)


@pytest.fixture
async def hanging() -> AsyncIterator[HangingFeed]:
    async with HangingFeed() as server:
        yield server


async def test_runner_fires_a_reminder_at_its_fire_time_and_once(
    live: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    start, lead = T0 + timedelta(seconds=50), timedelta(seconds=20)
    fire_at = start - lead
    feeds.set("/a.ics", ics(event("soon", start)))
    await live.add_calendar(feeds.url("/a.ics"), leads=[lead])
    # Hourly triggers: only the check's own wake-up can deliver at the fire time.
    runner, results, delivered_at = hourly_runner(live, clock)

    def knows_fire_time() -> bool:
        checks = results.of("check_notifications")
        return any(isinstance(r, CheckResult) and r.wake_at for r in checks)

    async with runner:
        await results.wait("a check that knows the next fire time", knows_fire_time)
        assert delivered_at == []
        wake_at = next(
            r.wake_at
            for r in results.of("check_notifications")
            if isinstance(r, CheckResult) and r.wake_at
        )
        assert fire_at <= wake_at < fire_at + timedelta(seconds=1)
        clock.set(wake_at)
        await results.wait("the delivery", lambda: delivered_at)
        assert delivered_at == [wake_at]

        # Two hours on, every job has run again: nothing is delivered twice.
        dispatched = len(results.of("dispatch_notifications"))
        clock.advance(timedelta(hours=2))
        await results.wait(
            "another dispatch",
            lambda: len(results.of("dispatch_notifications")) > dispatched,
        )
    assert delivered_at == [wake_at]


async def test_a_syncs_wake_at_brings_the_check_forward_to_a_far_reminder(
    live: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    # The event is past the check's reach at start (its reminder fires in 20
    # minutes): only the sync's wake_at can run a check at the fire time.
    fire_at = T0 + timedelta(minutes=20)
    feeds.set("/a.ics", ics(event("review", T0 + timedelta(minutes=30))))
    await live.add_calendar(feeds.url("/a.ics"), leads=["10m"])
    runner, results, delivered_at = hourly_runner(live, clock)
    async with runner:
        await results.wait("a sync", lambda: results.of(Job.SYNC_DUE))
        [synced] = results.of(Job.SYNC_DUE)
        assert isinstance(synced, SyncDueResult)
        assert synced.wake_at is not None
        assert fire_at <= synced.wake_at < fire_at + timedelta(seconds=1)
        checks = len(results.of(Job.CHECK_NOTIFICATIONS))
        await results.wait(
            "the follow-up check",
            lambda: len(results.of(Job.CHECK_NOTIFICATIONS)) > checks,
        )
        assert all(
            isinstance(r, CheckResult) and r.wake_at is None
            for r in results.of(Job.CHECK_NOTIFICATIONS)
        )
        clock.set(synced.wake_at)
        await results.wait("the delivery", lambda: delivered_at)
    assert delivered_at == [synced.wake_at]


async def test_wake_runs_a_job_now_by_name_or_as_a_job(
    live: Engine, clock: ManualClock
) -> None:
    results = Results()
    runner = virtual_runner(live, clock, triggers=HOURLY)
    runner.on_result(results)
    async with runner:
        await results.wait("a dispatch", lambda: results.of(Job.DISPATCH_NOTIFICATIONS))
        assert results.of(Job.CLEANUP) == []
        runner.wake("cleanup")
        await results.wait("a cleanup", lambda: results.of(Job.CLEANUP))
        runner.wake(Job.CLEANUP)
        await results.wait("another", lambda: len(results.of(Job.CLEANUP)) == 2)
        with pytest.raises(ValueError, match="claim_all"):
            runner.wake("claim_all")
    assert all(isinstance(job, Job) for job, _ in results.runs)


async def test_stop_cancels_a_stuck_sync_after_the_timeout_and_gives_its_lease_back(
    live: Engine, hanging: HangingFeed, clock: ManualClock
) -> None:
    calendar = await live.add_calendar(hanging.url)
    timeout = timedelta(seconds=7)
    runner = virtual_runner(live, clock, triggers=HOURLY, shutdown_timeout=timeout)
    runner.start()
    await hanging.wait_for_request()  # the first cycle's sync now hangs on the feed
    await stop_on_clock(runner, clock, timeout)
    lease = await live.store.claim_calendar(
        calendar.id, live.now(), worker="other", lease_ttl=timedelta(minutes=1)
    )
    assert lease is not None


async def test_second_sigterm_cancels_jobs_still_running(
    live: Engine, hanging: HangingFeed, clock: ManualClock
) -> None:
    await live.add_calendar(hanging.url)
    timeout = timedelta(hours=2)
    runner = virtual_runner(live, clock, triggers=HOURLY, shutdown_timeout=timeout)
    running = asyncio.create_task(runner.run(install_signal_handlers=True))
    await hanging.wait_for_request()
    os.kill(os.getpid(), signal.SIGTERM)
    # The graceful stop waits two hours of a clock that never moves here...
    await stopping_on(clock, clock.now + timeout)
    assert not running.done()
    os.kill(os.getpid(), signal.SIGTERM)  # ...so only the second signal ends it.
    await asyncio.wait_for(running, SAFETY)


async def test_watchdog_logs_a_job_stuck_past_its_deadline(
    live: Engine,
    hanging: HangingFeed,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await live.add_calendar(hanging.url)
    caplog.set_level(logging.WARNING, logger="calsync.runner")
    timeout = timedelta(seconds=7)
    runner = virtual_runner(
        live,
        clock,
        triggers=HOURLY,
        deadlines={"sync_due": timedelta(minutes=2)},
        shutdown_timeout=timeout,
    )
    runner.start()
    try:
        await hanging.wait_for_request()
        clock.advance(timedelta(minutes=3))
        await asyncio.wait_for(_until(lambda: "past its" in caplog.text), SAFETY)
    finally:
        await stop_on_clock(runner, clock, timeout)
    assert "job sync_due has been running for 180 s, past its 120 s" in caplog.text


async def test_a_missed_cleanup_runs_once_at_start(
    live: Engine, clock: ManualClock
) -> None:
    long_ago = live.now() - timedelta(days=3)
    await live.store.record_job_run(
        JobRun("cleanup", long_ago, long_ago, JobOutcome.OK)
    )
    results = Results()
    runner = virtual_runner(live, clock, triggers=HOURLY)
    runner.on_result(results)
    async with runner:
        await results.wait("the catch-up cleanup", lambda: results.of("cleanup"))
    runs = await live.store.recent_job_runs(job="cleanup")
    assert len(runs) == 2  # the old one and one catch-up run, not one per missed day


async def test_first_cycle_syncs_everything_due(
    live: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    for name in "abc":
        feeds.set(f"/{name}.ics", ics())
        await live.add_calendar(feeds.url(f"/{name}.ics"))
    results = Results()
    runner = virtual_runner(live, clock, triggers=HOURLY)
    runner.on_result(results)
    async with runner:
        await results.wait("the first sync_due", lambda: results.of("sync_due"))
    assert getattr(results.of("sync_due")[0], "counts", {}).get("synced") == 3


async def test_the_runner_waits_on_its_clock_not_on_real_time(
    live: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    feeds.set("/a.ics", ics())
    await live.add_calendar(feeds.url("/a.ics"), every="every 30m")
    results = Results()
    runner = virtual_runner(live, clock, triggers=Triggers(sync_due="every 30m"))
    runner.on_result(results)
    async with runner:
        await results.wait("the first sync", lambda: results.of("sync_due"))
        # Real time does not move the runner on: only the clock does.
        clock.advance(timedelta(minutes=30))
        await results.wait("the second sync", lambda: len(results.of("sync_due")) > 1)


def test_triggers_refuse_a_bad_schedule() -> None:
    with pytest.raises(ValidationError, match="sometimes"):
        Triggers(sync_due="sometimes")


async def stopping_on(clock: ManualClock, until: datetime) -> None:
    """Wait until the only sleeper on ``clock`` is a runner's stop, up to ``until``."""
    await asyncio.wait_for(_until(lambda: clock.sleepers == (until,)), SAFETY)


async def stop_on_clock(runner: Runner, clock: ManualClock, timeout: timedelta) -> None:
    """Stop a runner whose job hangs: move the clock past its shutdown timeout."""
    stopping = asyncio.create_task(runner.stop())
    await stopping_on(clock, clock.now + timeout)
    assert not stopping.done(), "stop did not wait for its shutdown timeout"
    clock.advance(timeout)
    await asyncio.wait_for(stopping, SAFETY)


async def _until(check: Callable[[], object]) -> None:
    """Poll ``check`` until it holds; the caller bounds the wait."""
    while not check():
        await asyncio.sleep(0.01)
