"""Engine.sync_calendar and sync_due against a real feed server and SQLite store."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta
from pathlib import Path

import attrs
import pytest

from calsync import Engine, HttpFetcher, SQLiteStore, Store, ValidationError
from calsync.core import (
    CalendarExists,
    CircuitState,
    ScheduleError,
    StoreUnavailable,
    TimezoneError,
)
from calsync.engine import SyncOutcome
from calsync.fetch import FetchInvalidURL
from calsync.stores import NotificationStatus
from calsync.testing import FeedServer, ManualClock

from .conftest import MINUTE, T0, Recorder, event, ics, settings


async def test_add_calendar_refuses_bad_input_and_stores_nothing(
    engine: Engine, feeds: FeedServer
) -> None:
    url = feeds.url("/a.ics")
    with pytest.raises(FetchInvalidURL, match="scheme"):
        await engine.add_calendar("ftp://example.com/a.ics")
    with pytest.raises(ScheduleError, match="fortnightly"):
        await engine.add_calendar(url, every="fortnightly")
    with pytest.raises(ValidationError, match="10x"):
        await engine.add_calendar(url, leads=["10x"])
    with pytest.raises(TimezoneError, match="Mars/Olympus"):
        await engine.add_calendar(url, tz="Mars/Olympus")
    assert await engine.list_calendars() == []


async def test_add_calendar_reads_short_forms(
    engine: Engine, feeds: FeedServer
) -> None:
    calendar = await engine.add_calendar(
        feeds.url("/a.ics"), every="5m", leads=["1h30m", "10m"], tz="Europe/Berlin"
    )
    assert calendar.schedule == "every 5m"
    assert calendar.leads == (timedelta(minutes=10), timedelta(minutes=90))
    with pytest.raises(CalendarExists):
        await engine.add_calendar(feeds.url("/a.ics"))


async def test_first_sync_stores_occurrences_then_304_changes_nothing(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    feeds.set(
        "/a.ics",
        ics(event("a", T0 + 2 * MINUTE * 60), event("b", T0 + timedelta(days=1))),
    )
    calendar = await engine.add_calendar(feeds.url("/a.ics"))
    first = await engine.sync_calendar(calendar.id)
    assert (first.outcome, first.added) == (SyncOutcome.CHANGED, 2)
    clock.advance(timedelta(minutes=15))
    second = await engine.sync_calendar(calendar.id)
    assert second.outcome is SyncOutcome.UNCHANGED
    assert second.not_modified
    assert feeds.requests("/a.ics")[-1].conditional
    assert len(await engine.store.list_occurrences(calendar.id)) == 2


async def test_same_body_without_validators_is_not_parsed_again(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    feeds.set("/a.ics", ics(event("a", T0 + timedelta(hours=2))), validators=False)
    calendar = await engine.add_calendar(feeds.url("/a.ics"))
    await engine.sync_calendar(calendar.id)
    clock.advance(timedelta(minutes=15))
    again = await engine.sync_calendar(calendar.id)
    assert again.outcome is SyncOutcome.UNCHANGED
    assert not again.not_modified
    stored = await engine.get_calendar(calendar.id)
    assert stored.state.parsed_at == T0  # the same body was not parsed again


async def test_window_slide_reparses_an_unchanged_feed_after_a_day(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    feeds.set("/a.ics", ics(event("d", T0, rrule="FREQ=DAILY")))
    calendar = await engine.add_calendar(feeds.url("/a.ics"), horizon=timedelta(days=3))
    await engine.sync_calendar(calendar.id)
    before = {o.start for o in await engine.store.list_occurrences(calendar.id)}
    clock.advance(timedelta(days=1, minutes=1))
    result = await engine.sync_calendar(calendar.id)
    assert not feeds.requests("/a.ics")[-1].conditional
    # The window is now [T0+1m, T0+4d+1m): the instances of T0+3d and T0+4d entered.
    assert result.added == 2
    after = {o.start for o in await engine.store.list_occurrences(calendar.id)}
    assert max(before) == T0 + timedelta(days=2)
    assert max(after) == T0 + timedelta(days=4)


async def test_edit_move_and_delete_are_applied_and_reminders_follow(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    start = T0 + 5 * MINUTE
    feeds.set("/a.ics", ics(event("m", start), event("gone", start)))
    calendar = await engine.add_calendar(feeds.url("/a.ics"))
    first = await engine.sync_calendar(calendar.id)
    assert first.notifications_created == 2  # both already inside the 10 min lead
    moved = start + timedelta(hours=3)
    feeds.set("/a.ics", ics(event("m", moved, summary="moved")))
    clock.advance(MINUTE)
    second = await engine.sync_calendar(calendar.id)
    assert (second.updated, second.removed) == (1, 1)
    records = await engine.store.list_notifications(calendar_id=calendar.id)
    assert {r.status for r in records} == {NotificationStatus.CANCELLED}
    clock.set(moved - 10 * MINUTE)
    check = await engine.check_notifications()
    assert check.created == 1
    pending = await engine.store.list_notifications(status=NotificationStatus.PENDING)
    assert [r.notification.start for r in pending] == [moved]


async def test_empty_feed_is_held_then_applied_when_it_repeats(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    feeds.set(
        "/a.ics", ics(*(event(f"e{i}", T0 + i * timedelta(hours=1)) for i in range(30)))
    )
    calendar = await engine.add_calendar(feeds.url("/a.ics"))
    await engine.sync_calendar(calendar.id)
    feeds.set("/a.ics", ics())
    clock.advance(timedelta(minutes=15))
    held = await engine.sync_calendar(calendar.id)
    assert held.outcome is SyncOutcome.HELD
    assert (held.held_removals, held.removed) == (30, 0)
    assert len(await engine.store.list_occurrences(calendar.id)) == 30
    flagged = await engine.get_calendar(calendar.id)
    assert flagged.state.held_removals == 30
    clock.advance(timedelta(minutes=15))
    repeated = await engine.sync_calendar(calendar.id)
    assert repeated.removed == 30
    assert await engine.store.list_occurrences(calendar.id) == []
    assert (await engine.get_calendar(calendar.id)).state.held_removals == 0


async def test_confirm_removals_applies_a_held_deletion_at_once(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    feeds.set(
        "/a.ics", ics(*(event(f"e{i}", T0 + i * timedelta(hours=1)) for i in range(3)))
    )
    calendar = await engine.add_calendar(feeds.url("/a.ics"))
    await engine.sync_calendar(calendar.id)
    feeds.set("/a.ics", ics())
    assert (await engine.sync_calendar(calendar.id)).outcome is SyncOutcome.HELD
    confirmed = await engine.sync_calendar(calendar.id, confirm_removals=True)
    assert confirmed.removed == 3


async def test_a_few_removals_are_not_held(engine: Engine, feeds: FeedServer) -> None:
    events = [event(f"e{i}", T0 + i * timedelta(hours=1)) for i in range(30)]
    feeds.set("/a.ics", ics(*events))
    calendar = await engine.add_calendar(feeds.url("/a.ics"))
    await engine.sync_calendar(calendar.id)
    feeds.set("/a.ics", ics(*events[:20]))
    result = await engine.sync_calendar(calendar.id)
    assert (result.outcome, result.removed) == (SyncOutcome.CHANGED, 10)


async def test_broken_feed_fails_alone_and_loses_nothing(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    feeds.set("/good.ics", ics(event("g", T0 + timedelta(hours=1))))
    feeds.set("/bad.ics", ics(event("b", T0 + timedelta(hours=1))))
    good = await engine.add_calendar(feeds.url("/good.ics"), name="Good")
    bad = await engine.add_calendar(feeds.url("/bad.ics"), name="Bad")
    await engine.sync_due()
    feeds.set(
        "/bad.ics", "<html><body>Please log in</body></html>", content_type="text/html"
    )
    feeds.set(
        "/good.ics",
        ics(event("g", T0 + timedelta(hours=1)), event("h", T0 + timedelta(hours=2))),
    )
    await engine.request_sync(good.id)
    await engine.request_sync(bad.id)
    cycle = await engine.sync_due()
    by_id = {result.calendar_id: result for result in cycle.results}
    assert by_id[good.id].added == 1
    failed = by_id[bad.id]
    assert failed.outcome is SyncOutcome.FAILED
    assert failed.error is not None
    assert "bad.ics" in failed.error
    assert "HTML" in failed.error or "html" in failed.error
    assert [o.key.uid for o in await engine.store.list_occurrences(bad.id)] == ["b"]
    state = (await engine.get_calendar(bad.id)).state
    assert state.consecutive_failures == 1
    assert state.next_sync_at is not None
    assert state.next_sync_at > clock()


async def test_retry_after_is_honoured(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    feeds.set("/a.ics", ics())
    feeds.fail("/a.ics", 503, retry_after=3600)
    calendar = await engine.add_calendar(feeds.url("/a.ics"))
    result = await engine.sync_calendar(calendar.id)
    assert result.outcome is SyncOutcome.FAILED
    assert result.next_sync_at is not None
    assert result.next_sync_at >= clock() + timedelta(hours=1)


async def test_circuit_opens_after_repeated_failures_and_closes_on_success(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    feeds.set("/a.ics", ics())
    feeds.fail("/a.ics", 500)
    calendar = await engine.add_calendar(feeds.url("/a.ics"))
    threshold = engine.settings.breaker.failure_threshold
    for _ in range(threshold):
        await engine.sync_calendar(calendar.id)
        clock.advance(timedelta(minutes=1))
    state = (await engine.get_calendar(calendar.id)).state
    assert state.circuit is CircuitState.OPEN
    assert state.next_sync_at is not None
    assert state.next_sync_at - clock() > timedelta(minutes=30)
    feeds.recover("/a.ics")
    clock.set(state.next_sync_at)
    probe = await engine.sync_due()
    assert [r.outcome for r in probe.results] == [SyncOutcome.CHANGED] or [
        r.outcome for r in probe.results
    ] == [SyncOutcome.UNCHANGED]
    assert (await engine.get_calendar(calendar.id)).state.circuit is CircuitState.CLOSED


async def test_refresh_interval_is_a_floor_for_the_next_sync(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    feeds.set("/a.ics", ics(extra="REFRESH-INTERVAL;VALUE=DURATION:PT6H"))
    calendar = await engine.add_calendar(feeds.url("/a.ics"), every="15m")
    result = await engine.sync_calendar(calendar.id)
    assert result.next_sync_at == clock() + timedelta(hours=6)
    clock.advance(timedelta(hours=6))
    again = await engine.sync_calendar(calendar.id)  # a 304 keeps the floor
    assert again.not_modified
    assert again.next_sync_at == clock() + timedelta(hours=6)


async def test_sync_due_takes_manual_requests_first_and_skips_calendars_not_due(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    for name in ("a", "b", "c"):
        feeds.set(f"/{name}.ics", ics())
    ids = [(await engine.add_calendar(feeds.url(f"/{n}.ics"))).id for n in "abc"]
    assert (await engine.sync_due()).counts["synced"] == 3
    assert (await engine.sync_due()).counts["synced"] == 0
    await engine.request_sync(ids[2])
    again = await engine.sync_due(limit=1)
    assert [r.calendar_id for r in again.results] == [ids[2]]


async def test_sync_of_a_leased_calendar_is_busy(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    feeds.set("/a.ics", ics())
    calendar = await engine.add_calendar(feeds.url("/a.ics"))
    leases = await engine.store.claim_due_calendars(
        clock(), limit=1, worker="other", lease_ttl=timedelta(minutes=5)
    )
    assert [lease.calendar_id for lease in leases] == [calendar.id]
    result = await engine.sync_calendar(calendar.id)
    assert result.outcome is SyncOutcome.BUSY
    assert feeds.requests("/a.ics") == ()


async def test_removing_a_lead_cancels_its_pending_reminders(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    feeds.set("/a.ics", ics(event("a", T0 + 5 * MINUTE)))
    calendar = await engine.add_calendar(feeds.url("/a.ics"), leads=["10m", "30m"])
    first = await engine.sync_calendar(calendar.id)
    assert first.notifications_created == 2
    await engine.update_calendar(calendar.id, leads=["30m"])
    records = await engine.store.list_notifications(calendar_id=calendar.id)
    statuses = {r.notification.lead: r.status for r in records}
    assert statuses == {
        timedelta(minutes=10): NotificationStatus.CANCELLED,
        timedelta(minutes=30): NotificationStatus.PENDING,
    }


class _RefusingStore(SQLiteStore):
    """A real SQLite store that fails reading one calendar's occurrences."""

    refuse: str = ""

    async def list_occurrences(
        self, calendar_id, window=None, *, include_expired=False
    ):  # type: ignore[no-untyped-def]
        if calendar_id == self.refuse:
            raise RuntimeError("disk I/O error")
        return await super().list_occurrences(
            calendar_id, window, include_expired=include_expired
        )


async def test_unexpected_error_on_one_calendar_leaves_the_others_syncing(
    tmp_path: Path, feeds: FeedServer, clock: ManualClock
) -> None:
    store = _RefusingStore(tmp_path / "refusing.db")
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    async with Engine(store, fetcher, settings=settings(), clock=clock) as engine:
        ids = []
        for name in "ab":
            feeds.set(f"/{name}.ics", ics(event(name, T0 + timedelta(hours=1))))
            ids.append((await engine.add_calendar(feeds.url(f"/{name}.ics"))).id)
        store.refuse = ids[0]
        cycle = await engine.sync_due()
        by_id = {result.calendar_id: result for result in cycle.results}
        assert by_id[ids[0]].outcome is SyncOutcome.FAILED
        assert "RuntimeError" in (by_id[ids[0]].error or "")
        assert by_id[ids[1]].added == 1
        state = (await engine.get_calendar(ids[0])).state
        assert state.consecutive_failures == 1


async def test_event_moved_away_and_back_gets_its_reminder_again(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    start = T0 + 5 * MINUTE
    feeds.set("/a.ics", ics(event("a", start)))
    calendar = await engine.add_calendar(feeds.url("/a.ics"))
    assert (await engine.sync_calendar(calendar.id)).notifications_created == 1
    feeds.set("/a.ics", ics(event("a", start + timedelta(hours=1))))
    assert (await engine.sync_calendar(calendar.id)).notifications_cancelled == 1
    feeds.set("/a.ics", ics(event("a", start)))
    assert (await engine.sync_calendar(calendar.id)).notifications_created == 1
    handler = Recorder()
    await engine.dispatch_notifications(handler)
    assert [d.notification.start for d in handler.deliveries] == [start]


async def test_a_cut_off_feed_adds_what_it_holds_but_removes_nothing(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    events = [event(f"e{i}", T0 + i * timedelta(hours=1)) for i in range(1, 6)]
    feeds.set("/a.ics", ics(*events))
    calendar = await engine.add_calendar(feeds.url("/a.ics"), name="Team")
    await engine.sync_calendar(calendar.id)
    whole = ics(event("new", T0 + timedelta(hours=9)), *events)
    feeds.set("/a.ics", whole[: whole.index("UID:e3")])
    result = await engine.sync_calendar(calendar.id)
    assert (result.outcome, result.added, result.held_removals) == (
        SyncOutcome.HELD,
        1,
        3,
    )
    assert "feed truncated" in [problem.what for problem in result.problems]
    assert len(await engine.store.list_occurrences(calendar.id)) == 6
    state = (await engine.get_calendar(calendar.id)).state
    assert state.last_error is not None
    assert "held back 3 of 5" in state.last_error
    assert "Team" in state.last_error


async def test_a_parse_past_its_time_limit_fails_the_calendar_and_keeps_its_events(
    store: Store, feeds: FeedServer, clock: ManualClock
) -> None:
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    async with Engine(store, fetcher, settings=settings(), clock=clock) as engine:
        feeds.set("/a.ics", ics(event("kept", T0 + timedelta(hours=1))))
        calendar = await engine.add_calendar(feeds.url("/a.ics"))
        first = await engine.sync_calendar(calendar.id)
        assert first.ok
    config = settings(parse_timeout=timedelta(milliseconds=1))
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    async with Engine(store, fetcher, settings=config, clock=clock) as engine:
        many = [event(f"e{i}", T0 + i * MINUTE, rrule="FREQ=DAILY") for i in range(300)]
        feeds.set("/a.ics", ics(*many))
        result = await engine.sync_calendar(calendar.id)
        assert result.outcome is SyncOutcome.FAILED
        assert result.error is not None
        assert "took longer than" in result.error
        stored = await engine.store.list_occurrences(calendar.id)
        assert [o.key.uid for o in stored] == ["kept"]


async def test_a_sync_whose_lease_was_taken_over_writes_nothing(
    store: Store, feeds: FeedServer, clock: ManualClock
) -> None:
    config = settings(
        lease_ttl=timedelta(seconds=10),
        parse_timeout=timedelta(seconds=5),
        handler_timeout=timedelta(seconds=5),
    )
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    async with Engine(store, fetcher, settings=config, clock=clock) as engine:
        feeds.set("/a.ics", ics(event("a", T0 + timedelta(hours=1))))
        feeds.hold("/a.ics")
        calendar = await engine.add_calendar(feeds.url("/a.ics"))
        syncing = asyncio.create_task(engine.sync_calendar(calendar.id))
        await feeds.held("/a.ics")  # the fetch is under way
        clock.advance(timedelta(seconds=11))  # the lease has expired
        taken = await engine.store.claim_calendar(
            calendar.id, clock(), worker="other", lease_ttl=timedelta(minutes=1)
        )
        assert taken is not None
        feeds.release("/a.ics")
        result = await syncing
        assert result.outcome is SyncOutcome.LOST
        assert await engine.store.list_occurrences(calendar.id) == []


async def test_a_lead_of_zero_is_refused_unless_a_late_grace_lets_it_fire(
    store: Store, feeds: FeedServer, clock: ManualClock
) -> None:
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    async with Engine(store, fetcher, settings=settings(), clock=clock) as engine:
        with pytest.raises(ValidationError, match="late_grace"):
            await engine.add_calendar(feeds.url("/a.ics"), leads=["0m"])
        assert await engine.list_calendars() == []
    graceful = settings(late_grace=timedelta(minutes=2))
    fetcher = HttpFetcher(allow=["127.0.0.1"])  # the first engine closed its own
    async with Engine(store, fetcher, settings=graceful, clock=clock) as engine:
        feeds.set("/a.ics", ics(event("a", T0 + timedelta(hours=1))))
        calendar = await engine.add_calendar(feeds.url("/a.ics"), leads=["0m"])
        await engine.sync_calendar(calendar.id)
        clock.set(T0 + timedelta(hours=1, seconds=30))
        assert (await engine.check_notifications()).created == 1


async def test_sync_due_raises_one_store_error_when_the_store_is_locked(
    tmp_path: Path, feeds: FeedServer, clock: ManualClock
) -> None:
    path = tmp_path / "locked.db"
    store = SQLiteStore(path, busy_timeout=timedelta(milliseconds=100))
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    async with Engine(store, fetcher, settings=settings(), clock=clock) as engine:
        feeds.set("/a.ics", ics(event("a", T0 + 60 * MINUTE)))
        await engine.add_calendar(feeds.url("/a.ics"))
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreUnavailable, match="busy_timeout"):
                await engine.sync_due()
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert (await engine.sync_due()).counts["synced"] == 1


async def test_a_sync_names_the_next_fire_time_among_what_it_brought_in(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    feeds.set(
        "/a.ics",
        ics(
            event("later", T0 + 3 * 60 * MINUTE),
            event("soon", T0 + 30 * MINUTE),
            event("gone", T0 + 20 * MINUTE, status="CANCELLED"),
            event("started", T0 - 5 * MINUTE),
        ),
    )
    calendar = await engine.add_calendar(feeds.url("/a.ics"), leads=["10m", "1h"])
    first = await engine.sync_calendar(calendar.id)
    assert first.next_fire_at == T0 + 20 * MINUTE  # "soon", 10 minutes before
    clock.advance(MINUTE)
    unchanged = await engine.sync_calendar(calendar.id, force=True)
    assert unchanged.next_fire_at is None
    feeds.set("/a.ics", ics(event("later", T0 + 2 * 60 * MINUTE)))
    moved = await engine.sync_calendar(calendar.id, confirm_removals=True)
    assert moved.next_fire_at == T0 + 60 * MINUTE


async def test_a_sync_after_another_engines_write_diffs_against_the_store(
    feeds: FeedServer, clock: ManualClock, tmp_path: Path
) -> None:
    # Each Syncer diffs against what it last wrote while the stored state still
    # names that parse; another engine's write in between must be read back.
    path = tmp_path / "shared.db"
    start = T0 + timedelta(hours=2)
    base = [event("x", start), event("y", start + MINUTE), event("z", start)]
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    first = Engine(SQLiteStore(path), fetcher, settings=settings(), clock=clock)
    other = Engine(
        SQLiteStore(path),
        fetcher,
        settings=attrs.evolve(settings(), worker="other"),
        clock=clock,
    )
    async with first, other:
        feeds.set("/a.ics", ics(*base))
        calendar = await first.add_calendar(feeds.url("/a.ics"))
        assert (await first.sync_calendar(calendar.id)).added == 3
        clock.advance(15 * MINUTE)
        edited = event("y", start + MINUTE, summary="moved")
        feeds.set("/a.ics", ics(base[0], edited, base[2], event("w", start)))
        by_other = await other.sync_calendar(calendar.id)
        assert (by_other.added, by_other.updated) == (1, 1)
        clock.advance(15 * MINUTE)
        feeds.set("/a.ics", ics(*base))
        again = await first.sync_calendar(calendar.id)
        assert (again.added, again.updated, again.removed) == (0, 1, 1)
        stored = await first.store.list_occurrences(calendar.id)
        assert sorted(o.key.uid for o in stored) == ["x", "y", "z"]
        assert {o.summary for o in stored if o.key.uid == "y"} != {"moved"}
        # Its own write is the next sync's base: still right.
        clock.advance(15 * MINUTE)
        feeds.set("/a.ics", ics(base[0], base[1]))
        last = await first.sync_calendar(calendar.id)
        assert (last.added, last.updated, last.removed) == (0, 0, 1)
        stored = await first.store.list_occurrences(calendar.id)
        assert sorted(o.key.uid for o in stored) == ["x", "y"]
