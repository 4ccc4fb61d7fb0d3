"""A runner stopped over a reminder's fire time: late within the grace, else missed."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from calsync import Engine, NotificationStatus

from .conftest import (
    Runners,
    TimedFeedServer,
    Timeline,
    event,
    eventually,
    expected_id,
    ics,
    job_ran_since,
    sqlite_only,
    synced_since,
)

LEAD = timedelta(seconds=1)
GRACE = timedelta(seconds=2)


@sqlite_only
async def test_downtime_within_grace_fires_once_and_past_grace_is_missed(
    engine: Engine, runners: Runners, feeds: TimedFeedServer
) -> None:
    time = Timeline()
    early, late = time.at(4), time.at(6)
    feeds.set("/team.ics", ics(event("early", early), event("late", late)))
    calendar = await engine.add_calendar(
        feeds.url("/team.ics"), every="15m", leads=[LEAD]
    )
    options = {"late_grace": GRACE.total_seconds()}
    runner = runners.spawn(**options)
    synced = await synced_since(engine, calendar.id, time.origin)
    assert synced.state.last_success_at is not None
    after_sync = synced.state.last_success_at

    async def checked() -> bool:
        return await job_ran_since(engine, "check_notifications", after_sync)

    await eventually(checked, within=5, what="a check after the first sync")
    await runner.stop()
    assert time.until(early - LEAD) > 0, "the runner stopped too late for this test"

    # Down over both fire times; back after early's grace, within late's.
    await asyncio.sleep(time.until(early + GRACE) + 0.3)
    restarted = runners.spawn(**options)
    late_id = expected_id(calendar, "late", late, LEAD)
    early_id = expected_id(calendar, "early", early, LEAD)

    async def late_delivered() -> bool:
        return late_id in runners.delivered_ids()

    await eventually(
        late_delivered, within=time.until(late + GRACE), what="the late reminder"
    )
    restarted_at = engine.now()
    await eventually(
        lambda: job_ran_since(engine, "check_notifications", restarted_at),
        within=5,
        what="one more check",
    )
    await restarted.stop()

    assert runners.delivered_ids() == {late_id: 1}
    status = await engine.status()
    assert status.missed == 1
    [missed] = await engine.store.list_notifications(status=NotificationStatus.MISSED)
    assert missed.id == early_id
    [delivered] = await engine.store.list_notifications(
        status=NotificationStatus.DELIVERED
    )
    assert delivered.id == late_id
