"""The jobs on a running scheduler: reminders, misfires, follow-ups, failures."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest
from _aps_support import Executions, Recorder, eventually, feed, soon
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger

from calsync import Engine, NotificationStatus, Triggers
from calsync.testing import FeedServer
from calsync_apscheduler import install

LEAD = timedelta(minutes=1)
EVERY_SECOND = Triggers(
    sync_due="every 1s",
    check_notifications="every 1s",
    dispatch_notifications="every 1s",
    cleanup="every 1s",
)
# Only syncs are frequent: a check or a dispatch comes from a follow-up.
FOLLOW_UPS_ONLY = Triggers(
    sync_due="every 1s",
    check_notifications="every 1h",
    dispatch_notifications="every 1h",
)


async def runs_of(engine: Engine, job: str, since: datetime | None = None) -> int:
    runs = await engine.store.recent_job_runs(job=job, limit=1000)
    return sum(1 for run in runs if since is None or run.started_at >= since)


def fire_times(
    trigger: BaseTrigger, first: datetime, *, until: datetime
) -> list[datetime]:
    """The fire times of a trigger from ``first`` up to ``until``."""
    times = [first]
    while (following := trigger.get_next_fire_time(times[-1], until)) <= until:
        times.append(following)
    return times


async def synced(engine: Engine, calendar_id: str) -> bool:
    calendar = await engine.get_calendar(calendar_id)
    return calendar.state.last_attempt_at is not None


async def test_reminders_falling_due_are_delivered_exactly_once(
    feeds: FeedServer, engine: Engine, scheduler: AsyncIOScheduler, recorder: Recorder
) -> None:
    later = datetime.now(UTC) + timedelta(days=1)
    feeds.set(
        "/team.ics",
        feed(
            ("standup", soon(1, lead=LEAD)),
            ("review", soon(2, lead=LEAD)),
            ("retro", later),
        ),
    )
    team = await engine.add_calendar(feeds.url("/team.ics"), name="Team", leads=[LEAD])
    install(scheduler, engine, handler=recorder, schedules=EVERY_SECOND)

    scheduler.start()
    await eventually(lambda: len(recorder.deliveries) >= 2, within=8)
    dispatched = await runs_of(engine, "dispatch_notifications")
    await asyncio.sleep(2.5)  # several more cycles of every job

    assert await runs_of(engine, "dispatch_notifications") >= dispatched + 2
    assert sorted(recorder.summaries) == ["review", "standup"]
    assert len(set(recorder.ids)) == 2
    records = await engine.store.list_notifications(calendar_id=team.id)
    assert {record.id: record.status for record in records} == dict.fromkeys(
        recorder.ids, NotificationStatus.DELIVERED
    )


async def test_runs_missed_while_paused_coalesce_into_one_run_per_job(
    engine: Engine, scheduler: AsyncIOScheduler, executions: Executions
) -> None:
    install(scheduler, engine, handler=Recorder(), schedules=EVERY_SECOND)
    scheduler.start()
    await asyncio.sleep(1.2)

    scheduler.pause()
    paused_at = datetime.now(UTC)
    first_missed = {job.id: job.next_run_time for job in scheduler.get_jobs()}
    await asyncio.sleep(3.5)  # three or four runs of each job are missed
    resumed_at = datetime.now(UTC)
    scheduler.resume()
    await asyncio.sleep(0.5)
    scheduler.pause()
    await asyncio.sleep(0.3)  # let the runs under way finish

    for job_id, first in first_missed.items():
        trigger = scheduler.get_job(job_id).trigger
        missed = fire_times(trigger, first, until=resumed_at)
        ran = [e.scheduled_run_time for e in executions.of(job_id)]
        ran_since_pause = [when for when in ran if when >= first]
        assert len(missed) >= 3, job_id
        assert [when for when in ran_since_pause if when <= resumed_at] == [missed[-1]]
        engine_runs = await runs_of(engine, job_id.removeprefix("calsync."), paused_at)
        assert engine_runs == len(ran_since_pause), job_id


async def test_a_reminder_from_a_feed_change_is_dispatched_without_waiting(
    feeds: FeedServer, engine: Engine, scheduler: AsyncIOScheduler, recorder: Recorder
) -> None:
    retro = ("retro", datetime.now(UTC) + timedelta(days=2))
    feeds.set("/team.ics", feed(retro))
    team = await engine.add_calendar(feeds.url("/team.ics"), name="Team", leads=[LEAD])
    install(scheduler, engine, handler=recorder, schedules=FOLLOW_UPS_ONLY)
    scheduler.start()
    await eventually(lambda: synced(engine, team.id), within=5)

    # An event starting in 30 s: its reminder is due as soon as the sync sees it.
    changed_at = datetime.now(UTC)
    starts = changed_at + timedelta(seconds=30)
    feeds.set("/team.ics", feed(retro, ("fire", starts)))
    await engine.request_sync(team.id)
    await eventually(lambda: recorder.deliveries, within=5)

    assert recorder.summaries == ["fire"]
    assert recorder.arrived[0] - changed_at < timedelta(seconds=3)
    dispatch = scheduler.get_job("calsync.dispatch_notifications")
    assert dispatch.next_run_time - datetime.now(UTC) > timedelta(minutes=55)


async def test_the_check_wakes_at_the_next_fire_time(
    feeds: FeedServer, engine: Engine, scheduler: AsyncIOScheduler, recorder: Recorder
) -> None:
    starts = soon(2, lead=LEAD)
    fire_at = starts - LEAD
    feeds.set("/team.ics", feed(("standup", starts)))
    await engine.add_calendar(feeds.url("/team.ics"), name="Team", leads=[LEAD])
    install(scheduler, engine, handler=recorder, schedules=FOLLOW_UPS_ONLY)

    scheduler.start()
    await eventually(lambda: recorder.deliveries, within=8)

    assert fire_at <= recorder.arrived[0] < fire_at + timedelta(seconds=1.5)


async def test_a_failing_feed_does_not_stop_the_other_calendar_or_the_jobs(
    feeds: FeedServer,
    engine: Engine,
    scheduler: AsyncIOScheduler,
    recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    feeds.fail("/broken.ics", 500)
    feeds.set("/team.ics", feed(("standup", soon(1, lead=LEAD))))
    broken = await engine.add_calendar(feeds.url("/broken.ics"), name="Broken")
    await engine.add_calendar(feeds.url("/team.ics"), name="Team", leads=[LEAD])
    install(scheduler, engine, handler=recorder, schedules=EVERY_SECOND)

    with caplog.at_level(logging.WARNING, logger="calsync"):
        scheduler.start()
        await eventually(lambda: recorder.deliveries, within=8)
    syncs = await runs_of(engine, "sync_due")
    await asyncio.sleep(1.5)

    assert recorder.summaries == ["standup"]
    assert (await engine.get_calendar(broken.id)).state.consecutive_failures >= 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("Broken" in message for message in warnings), warnings
    assert await runs_of(engine, "sync_due") > syncs


async def test_a_job_the_host_paused_stays_paused_despite_follow_ups(
    feeds: FeedServer,
    engine: Engine,
    scheduler: AsyncIOScheduler,
    recorder: Recorder,
    executions: Executions,
) -> None:
    starts = datetime.now(UTC) + timedelta(seconds=30)  # its reminder is due at once
    feeds.set("/team.ics", feed(("standup", starts)))
    team = await engine.add_calendar(feeds.url("/team.ics"), name="Team", leads=[LEAD])
    install(scheduler, engine, handler=recorder, schedules=FOLLOW_UPS_ONLY)
    scheduler.pause_job("calsync.dispatch_notifications")

    scheduler.start()
    await eventually(lambda: synced(engine, team.id), within=5)
    await asyncio.sleep(0.5)

    asked = [e.retval.follow_ups for e in executions.of("calsync.sync_due")]
    assert any("dispatch_notifications" in follow_ups for follow_ups in asked)
    assert scheduler.get_job("calsync.dispatch_notifications").next_run_time is None
    assert recorder.deliveries == []
    assert len(await engine.store.list_notifications(calendar_id=team.id)) == 1
