"""check_notifications, dispatch_notifications, status and cleanup over a real store."""

from __future__ import annotations

from datetime import timedelta

from calsync import Calendar, Delivery, Engine, HttpFetcher, Store
from calsync.engine import SyncOutcome
from calsync.handlers import DeliveryError
from calsync.stores import JobOutcome, NotificationStatus
from calsync.testing import FeedServer, ManualClock

from .conftest import MINUTE, T0, Recorder, event, ics, settings

HOUR = timedelta(hours=1)


def _with_alarm(vevent: str, *, minutes: int) -> str:
    """Give an event a display VALARM ``minutes`` before its start."""
    alarm = f"BEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER:-PT{minutes}M\r\nEND:VALARM\r\n"
    return vevent.replace("END:VEVENT", alarm + "END:VEVENT")


async def _calendar_with(
    engine: Engine, feeds: FeedServer, *events: str, **kw: object
) -> str:
    feeds.set("/a.ics", ics(*events))
    calendar = await engine.add_calendar(feeds.url("/a.ics"), **kw)  # type: ignore[arg-type]
    result = await engine.sync_calendar(calendar.id)
    assert result.ok
    return calendar.id


async def test_reminder_is_created_at_its_fire_time_and_delivered_once(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    start = T0 + timedelta(hours=1)
    await _calendar_with(engine, feeds, event("a", start, summary="Standup"))
    assert (await engine.check_notifications()).created == 0
    clock.set(start - 10 * MINUTE - timedelta(seconds=1))
    early = await engine.check_notifications()
    assert early.created == 0
    assert early.next_fire_at == start - 10 * MINUTE
    clock.set(start - 10 * MINUTE)
    assert (await engine.check_notifications()).created == 1
    assert (await engine.check_notifications()).created == 0
    handler = Recorder()
    first = await engine.dispatch_notifications(handler)
    second = await engine.dispatch_notifications(handler)
    assert (first.delivered, second.delivered) == (1, 0)
    [delivery] = handler.deliveries
    assert delivery.occurrence is not None
    assert delivery.occurrence.summary == "Standup"
    assert delivery.notification.fire_at == start - 10 * MINUTE
    assert delivery.attempt == 1


async def test_cancelled_event_gets_no_reminder(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    start = T0 + timedelta(hours=1)
    await _calendar_with(engine, feeds, event("a", start, status="CANCELLED"))
    clock.set(start - 5 * MINUTE)
    assert (await engine.check_notifications()).created == 0


async def test_several_leads_each_fire_once(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    start = T0 + timedelta(hours=2)
    await _calendar_with(engine, feeds, event("a", start), leads=["1h", "10m"])
    handler = Recorder()
    for minutes in (61, 60, 30, 10, 5, 0):
        clock.set(start - minutes * MINUTE)
        await engine.check_notifications()
        await engine.dispatch_notifications(handler)
    leads = sorted(d.notification.lead for d in handler.deliveries)
    assert leads == [timedelta(minutes=10), timedelta(hours=1)]


async def test_failed_delivery_retries_with_backoff_then_dead_letters(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    start = T0 + 5 * MINUTE
    await _calendar_with(engine, feeds, event("a", start))
    handler = Recorder(fail=100)
    attempts = engine.settings.max_attempts
    for _ in range(attempts):
        result = await engine.dispatch_notifications(handler)
        assert result.delivered == 0
        clock.advance(timedelta(hours=2))
    assert handler.calls == attempts
    status = await engine.status()
    assert status.failed == 1
    [dead] = await engine.store.list_notifications(status=NotificationStatus.FAILED)
    assert dead.attempts == attempts
    assert dead.last_error is not None
    assert "handler down" in dead.last_error
    assert await engine.requeue([dead.id]) == 1
    handler.fail = 0
    assert (await engine.dispatch_notifications(handler)).delivered == 1
    assert handler.ids == [dead.id]


async def test_a_retry_waits_for_its_backoff(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    await _calendar_with(engine, feeds, event("a", T0 + 5 * MINUTE))
    handler = Recorder(fail=1)
    first = await engine.dispatch_notifications(handler)
    assert (first.retried, first.errors[0].split(": ", 1)[1]) == (
        1,
        "RuntimeError: handler down (call 1)",
    )
    clock.advance(engine.settings.delivery_retry.ceiling(1))
    assert (await engine.dispatch_notifications(handler)).delivered == 1


async def test_permanent_delivery_error_dead_letters_at_once(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    await _calendar_with(engine, feeds, event("a", T0 + 5 * MINUTE))

    def refuse(delivery: object) -> None:
        raise DeliveryError("the receiver said 410 Gone", permanent=True)

    result = await engine.dispatch_notifications(refuse)
    assert (result.dead, result.retried) == (1, 0)


async def test_sync_handler_runs_outside_the_event_loop(
    engine: Engine, feeds: FeedServer
) -> None:
    import threading

    await _calendar_with(engine, feeds, event("a", T0 + 5 * MINUTE))
    threads: list[str] = []
    result = await engine.dispatch_notifications(
        lambda delivery: threads.append(threading.current_thread().name)
    )
    assert result.delivered == 1
    assert threads != [threading.main_thread().name]


async def test_downtime_past_the_grace_is_recorded_as_missed(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    start = T0 + timedelta(hours=1)
    await _calendar_with(
        engine, feeds, event("a", start), event("b", start + timedelta(hours=3))
    )
    await engine.check_notifications()
    clock.set(start + 5 * MINUTE)  # down over a's whole reminder span
    result = await engine.check_notifications()
    assert (result.created, result.missed) == (0, 1)
    [missed] = await engine.store.list_notifications(status=NotificationStatus.MISSED)
    assert missed.notification.key.uid == "a"
    assert (await engine.status()).missed == 1
    assert (await engine.dispatch_notifications(Recorder())).delivered == 0


async def test_restart_within_the_late_grace_still_fires(
    tmp_path: object, feeds: FeedServer, clock: ManualClock
) -> None:
    from pathlib import Path

    from calsync import HttpFetcher, SQLiteStore

    from .conftest import settings

    store = SQLiteStore(Path(str(tmp_path)) / "grace.db")
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    config = settings(late_grace=timedelta(minutes=15))
    async with Engine(store, fetcher, settings=config, clock=clock) as engine:
        start = T0 + timedelta(hours=1)
        await _calendar_with(engine, feeds, event("a", start))
        await engine.check_notifications()
        clock.set(start + 5 * MINUTE)
        result = await engine.check_notifications()
        assert (result.created, result.missed) == (1, 0)
        assert (await engine.dispatch_notifications(Recorder())).delivered == 1


async def test_status_reports_stale_calendars_queue_and_job_durations(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    calendar_id = await _calendar_with(engine, feeds, event("a", T0 + 5 * MINUTE))
    feeds.fail("/a.ics", 500)
    await engine.dispatch_notifications(Recorder())
    clock.advance(timedelta(minutes=46))  # 3 cadences of 15 min, and a bit
    await engine.sync_calendar(calendar_id)
    status = await engine.status()
    [calendar] = status.calendars
    assert calendar.stale
    assert calendar.calendar.state.last_error is not None
    assert "500" in calendar.calendar.state.last_error
    jobs = {job.job: job for job in status.jobs}
    assert jobs["sync_calendar"].runs == 2
    assert jobs["sync_calendar"].last_outcome is JobOutcome.PARTIAL
    assert jobs["dispatch_notifications"].runs == 1
    assert jobs["sync_due"].runs == 0


async def test_cleanup_prunes_past_retention_only(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    start = T0 + 5 * MINUTE
    calendar_id = await _calendar_with(engine, feeds, event("a", start))
    await engine.dispatch_notifications(Recorder())
    clock.advance(timedelta(days=2))
    assert (await engine.sync_calendar(calendar_id, force=True)).expired == 1
    assert (await engine.cleanup()).notifications == 0
    clock.advance(timedelta(days=40))
    pruned = await engine.cleanup()
    assert (pruned.occurrences, pruned.notifications) == (1, 1)
    assert pruned.job_runs >= 1


async def test_pause_stops_syncing_and_new_reminders(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    start = T0 + timedelta(hours=1)
    calendar_id = await _calendar_with(engine, feeds, event("a", start))
    await engine.pause(calendar_id)
    clock.set(start - 5 * MINUTE)
    assert (await engine.check_notifications()).created == 0
    assert (await engine.sync_due()).counts["synced"] == 0
    await engine.resume(calendar_id)
    [result] = (await engine.sync_due()).results
    assert result.outcome in (SyncOutcome.UNCHANGED, SyncOutcome.CHANGED)
    assert (await engine.check_notifications()).created == 1


async def test_a_delivery_never_starts_when_its_claim_would_end_first(
    store: Store, feeds: FeedServer, clock: ManualClock
) -> None:
    """A slow batch must not outlive its claims: the rest wait for a later run."""
    config = settings(
        lease_ttl=timedelta(seconds=60),
        parse_timeout=timedelta(seconds=30),
        handler_timeout=timedelta(seconds=20),
        dispatch_concurrency=1,
    )
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    async with Engine(store, fetcher, settings=config, clock=clock) as engine:
        events = [event(f"e{i}", T0 + 5 * MINUTE) for i in range(4)]
        await _calendar_with(engine, feeds, *events)
        seen: list[str] = []
        attempts: list[int] = []

        async def slow(delivery: Delivery) -> None:
            seen.append(delivery.id)
            attempts.append(delivery.attempt)
            clock.advance(timedelta(seconds=25))  # each call takes 25 s

        first = await engine.dispatch_notifications(slow)
        # 0 s, 25 s: started inside the claim; at 50 s, 50 + 20 > 60: held.
        assert (first.delivered, first.held) == (2, 2)
        # The held ones were handed back: due at once, their attempt unused.
        second = await engine.dispatch_notifications(slow)
        assert second.delivered == 2
        assert len(seen) == len(set(seen)) == 4
        assert attempts == [1, 1, 1, 1]


async def test_an_events_own_alarm_fires_when_the_calendar_opts_in(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    start = T0 + timedelta(hours=2)
    with_alarm = _with_alarm(event("a", start), minutes=45)
    await _calendar_with(engine, feeds, with_alarm, use_alarms=True)
    handler = Recorder()
    for minutes in (46, 45, 10):
        clock.set(start - minutes * MINUTE)
        await engine.check_notifications()
        await engine.dispatch_notifications(handler)
    leads = [delivery.notification.lead for delivery in handler.deliveries]
    assert leads == [timedelta(minutes=45), timedelta(minutes=10)]


async def test_an_events_own_alarm_is_ignored_unless_asked_for(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    start = T0 + timedelta(hours=2)
    with_alarm = _with_alarm(event("a", start), minutes=45)
    await _calendar_with(engine, feeds, with_alarm)
    clock.set(start - 45 * MINUTE)
    assert (await engine.check_notifications()).created == 0


async def test_a_removed_alarm_cancels_its_pending_reminder(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    start = T0 + timedelta(hours=2)
    with_alarm = _with_alarm(event("a", start), minutes=45)
    calendar_id = await _calendar_with(engine, feeds, with_alarm, use_alarms=True)
    clock.set(start - 40 * MINUTE)
    assert (await engine.check_notifications()).created == 1
    feeds.set("/a.ics", ics(event("a", start)))
    result = await engine.sync_calendar(calendar_id)
    assert result.notifications_cancelled == 1
    assert (await engine.dispatch_notifications(Recorder())).delivered == 0


async def test_a_calendar_with_only_its_events_alarms_works(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    start = T0 + timedelta(hours=2)
    with_alarm = _with_alarm(event("a", start), minutes=15)
    await _calendar_with(engine, feeds, with_alarm, leads=[], use_alarms=True)
    clock.set(start - 15 * MINUTE)
    assert (await engine.check_notifications()).created == 1


async def test_turning_alarms_off_cancels_their_pending_reminders(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    start = T0 + timedelta(hours=2)
    with_alarm = _with_alarm(event("a", start), minutes=45)
    calendar_id = await _calendar_with(engine, feeds, with_alarm, use_alarms=True)
    clock.set(start - 40 * MINUTE)
    assert (await engine.check_notifications()).created == 1
    await engine.update_calendar(calendar_id, use_alarms=False)
    assert (await engine.dispatch_notifications(Recorder())).delivered == 0


async def test_a_reminder_whose_span_passed_before_the_first_check_is_missed_once(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    start = T0 + timedelta(hours=2)  # 11:00, its reminder at 10:50
    await _calendar_with(
        engine, feeds, event("a", start), event("before", T0 - 30 * MINUTE)
    )
    clock.set(start + 5 * MINUTE)  # nothing ran between the sync and now
    first = await engine.check_notifications()
    assert (first.created, first.missed) == (0, 1)
    clock.advance(MINUTE)
    assert (await engine.check_notifications()).missed == 0
    [missed] = await engine.store.list_notifications(status=NotificationStatus.MISSED)
    assert missed.notification.key.uid == "a"  # not 'before': it predates the calendar
    assert (await engine.status()).missed == 1


async def _stored_unusable(engine: Engine, url: str) -> Calendar:
    """A calendar whose stored schedule no longer reads (a hand-edited row, say).

    Entry points refuse such values; a row can still hold one, and it must fail
    that calendar's work alone.
    """
    calendar = await engine.add_calendar(url, name="Huge")
    object.__setattr__(calendar, "schedule", "every banana")
    return await engine.store.update_calendar(calendar)


async def test_a_calendar_with_an_unusable_setting_fails_its_sync_alone(
    engine: Engine, feeds: FeedServer
) -> None:
    start = T0 + 5 * MINUTE
    feeds.set("/bad.ics", ics(event("b", start)))
    bad = await _stored_unusable(engine, feeds.url("/bad.ics"))
    await _calendar_with(engine, feeds, event("a", start + HOUR))

    synced = await engine.sync_due()
    [failed] = synced.failed
    assert failed.calendar_id == bad.id
    assert failed.error is not None
    assert "Huge" in failed.error
    assert "schedule" in failed.error
    assert "set every" in failed.error  # the setting to change


async def test_an_unusable_setting_does_not_stop_other_calendars_reminders(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    start = T0 + 5 * MINUTE
    feeds.set("/bad.ics", ics(event("b", start)))
    bad = await _stored_unusable(engine, feeds.url("/bad.ics"))
    good_id = await _calendar_with(engine, feeds, event("a", start + HOUR))

    clock.set(start + HOUR - 10 * MINUTE)
    checked = await engine.check_notifications()
    assert checked.created == 1
    [error] = checked.errors
    assert "Huge" in error
    assert "every" in error
    [run] = await engine.store.recent_job_runs(job="check_notifications", limit=1)
    assert run.outcome is JobOutcome.PARTIAL
    handler = Recorder()
    await engine.dispatch_notifications(handler)
    assert [d.calendar.id for d in handler.deliveries] == [good_id]
    status = await engine.status()
    assert {calendar.id for calendar in status.calendars} == {bad.id, good_id}
    assert (await engine.cleanup()).occurrences == 0
