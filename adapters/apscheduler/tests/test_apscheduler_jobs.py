"""The jobs on a running scheduler: reminders, misfires, follow-ups, failures.

APScheduler runs on the real clock, so the tests wait for what the jobs did
(`eventually`, with a safety timeout) and assert on outcomes and on the times
the scheduler meant jobs to run, never on how soon something happened. Reminders
are due for a whole lead (a minute or more), so a slow start does not miss them.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import pytest
from _aps_support import Executions, Recorder, eventually, feed, soon
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger

from calsync import Delivery, Engine, Triggers
from calsync.stores import NotificationStatus
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
    await eventually(lambda: len(recorder.deliveries) >= 2)
    dispatched = await runs_of(engine, "dispatch_notifications")

    async def dispatched_twice_more() -> bool:
        return await runs_of(engine, "dispatch_notifications") >= dispatched + 2

    await eventually(dispatched_twice_more)  # a duplicate would show by now
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
    job_ids = [job.id for job in scheduler.get_jobs()]
    await eventually(lambda: all(executions.of(job_id) for job_id in job_ids))

    scheduler.pause()
    paused_at = datetime.now(UTC)
    first_missed = {job.id: job.next_run_time for job in scheduler.get_jobs()}
    await asyncio.sleep(3.5)  # at least three runs of each job are missed
    resumed_at = datetime.now(UTC)
    scheduler.resume()

    def ran_since(job_id: str, first: datetime) -> list[datetime]:
        ran = [e.scheduled_run_time for e in executions.of(job_id)]
        return [when for when in ran if when >= first]

    # Each job runs again (its catch-up run); then no new run starts.
    await eventually(
        lambda: all(ran_since(job_id, first) for job_id, first in first_missed.items())
    )
    scheduler.pause()

    for job_id, first in first_missed.items():
        trigger = scheduler.get_job(job_id).trigger
        missed = fire_times(trigger, first, until=resumed_at)
        assert len(missed) >= 3, job_id
        caught_up = [when for when in ran_since(job_id, first) if when <= resumed_at]
        assert caught_up == [missed[-1]], job_id
        job = job_id.removeprefix("calsync.")

        async def recorded_as_often(
            job: str = job, job_id: str = job_id, first: datetime = first
        ) -> bool:
            # Runs still under way at the pause finish; each is one Engine run.
            engine_runs = await runs_of(engine, job, paused_at)
            return engine_runs == len(ran_since(job_id, first))

        await eventually(recorded_as_often)


async def test_a_reminder_from_a_feed_change_is_dispatched_without_waiting(
    feeds: FeedServer,
    engine: Engine,
    scheduler: AsyncIOScheduler,
    recorder: Recorder,
    executions: Executions,
) -> None:
    retro = ("retro", datetime.now(UTC) + timedelta(days=2))
    feeds.set("/team.ics", feed(retro))
    lead = timedelta(hours=1)
    team = await engine.add_calendar(feeds.url("/team.ics"), name="Team", leads=[lead])
    install(scheduler, engine, handler=recorder, schedules=FOLLOW_UPS_ONLY)
    scheduler.start()
    await eventually(lambda: synced(engine, team.id))
    dispatch = scheduler.get_job("calsync.dispatch_notifications")
    await eventually(lambda: executions.of(dispatch.id))  # the run at start
    hourly_at = dispatch.next_run_time

    # An event in half an hour: its reminder is due as soon as the sync sees it.
    starts = datetime.now(UTC) + timedelta(minutes=30)
    feeds.set("/team.ics", feed(retro, ("fire", starts)))
    await engine.request_sync(team.id)
    await eventually(lambda: recorder.deliveries)
    # The run's event comes once the dispatch that delivered has returned.
    await eventually(lambda: len(executions.of(dispatch.id)) > 1)

    assert recorder.summaries == ["fire"]
    # A follow-up ran the dispatch, long before its hourly run was due.
    follow_ups = executions.of(dispatch.id)[1:]
    assert all(run.scheduled_run_time < hourly_at for run in follow_ups)
    upcoming = scheduler.get_job(dispatch.id).next_run_time
    assert upcoming - datetime.now(UTC) > timedelta(minutes=55)


async def test_a_follow_up_asked_for_while_the_job_runs_runs_after_it(
    feeds: FeedServer,
    engine: Engine,
    scheduler: AsyncIOScheduler,
    executions: Executions,
) -> None:
    # The first dispatch waits in the handler while a new calendar's reminder
    # asks for a dispatch. APScheduler runs one instance at a time and would
    # skip that run (the next is an hour away); it runs once the first ends.
    release = asyncio.Event()
    summaries: list[str] = []

    async def handler(delivery: Delivery) -> None:
        summaries.append(delivery.occurrence.summary if delivery.occurrence else "")
        await release.wait()

    starts = datetime.now(UTC) + timedelta(minutes=30)  # reminders due at once
    feeds.set("/a.ics", feed(("first", starts)))
    feeds.set("/b.ics", feed(("second", starts)))
    await engine.add_calendar(feeds.url("/a.ics"), leads=[timedelta(hours=1)])
    install(scheduler, engine, handler=handler, schedules=FOLLOW_UPS_ONLY)
    scheduler.start()
    await eventually(lambda: summaries)
    asked = len(executions.of("calsync.sync_due"))
    await engine.add_calendar(feeds.url("/b.ics"), leads=[timedelta(hours=1)])

    def asked_while_running() -> bool:
        syncs = executions.of("calsync.sync_due")[asked:]
        return any("dispatch_notifications" in e.retval.follow_ups for e in syncs)

    await eventually(asked_while_running)
    release.set()
    await eventually(lambda: len(summaries) == 2)

    assert summaries == ["first", "second"]
    assert len(executions.of("calsync.dispatch_notifications")) >= 2


async def test_the_check_wakes_at_the_next_fire_time(
    feeds: FeedServer, engine: Engine, scheduler: AsyncIOScheduler, recorder: Recorder
) -> None:
    starts = soon(3, lead=LEAD)
    fire_at = starts - LEAD
    feeds.set("/team.ics", feed(("standup", starts)))
    await engine.add_calendar(feeds.url("/team.ics"), name="Team", leads=[LEAD])
    install(scheduler, engine, handler=recorder, schedules=FOLLOW_UPS_ONLY)

    scheduler.start()
    # Checks and dispatches run hourly: only the check's own wake-up at the fire
    # time can deliver the reminder before the safety timeout.
    await eventually(lambda: recorder.deliveries)

    assert fire_at <= recorder.arrived[0]


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
        await eventually(lambda: recorder.deliveries)
        syncs = await runs_of(engine, "sync_due")

        async def synced_again() -> bool:
            return await runs_of(engine, "sync_due") > syncs

        await eventually(synced_again)

    assert recorder.summaries == ["standup"]
    assert (await engine.get_calendar(broken.id)).state.consecutive_failures >= 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("Broken" in message for message in warnings), warnings


async def test_a_job_the_host_paused_stays_paused_despite_follow_ups(
    feeds: FeedServer,
    engine: Engine,
    scheduler: AsyncIOScheduler,
    recorder: Recorder,
    executions: Executions,
) -> None:
    starts = datetime.now(UTC) + timedelta(minutes=30)  # its reminder is due at once
    feeds.set("/team.ics", feed(("standup", starts)))
    lead = timedelta(hours=1)
    team = await engine.add_calendar(feeds.url("/team.ics"), name="Team", leads=[lead])
    install(scheduler, engine, handler=recorder, schedules=FOLLOW_UPS_ONLY)
    scheduler.pause_job("calsync.dispatch_notifications")

    scheduler.start()

    def asked_for_a_dispatch() -> bool:
        ran = executions.of("calsync.sync_due") + executions.of(
            "calsync.check_notifications"
        )
        return any("dispatch_notifications" in e.retval.follow_ups for e in ran)

    await eventually(asked_for_a_dispatch)
    # Two more syncs (every second) after the ask: time for a wrong dispatch to run.
    seen = len(executions.of("calsync.sync_due"))
    await eventually(lambda: len(executions.of("calsync.sync_due")) >= seen + 2)

    assert scheduler.get_job("calsync.dispatch_notifications").next_run_time is None
    assert recorder.deliveries == []
    assert len(await engine.store.list_notifications(calendar_id=team.id)) == 1
