"""A feed that suddenly comes back empty, through a real runner: nothing removed."""

from __future__ import annotations

from datetime import timedelta

from calsync import Engine

from .conftest import (
    Runners,
    TimedFeedServer,
    Timeline,
    event,
    eventually,
    expected_id,
    ics,
    sqlite_only,
    synced_since,
)

LEAD = timedelta(seconds=2)


@sqlite_only
async def test_emptied_feed_is_held_flagged_and_its_reminders_still_fire(
    engine: Engine, runners: Runners, feeds: TimedFeedServer
) -> None:
    time = Timeline()
    start = time.at(5.5)
    uids = [f"review-{n}" for n in range(4)]
    feeds.set("/team.ics", ics(*(event(uid, start) for uid in uids)))
    calendar = await engine.add_calendar(
        feeds.url("/team.ics"), every="15m", leads=[LEAD]
    )
    runner = runners.spawn()
    await synced_since(engine, calendar.id, time.origin)

    feeds.set("/team.ics", ics())
    requested = engine.now()
    await engine.request_sync(calendar.id)
    held = await synced_since(engine, calendar.id, requested)
    assert time.until(start - LEAD) > 0, "the runner synced too late for this test"

    assert held.state.held_removals == len(uids)
    assert held.state.last_error is not None
    assert held.label in held.state.last_error
    assert "held back 4" in held.state.last_error
    assert len(await engine.store.list_occurrences(calendar.id)) == len(uids)
    [flagged] = (await engine.status()).calendars
    assert flagged.calendar.state.held_removals == len(uids)
    runs = await engine.store.recent_job_runs(job="sync_due", limit=20)
    assert any(run.counts.get("held") == 1 for run in runs)

    expected = {expected_id(calendar, uid, start, LEAD) for uid in uids}

    async def all_delivered() -> bool:
        return set(runners.delivered_ids()) >= expected

    await eventually(
        all_delivered, within=time.until(start) + 3, what="the held reminders"
    )
    await runner.stop()
    assert runners.delivered_ids() == dict.fromkeys(expected, 1)
