"""A runner stopped over a reminder's fire time: late within the grace, else missed.

On the shared clock: the runner is down while the clock passes both fire times,
and comes back after the first reminder's grace but within the second's.
"""

from __future__ import annotations

from datetime import timedelta

from calsync import Engine
from calsync.stores import NotificationStatus

from ._clock import FileClock
from .conftest import (
    C0,
    Runners,
    TimedFeedServer,
    attempted_at_or_after,
    event,
    eventually,
    expected_id,
    ics,
    sqlite_only,
    step_until,
)

LEAD = timedelta(minutes=10)
GRACE = timedelta(hours=1)


@sqlite_only
async def test_downtime_within_grace_fires_once_and_past_grace_is_missed(
    engine: Engine, runners: Runners, feeds: TimedFeedServer, clock: FileClock
) -> None:
    early, late = C0 + timedelta(hours=1), C0 + timedelta(hours=3)
    feeds.set("/team.ics", ics(event("early", early), event("late", late)))
    calendar = await engine.add_calendar(
        feeds.url("/team.ics"), every="15m", leads=[LEAD]
    )
    options = {"late_grace": GRACE.total_seconds()}
    runner = runners.spawn(**options)

    async def synced_and_checked() -> bool:
        synced = await attempted_at_or_after(engine, calendar.id, C0)
        if synced is None or synced.state.last_success_at is None:
            return False
        runs = await engine.store.recent_job_runs(job="check_notifications", limit=1)
        return bool(runs) and runs[0].started_at > synced.state.last_success_at

    await step_until(clock, synced_and_checked, what="a sync, then a check")
    await runner.stop()
    assert clock() < early - LEAD, "the clock passed a fire time before the stop"
    assert runners.delivered_ids() == {}

    # Down over both fire times: past early's grace, within late's.
    clock.set(late - LEAD + timedelta(minutes=5))
    assert early + GRACE < clock() < late + GRACE
    restarted = runners.spawn(**options)
    late_id = expected_id(calendar, "late", late, LEAD)
    early_id = expected_id(calendar, "early", early, LEAD)

    async def late_delivered() -> bool:
        return late_id in runners.delivered_ids()

    # The first cycle after a start runs at once: no tick needed.
    await eventually(late_delivered, within=60, what="the late reminder")
    delivered_by = clock()

    async def checked_again() -> bool:
        runs = await engine.store.recent_job_runs(job="check_notifications", limit=1)
        return bool(runs) and runs[0].started_at > delivered_by

    await step_until(clock, checked_again, what="one more check")
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
