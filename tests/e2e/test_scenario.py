"""A feed edited across syncs, through a real runner: the right reminders fire once."""

from __future__ import annotations

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
    synced_since,
)

LEAD = timedelta(seconds=2)


async def test_added_edited_moved_cancelled_and_deleted_events_fire_right_once(
    engine: Engine, runners: Runners, feeds: TimedFeedServer
) -> None:
    time = Timeline()
    keep, soon, later = time.at(4), time.at(5.5), time.at(6.5)
    feeds.set(
        "/team.ics",
        ics(
            event("past", time.at(-60)),
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
    first = await synced_since(engine, calendar.id, time.origin)
    assert first.state.last_error is None

    feeds.set(
        "/team.ics",
        ics(
            event("past", time.at(-60)),
            event("keep", keep),
            event("edit", soon, summary="Planning (room changed)"),
            event("move", later),
            event("cancel", soon, status="CANCELLED"),
            event("new", later - timedelta(seconds=1)),
        ),
    )
    requested = engine.now()
    await engine.request_sync(calendar.id)
    second = await synced_since(engine, calendar.id, requested)
    assert second.state.last_error is None
    assert time.until(soon - LEAD) > 0, "the runner synced too late for this test"

    expected = {
        expected_id(calendar, "keep", keep, LEAD),
        expected_id(calendar, "edit", soon, LEAD),
        expected_id(calendar, "move", later, LEAD),
        expected_id(calendar, "new", later - timedelta(seconds=1), LEAD),
    }

    async def all_delivered() -> bool:
        return set(runners.delivered_ids()) >= expected

    await eventually(
        all_delivered, within=time.until(later) + 5, what="every reminder delivered"
    )
    await _one_more_cycle(engine)
    await runner.stop()

    assert runners.delivered_ids() == dict.fromkeys(expected, 1)
    notifications = await engine.store.list_notifications(calendar_id=calendar.id)
    assert {record.id for record in notifications} == expected
    for record in notifications:
        assert record.status is NotificationStatus.DELIVERED
        assert record.delivered_at is not None
        assert record.delivered_at >= record.fire_at
    moved = [r for r in notifications if r.notification.key.uid == "move"]
    assert [r.notification.start for r in moved] == [later]
    for delivered in runners.deliveries():
        record = next(r for r in notifications if r.id == delivered.id)
        assert delivered.at >= record.fire_at, "a reminder went out before its time"


async def _one_more_cycle(engine: Engine) -> None:
    """Let the runner check and dispatch once more, so a late duplicate would show."""
    since = engine.now()

    async def ran() -> bool:
        runs = await engine.store.recent_job_runs(job="dispatch_notifications", limit=1)
        return bool(runs) and runs[0].started_at > since

    await eventually(ran, within=5, what="another dispatch run")
