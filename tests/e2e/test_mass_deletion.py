"""A feed that suddenly comes back empty, through a real runner: nothing removed.

On the shared clock, so the emptied feed is synced long before the fire time
however slow the machine is.
"""

from __future__ import annotations

from datetime import timedelta

from calsync import Engine

from ._clock import FileClock
from .conftest import (
    C0,
    SAFETY,
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


@sqlite_only
async def test_emptied_feed_is_held_flagged_and_its_reminders_still_fire(
    engine: Engine, runners: Runners, feeds: TimedFeedServer, clock: FileClock
) -> None:
    # Before the next scheduled sync, which would confirm the removals.
    start = C0 + timedelta(minutes=30)
    uids = [f"review-{n}" for n in range(4)]
    feeds.set("/team.ics", ics(*(event(uid, start) for uid in uids)))
    calendar = await engine.add_calendar(
        feeds.url("/team.ics"), every="1h", leads=[LEAD]
    )
    runner = runners.spawn()

    async def first_sync() -> object:
        return await attempted_at_or_after(engine, calendar.id, C0)

    await step_until(clock, first_sync, what="the first sync")

    feeds.set("/team.ics", ics())
    clock.advance(timedelta(seconds=1))  # the request comes after the first sync
    requested = clock()
    await engine.request_sync(calendar.id)

    async def held_sync() -> object:
        return await attempted_at_or_after(engine, calendar.id, requested)

    await step_until(clock, held_sync, what="the sync of the emptied feed")
    held = await engine.get_calendar(calendar.id)
    assert clock() < start - LEAD, "the clock passed the fire time during the syncs"

    assert held.state.held_removals == len(uids)
    assert held.state.last_error is not None
    assert held.label in held.state.last_error
    assert "held back 4" in held.state.last_error
    assert len(await engine.store.list_occurrences(calendar.id)) == len(uids)
    [flagged] = (await engine.status()).calendars
    assert flagged.calendar.state.held_removals == len(uids)

    async def held_run_recorded() -> bool:
        # The job's run is recorded once sync_due ends, after the calendar's state.
        runs = await engine.store.recent_job_runs(job="sync_due", limit=20)
        return any(run.counts.get("held") == 1 for run in runs)

    await eventually(held_run_recorded, within=SAFETY, what="the held run recorded")

    expected = {expected_id(calendar, uid, start, LEAD) for uid in uids}

    async def all_delivered() -> bool:
        return set(runners.delivered_ids()) >= expected

    clock.set(start - LEAD)
    await step_until(clock, all_delivered, what="the held reminders")
    assert clock() < requested + timedelta(hours=1), "a sync confirmed the removals"
    await runner.stop()
    assert runners.delivered_ids() == dict.fromkeys(expected, 1)
