"""The bundled Runner in this process: real clock, real feed server, real SQLite."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from calsync import (
    Engine,
    HttpFetcher,
    JobOutcome,
    JobRun,
    Runner,
    SQLiteStore,
    Triggers,
    ValidationError,
)
from calsync.testing import FeedServer

from .conftest import Recorder, event, ics, settings

FAST = Triggers(
    sync_due="every 1s",
    check_notifications="every 1s",
    dispatch_notifications="every 1s",
)


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Engine]:
    store = SQLiteStore(tmp_path / "runner.db")
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    async with Engine(store, fetcher, settings=settings()) as engine:
        yield engine


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


async def test_runner_fires_a_reminder_on_time_and_once(
    live: Engine, feeds: FeedServer
) -> None:
    start = _now() + timedelta(seconds=4)
    feeds.set("/a.ics", ics(event("soon", start)))
    await live.add_calendar(feeds.url("/a.ics"), leads=[timedelta(seconds=2)])
    handler = Recorder()
    delivered_at: list[datetime] = []

    async def timed(delivery: object) -> None:
        await handler(delivery)  # type: ignore[arg-type]
        delivered_at.append(datetime.now(UTC))

    # Slow triggers: the reminder must come from the check's exact wake-up.
    triggers = Triggers(
        sync_due="every 1m",
        check_notifications="every 1m",
        dispatch_notifications="every 1m",
    )
    async with Runner(live, timed, triggers=triggers):
        deadline = time.monotonic() + 10
        while not handler.deliveries and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)
    assert len(handler.deliveries) == 1
    fire_at = start - timedelta(seconds=2)
    # With 1-minute triggers only the exact wake-up can make it this close.
    assert fire_at <= delivered_at[0] < fire_at + timedelta(seconds=3)


async def test_stop_cancels_a_stuck_sync_in_time_and_gives_its_lease_back(
    live: Engine, feeds: FeedServer
) -> None:
    feeds.set("/slow.ics", ics())
    feeds.delay("/slow.ics", 30)
    calendar = await live.add_calendar(feeds.url("/slow.ics"))
    runner = Runner(
        live, Recorder(), triggers=FAST, shutdown_timeout=timedelta(seconds=1)
    )
    runner.start()
    await asyncio.sleep(1)  # the first cycle is now waiting on the slow feed
    assert feeds.requests("/slow.ics") == ()  # still unanswered
    began = time.monotonic()
    await runner.stop()
    assert time.monotonic() - began < 3
    lease = await live.store.claim_calendar(
        calendar.id, live.now(), worker="other", lease_ttl=timedelta(minutes=1)
    )
    assert lease is not None


async def test_watchdog_logs_a_job_stuck_past_its_deadline(
    live: Engine, feeds: FeedServer, caplog: pytest.LogCaptureFixture
) -> None:
    feeds.set("/slow.ics", ics())
    feeds.delay("/slow.ics", 30)
    await live.add_calendar(feeds.url("/slow.ics"))
    caplog.set_level(logging.WARNING, logger="calsync.runner")
    runner = Runner(
        live,
        Recorder(),
        triggers=FAST,
        shutdown_timeout=timedelta(seconds=1),
        deadlines={"sync_due": timedelta(milliseconds=200)},
    )
    async with runner:
        deadline = time.monotonic() + 5
        while "past its" not in caplog.text and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    assert "job sync_due has been running for" in caplog.text


async def test_a_missed_cleanup_runs_once_at_start(live: Engine) -> None:
    long_ago = live.now() - timedelta(days=3)
    await live.store.record_job_run(
        JobRun("cleanup", long_ago, long_ago, JobOutcome.OK)
    )
    async with Runner(live, Recorder(), triggers=FAST):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            runs = await live.store.recent_job_runs(job="cleanup")
            if len(runs) > 1:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1)
    runs = await live.store.recent_job_runs(job="cleanup")
    assert len(runs) == 2  # the old one and one catch-up run, not one per missed day


async def test_first_cycle_syncs_everything_due(
    live: Engine, feeds: FeedServer
) -> None:
    for name in "abc":
        feeds.set(f"/{name}.ics", ics())
        await live.add_calendar(feeds.url(f"/{name}.ics"))
    results: list[object] = []
    runner = Runner(live, Recorder(), triggers=Triggers(sync_due="every 1h"))
    runner.on_result(
        lambda job, result: results.append(result) if job == "sync_due" else None
    )
    async with runner:
        deadline = time.monotonic() + 5
        while not results and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    assert getattr(results[0], "counts", {}).get("synced") == 3


def test_triggers_refuse_a_bad_schedule() -> None:
    with pytest.raises(ValidationError, match="sometimes"):
        Triggers(sync_due="sometimes")
