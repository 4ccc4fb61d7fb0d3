"""A feed edited across syncs, through a real runner: the right reminders fire once.

On the shared clock, so the edits reach the runner long before any fire time
however slow the machine is, and each reminder is seen to wait for its own.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from calsync import Engine
from calsync.stores import NotificationStatus

from ._clock import FileClock
from .conftest import (
    C0,
    Runners,
    TimedFeedServer,
    attempted_at_or_after,
    event,
    expected_id,
    ics,
    step_until,
)

LEAD = timedelta(minutes=10)
HOUR = timedelta(hours=1)


async def test_added_edited_moved_cancelled_and_deleted_events_fire_right_once(
    engine: Engine, runners: Runners, feeds: TimedFeedServer, clock: FileClock
) -> None:
    keep, soon, later = C0 + HOUR, C0 + 2 * HOUR, C0 + 3 * HOUR
    new = later - timedelta(minutes=1)
    feeds.set(
        "/team.ics",
        ics(
            event("past", C0 - HOUR),
            event("keep", keep),
            event("edit", soon, summary="Planning"),
            event("move", soon),
            event("cancel", soon),
            event("delete", soon),
        ),
    )
    calendar = await engine.add_calendar(
        feeds.url("/team.ics"), every="15m", leads=[LEAD]
    )
    runner = runners.spawn()

    async def first_sync() -> object:
        return await attempted_at_or_after(engine, calendar.id, C0)

    await step_until(clock, first_sync, what="the first sync")
    first = await engine.get_calendar(calendar.id)
    assert first.state.last_error is None

    feeds.set(
        "/team.ics",
        ics(
            event("past", C0 - HOUR),
            event("keep", keep),
            event("edit", soon, summary="Planning (room changed)"),
            event("move", later),
            event("cancel", soon, status="CANCELLED"),
            event("new", new),
        ),
    )
    clock.advance(timedelta(seconds=1))  # the request comes after the first sync
    requested = clock()
    await engine.request_sync(calendar.id)

    async def second_sync() -> object:
        return await attempted_at_or_after(engine, calendar.id, requested)

    await step_until(clock, second_sync, what="the requested sync")
    second = await engine.get_calendar(calendar.id)
    assert second.state.last_error is None
    assert clock() < keep - LEAD, "the clock passed a fire time during the syncs"

    ids = {
        "keep": expected_id(calendar, "keep", keep, LEAD),
        "edit": expected_id(calendar, "edit", soon, LEAD),
        "move": expected_id(calendar, "move", later, LEAD),
        "new": expected_id(calendar, "new", new, LEAD),
    }

    # At keep's fire time, keep's reminder alone goes out.
    clock.set(keep - LEAD)
    await _delivered(clock, runners, {ids["keep"]})
    assert set(runners.delivered_ids()) == {ids["keep"]}

    # At the last fire time, the rest have gone out: the edits were followed.
    clock.set(soon - LEAD)
    await _delivered(clock, runners, {ids["keep"], ids["edit"]})
    clock.set(later - LEAD)
    await _delivered(clock, runners, set(ids.values()))
    await _one_more_cycle(engine, clock)
    await runner.stop()

    assert runners.delivered_ids() == dict.fromkeys(ids.values(), 1)
    notifications = await engine.store.list_notifications(calendar_id=calendar.id)
    assert {record.id for record in notifications} == set(ids.values())
    for record in notifications:
        assert record.status is NotificationStatus.DELIVERED
        assert record.delivered_at is not None
        assert record.delivered_at >= record.fire_at
    moved = [r for r in notifications if r.notification.key.uid == "move"]
    assert [r.notification.start for r in moved] == [later]
    for delivered in runners.deliveries():
        record = next(r for r in notifications if r.id == delivered.id)
        assert delivered.at >= record.fire_at, "a reminder went out before its time"
        assert delivered.at < record.notification.start, "a reminder came too late"


async def _delivered(clock: FileClock, runners: Runners, wanted: set[str]) -> None:
    """Tick the clock until every reminder in ``wanted`` reached the handler."""

    async def arrived() -> bool:
        return set(runners.delivered_ids()) >= wanted

    await step_until(clock, arrived, what=f"{len(wanted)} reminders delivered")


async def _one_more_cycle(engine: Engine, clock: FileClock) -> None:
    """Let the runner check and dispatch once more, so a late duplicate would show."""
    since: datetime = clock()

    async def ran() -> bool:
        runs = await engine.store.recent_job_runs(job="dispatch_notifications", limit=1)
        return bool(runs) and runs[0].started_at > since

    await step_until(clock, ran, what="another dispatch run")
