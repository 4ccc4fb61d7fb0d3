"""DESIGN §6 over a real feed server and real stores: a broken event is unknown,
not deleted; the guard weighs live occurrences; setting and alarm edits are followed.
"""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

from calsync import Engine, SyncResult
from calsync.engine import SyncOutcome
from calsync.stores import NotificationStatus
from calsync.testing import FeedServer, ManualClock

from .conftest import MINUTE, T0, Recorder, event, ics

HOUR = timedelta(hours=1)


def _broken(vevent: str) -> str:
    """Make an event unreadable: its DTSTART is no date any more."""
    return vevent.replace("DTSTART:", "DTSTART:garbage")


def _with_alarm(vevent: str, *, minutes: int) -> str:
    alarm = f"BEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER:-PT{minutes}M\r\nEND:VALARM\r\n"
    return vevent.replace("END:VEVENT", alarm + "END:VEVENT")


async def _pending(engine: Engine, calendar_id: str) -> set[str]:
    records = await engine.store.list_notifications(
        calendar_id=calendar_id, status=NotificationStatus.PENDING
    )
    return {record.notification.key.uid for record in records}


# -- issue 13.1: an event that turns unparsable keeps its stored version ------


async def test_events_that_turn_unparsable_keep_their_versions_and_reminders(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    events = [event(f"e{n:02}", T0 + 5 * MINUTE) for n in range(30)]
    feeds.set("/a.ics", ics(*events))
    calendar = await engine.add_calendar(feeds.url("/a.ics"), name="Team")
    first = await engine.sync_calendar(calendar.id)
    assert first.notifications_created == 30
    feeds.set("/a.ics", ics(*events[:20], *map(_broken, events[20:])))
    clock.advance(MINUTE)

    second = await engine.sync_calendar(calendar.id)

    assert second.ok
    assert (second.removed, second.notifications_cancelled) == (0, 0)
    assert len(await engine.store.list_occurrences(calendar.id)) == 30
    assert len(await _pending(engine, calendar.id)) == 30
    assert "events kept unread" in [problem.what for problem in second.problems]
    [status] = (await engine.status()).calendars
    last_error = status.calendar.state.last_error
    assert last_error is not None
    assert "Team" in last_error
    assert "10 events of the feed could not be read" in last_error
    assert "kept" in last_error


async def test_an_unreadable_event_is_removed_once_its_uid_leaves_the_feed(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    good, bad = event("good", T0 + 5 * MINUTE), event("bad", T0 + 5 * MINUTE)
    feeds.set("/a.ics", ics(good, bad))
    calendar = await engine.add_calendar(feeds.url("/a.ics"))
    await engine.sync_calendar(calendar.id)
    feeds.set("/a.ics", ics(good, _broken(bad)))
    clock.advance(MINUTE)
    kept = await engine.sync_calendar(calendar.id)
    assert kept.removed == 0
    assert await _pending(engine, calendar.id) == {"good", "bad"}
    # The warning stands while the feed answers 304 with the same body.
    clock.advance(15 * MINUTE)
    unchanged = await engine.sync_calendar(calendar.id)
    assert unchanged.not_modified
    state = (await engine.get_calendar(calendar.id)).state
    assert state.last_error is not None
    assert "could not be read" in state.last_error

    feeds.set("/a.ics", ics(good))
    clock.advance(MINUTE)
    gone = await engine.sync_calendar(calendar.id)

    assert (gone.removed, gone.notifications_cancelled) == (1, 1)
    assert await _pending(engine, calendar.id) == {"good"}
    assert (await engine.get_calendar(calendar.id)).state.last_error is None


# -- issue 13.2: the guard weighs live, in-window occurrences -----------------


async def _empty_feed_after_slide(
    engine: Engine,
    feeds: FeedServer,
    clock: ManualClock,
    *,
    upcoming: int,
    slid_out: int,
) -> tuple[str, SyncResult]:
    """Store ``upcoming`` events ahead and ``slid_out`` that leave the window, then
    serve an empty feed once the window has slid past the old ones."""
    old = [event(f"old{n}", T0 - timedelta(days=1) + MINUTE) for n in range(slid_out)]
    ahead = [event(f"up{n}", T0 + (65 + 10 * n) * MINUTE) for n in range(upcoming)]
    feeds.set("/a.ics", ics(*old, *ahead))
    calendar = await engine.add_calendar(feeds.url("/a.ics"))
    first = await engine.sync_calendar(calendar.id)
    assert first.added == upcoming + slid_out
    clock.advance(HOUR)  # the old events end before the window's start now
    assert (await engine.check_notifications()).created == 1  # up0 at 10:05
    feeds.set("/a.ics", ics())
    return calendar.id, await engine.sync_calendar(calendar.id)


async def test_guard_holds_an_empty_feed_despite_an_event_that_slid_out(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    calendar_id, result = await _empty_feed_after_slide(
        engine, feeds, clock, upcoming=3, slid_out=1
    )
    assert result.outcome is SyncOutcome.HELD
    assert (result.held_removals, result.removed, result.expired) == (3, 0, 1)
    assert len(await engine.store.list_occurrences(calendar_id)) == 3
    assert await _pending(engine, calendar_id) == {"up0"}
    state = (await engine.get_calendar(calendar_id)).state
    assert state.last_error is not None
    assert "held back 3 of 3" in state.last_error


async def test_guard_holds_thirty_upcoming_removals_next_to_forty_slid_out(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    calendar_id, result = await _empty_feed_after_slide(
        engine, feeds, clock, upcoming=30, slid_out=40
    )
    assert result.outcome is SyncOutcome.HELD
    assert (result.held_removals, result.removed, result.expired) == (30, 0, 40)
    assert len(await engine.store.list_occurrences(calendar_id)) == 30
    assert await _pending(engine, calendar_id) == {"up0"}


# -- issue 14.3: setting edits re-expand even while the feed answers 304 ------


async def test_a_new_zone_moves_floating_events_and_their_reminders_despite_304(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    body = ics(
        "BEGIN:VEVENT\r\nUID:floating\r\nDTSTAMP:20260101T000000Z\r\n"
        "DTSTART:20260303T090000\r\nDTEND:20260303T093000\r\nSUMMARY:Standup\r\n"
        "END:VEVENT"
    )
    feeds.set("/a.ics", body)
    calendar = await engine.add_calendar(feeds.url("/a.ics"), tz="Europe/Berlin")
    await engine.sync_calendar(calendar.id)
    berlin = T0.replace(day=3, hour=9, tzinfo=ZoneInfo("Europe/Berlin"))
    new_york = T0.replace(day=3, hour=9, tzinfo=ZoneInfo("America/New_York"))
    [stored] = await engine.store.list_occurrences(calendar.id)
    assert stored.start == berlin

    await engine.update_calendar(calendar.id, tz="America/New_York")
    clock.advance(MINUTE)
    result = await engine.sync_calendar(calendar.id)

    assert not feeds.requests("/a.ics")[-1].conditional
    assert result.updated == 1
    [moved] = await engine.store.list_occurrences(calendar.id)
    assert moved.start == new_york
    # Unchanged inputs and body from then on: conditional again, nothing parsed.
    clock.advance(15 * MINUTE)
    again = await engine.sync_calendar(calendar.id)
    assert again.not_modified
    assert feeds.requests("/a.ics")[-1].conditional
    handler = Recorder()
    clock.set(berlin - 10 * MINUTE)
    assert (await engine.check_notifications()).created == 0
    clock.set(new_york - 10 * MINUTE)
    assert (await engine.check_notifications()).created == 1
    await engine.dispatch_notifications(handler)
    assert [d.notification.fire_at for d in handler.deliveries] == [
        new_york - 10 * MINUTE
    ]


async def test_a_wider_horizon_adds_events_despite_304(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    feeds.set("/a.ics", ics(event("far", T0 + timedelta(days=10))))
    calendar = await engine.add_calendar(feeds.url("/a.ics"), horizon="5d")
    first = await engine.sync_calendar(calendar.id)
    assert first.added == 0
    await engine.update_calendar(calendar.id, horizon="20d")
    clock.advance(MINUTE)
    result = await engine.sync_calendar(calendar.id)
    assert result.added == 1
    assert len(await engine.store.list_occurrences(calendar.id)) == 1


async def test_a_new_lead_creates_its_due_reminder_at_the_next_sync(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    start = T0 + 30 * MINUTE
    feeds.set("/a.ics", ics(event("a", start)))
    calendar = await engine.add_calendar(feeds.url("/a.ics"))
    first = await engine.sync_calendar(calendar.id)
    assert first.notifications_created == 0  # 10 min before is 09:20
    await engine.update_calendar(calendar.id, leads=["10m", "1h"])
    clock.advance(MINUTE)
    result = await engine.sync_calendar(calendar.id)
    assert result.notifications_created == 1  # the hour-ahead one is due now
    assert result.next_fire_at == start - 10 * MINUTE
    await engine.update_calendar(calendar.id, leads=["10m"])
    [pending] = await engine.store.list_notifications(
        calendar_id=calendar.id, status=NotificationStatus.CANCELLED
    )
    assert pending.notification.lead == HOUR


# -- issue 14.4: a VALARM edited in the feed is followed ----------------------


async def test_an_edited_valarm_cancels_the_old_reminder_and_fires_the_new(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    start = T0 + 40 * MINUTE
    feeds.set("/a.ics", ics(_with_alarm(event("a", start), minutes=30)))
    calendar = await engine.add_calendar(
        feeds.url("/a.ics"), leads=["5m"], use_alarms=True
    )
    await engine.sync_calendar(calendar.id)
    clock.set(start - 29 * MINUTE)
    assert (await engine.check_notifications()).created == 1  # the 30 min alarm
    feeds.set("/a.ics", ics(_with_alarm(event("a", start), minutes=15)))

    result = await engine.sync_calendar(calendar.id, force=True)

    assert (result.updated, result.notifications_cancelled) == (1, 1)
    handler = Recorder()
    for minutes in (20, 15, 5):
        clock.set(start - minutes * MINUTE)
        await engine.check_notifications()
        await engine.dispatch_notifications(handler)
    leads = [delivery.notification.lead for delivery in handler.deliveries]
    assert leads == [15 * MINUTE, 5 * MINUTE]


async def test_a_new_zone_moves_a_floating_series_without_tripping_the_guard(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    # Each instance's key is its original start in UTC: a new zone re-keys all.
    feeds.set(
        "/a.ics",
        ics(
            "BEGIN:VEVENT\r\nUID:daily\r\nDTSTAMP:20260101T000000Z\r\n"
            "DTSTART:20260303T090000\r\nDTEND:20260303T093000\r\nSUMMARY:Standup\r\n"
            "RRULE:FREQ=DAILY;COUNT=5\r\nEND:VEVENT"
        ),
    )
    calendar = await engine.add_calendar(feeds.url("/a.ics"), tz="Europe/Berlin")
    await engine.sync_calendar(calendar.id)
    await engine.update_calendar(calendar.id, tz="America/New_York")
    clock.advance(MINUTE)

    result = await engine.sync_calendar(calendar.id)

    assert result.outcome is SyncOutcome.CHANGED
    assert (result.added, result.removed, result.held_removals) == (5, 5, 0)
    starts = [o.start for o in await engine.store.list_occurrences(calendar.id)]
    new_york = ZoneInfo("America/New_York")
    assert starts == [
        T0.replace(day=day, hour=9, tzinfo=new_york) for day in range(3, 8)
    ]
