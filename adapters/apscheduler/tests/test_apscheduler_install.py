"""install/uninstall: calsync's jobs next to the host's, in a store of their own."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from _aps_support import eventually
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.background import BackgroundScheduler

from calsync import (
    Engine,
    LoggingHandler,
    Schedule,
    SQLiteStore,
    Store,
    Triggers,
    ValidationError,
)
from calsync_apscheduler import ALIAS, JOBS, ScheduleTrigger, install, uninstall


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """Installing does not depend on the store: SQLite only, here."""
    return SQLiteStore(tmp_path / "calsync.db")


CALSYNC_IDS = [f"calsync.{job}" for job in JOBS]  # in install's order


def host_tick(path: str) -> None:
    """The host's own job: it appends a line to a file (picklable by reference)."""
    with open(path, "a", encoding="utf-8") as ticks:
        ticks.write("tick\n")


def ticks(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def add_host_job(scheduler: AsyncIOScheduler, path: Path) -> None:
    scheduler.add_job(
        host_tick, "interval", seconds=0.3, args=[str(path)], id="host.tick"
    )


async def job_runs(engine: Engine, job: str) -> int:
    return len(await engine.store.recent_job_runs(job=job, limit=1000))


async def all_ran_once(engine: Engine) -> bool:
    """Whether the jobs that run at start (all but cleanup) have run."""
    return all([await job_runs(engine, job) for job in JOBS[:3]])


def test_each_job_has_a_stable_id_and_never_skips_a_late_run(
    scheduler: AsyncIOScheduler, engine: Engine
) -> None:
    jobs = install(scheduler, engine, handler=LoggingHandler())

    assert [job.id for job in jobs] == CALSYNC_IDS
    for job in jobs:
        assert job.max_instances == 1
        assert job.coalesce is True
        assert job.misfire_grace_time is None


def test_jobs_fire_on_the_calsync_schedules_they_were_given(
    scheduler: AsyncIOScheduler, engine: Engine
) -> None:
    schedules = Triggers(cleanup="daily 02:30", tz="Europe/Berlin")
    jobs = install(scheduler, engine, handler=LoggingHandler(), schedules=schedules)

    texts = {job.id: str(job.trigger.schedule) for job in jobs}
    assert texts == {
        "calsync.sync_due": "every 30s",
        "calsync.check_notifications": "every 60s",
        "calsync.dispatch_notifications": "every 10s",
        "calsync.cleanup": "daily 02:30",
    }


def test_trigger_follows_calsync_dst_rules() -> None:
    trigger = ScheduleTrigger(Schedule.parse("daily 02:30", "Europe/Berlin"))
    before_gap = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)

    first = trigger.get_next_fire_time(None, before_gap)
    second = trigger.get_next_fire_time(first, before_gap)

    # 02:30 does not exist on 2026-03-29 in Berlin: 03:30 CEST, as calsync reads it.
    assert first == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert second == datetime(2026, 3, 30, 0, 30, tzinfo=UTC)


async def test_calsync_jobs_run_next_to_a_host_job_in_a_sqlalchemy_store(
    scheduler: AsyncIOScheduler, engine: Engine, tmp_path: Path
) -> None:
    # The host's default store pickles its jobs; the bound Engine never could be.
    url = f"sqlite:///{tmp_path / 'host-jobs.db'}"
    scheduler.add_jobstore(SQLAlchemyJobStore(url=url), alias="default")
    tick_file = tmp_path / "ticks"
    add_host_job(scheduler, tick_file)

    install(scheduler, engine, handler=LoggingHandler())
    scheduler.start()
    await eventually(lambda: ticks(tick_file) >= 3)
    await eventually(lambda: all_ran_once(engine))

    assert [job.id for job in scheduler.get_jobs(jobstore="default")] == ["host.tick"]
    calsync_ids = sorted(job.id for job in scheduler.get_jobs(jobstore=ALIAS))
    assert calsync_ids == sorted(CALSYNC_IDS)


async def test_installing_twice_keeps_exactly_four_calsync_jobs(
    scheduler: AsyncIOScheduler, engine: Engine, tmp_path: Path
) -> None:
    add_host_job(scheduler, tmp_path / "ticks")
    scheduler.start()

    install(scheduler, engine, handler=LoggingHandler())
    install(scheduler, engine, handler=LoggingHandler(), schedules=Triggers("every 1m"))

    ids = sorted(job.id for job in scheduler.get_jobs())
    assert ids == sorted([*CALSYNC_IDS, "host.tick"])
    sync_due = scheduler.get_job("calsync.sync_due")
    assert str(sync_due.trigger.schedule) == "every 1m"


async def test_sync_check_and_dispatch_run_at_start_and_cleanup_waits(
    scheduler: AsyncIOScheduler, engine: Engine
) -> None:
    install(scheduler, engine, handler=LoggingHandler())
    scheduler.start()

    await eventually(lambda: all_ran_once(engine))
    assert await job_runs(engine, "sync_due") == 1
    assert await job_runs(engine, "check_notifications") == 1
    assert await job_runs(engine, "dispatch_notifications") == 1
    assert await job_runs(engine, "cleanup") == 0


async def test_a_run_late_past_apschedulers_default_grace_still_runs(
    scheduler: AsyncIOScheduler, engine: Engine
) -> None:
    install(scheduler, engine, handler=LoggingHandler())
    time.sleep(1.5)  # the host blocks its event loop: the first runs are 1.5 s late
    scheduler.start()

    await eventually(lambda: job_runs(engine, "sync_due"))

    assert await job_runs(engine, "sync_due") == 1


async def test_coroutine_jobs_run_on_the_loop_when_the_host_default_is_a_thread_pool(
    engine: Engine, tmp_path: Path
) -> None:
    scheduler = AsyncIOScheduler(
        timezone=UTC, executors={"default": ThreadPoolExecutor(2)}
    )
    install(scheduler, engine, handler=LoggingHandler())
    scheduler.start()
    try:
        await eventually(lambda: job_runs(engine, "sync_due"))
        assert await job_runs(engine, "sync_due") == 1
    finally:
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0.1)


async def test_uninstall_removes_only_calsync_jobs_and_is_idempotent(
    scheduler: AsyncIOScheduler, engine: Engine, tmp_path: Path
) -> None:
    tick_file = tmp_path / "ticks"
    add_host_job(scheduler, tick_file)
    install(scheduler, engine, handler=LoggingHandler())
    scheduler.start()
    await eventually(lambda: all_ran_once(engine))

    uninstall(scheduler)
    uninstall(scheduler)

    assert [job.id for job in scheduler.get_jobs()] == ["host.tick"]
    assert ALIAS not in scheduler._jobstores  # the store calsync added is gone
    assert ALIAS not in scheduler._executors
    seen = ticks(tick_file)
    await eventually(lambda: ticks(tick_file) >= seen + 2)


async def test_install_after_uninstall_runs_the_jobs_again(
    scheduler: AsyncIOScheduler, engine: Engine
) -> None:
    install(scheduler, engine, handler=LoggingHandler())
    scheduler.start()
    await eventually(lambda: all_ran_once(engine))
    uninstall(scheduler)
    before = await job_runs(engine, "sync_due")

    jobs = install(scheduler, engine, handler=LoggingHandler())

    async def ran_again() -> bool:
        return await job_runs(engine, "sync_due") > before

    await eventually(ran_again)
    assert [job.id for job in jobs] == CALSYNC_IDS
    assert await job_runs(engine, "sync_due") == before + 1


def test_install_refuses_a_scheduler_that_is_not_asyncio(engine: Engine) -> None:
    with pytest.raises(ValidationError, match="needs an AsyncIOScheduler"):
        install(BackgroundScheduler(), engine, handler=LoggingHandler())


def test_uninstall_leaves_a_scheduler_without_calsync_alone() -> None:
    scheduler = AsyncIOScheduler(timezone=UTC)
    scheduler.add_job(host_tick, "interval", minutes=1, args=["unused"], id="host")

    uninstall(scheduler)

    assert [job.id for job in scheduler.get_jobs()] == ["host"]


async def test_a_job_that_raises_is_logged_and_the_scheduler_keeps_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # An Engine whose store was never opened: every job raises a StoreError.
    broken = Engine(SQLiteStore(tmp_path / "never-opened.db"))
    scheduler = AsyncIOScheduler(timezone=UTC)
    tick_file = tmp_path / "ticks"
    add_host_job(scheduler, tick_file)
    install(scheduler, broken, handler=LoggingHandler())
    try:
        with caplog.at_level(logging.ERROR, logger="apscheduler"):
            scheduler.start()
            await eventually(lambda: ticks(tick_file) >= 3)
            await eventually(lambda: len(raised_jobs(caplog)) >= 2)
        assert scheduler.running
    finally:
        scheduler.shutdown(wait=False)
        await asyncio.sleep(0.1)
        await broken.close()

    raised = raised_jobs(caplog)
    assert 'Job "calsync.sync_due' in raised
    assert 'Job "calsync.check_notifications' in raised


def raised_jobs(caplog: pytest.LogCaptureFixture) -> set[str]:
    """The jobs APScheduler logged as raising, as ``Job "<id>`` prefixes."""
    return {
        record.getMessage().split(" (trigger")[0]
        for record in caplog.records
        if record.name.startswith("apscheduler") and record.levelno == logging.ERROR
    }
