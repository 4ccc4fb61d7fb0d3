"""`upcoming` and `explain`: what will fire and why, read from a real SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest

from calsync import (
    Calendar,
    Engine,
    Notification,
    Occurrence,
    SQLiteStore,
    ValidationError,
)
from calsync.core import CalendarNotFound, ChangeSet, OccurrenceKey
from calsync.engine.insight import Explanation, explain, upcoming
from calsync.stores import NotificationStatus, SyncState, SyncWrite
from calsync.testing import ManualClock

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
TEN = timedelta(minutes=10)
HOUR = timedelta(hours=1)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    async with SQLiteStore(tmp_path / "calsync.db") as opened:
        yield opened


def event(
    uid: str,
    start: datetime,
    *,
    summary: str = "",
    status: str = "",
    alarms: tuple[timedelta, ...] = (),
    recurrence_id: str = "",
) -> Occurrence:
    return Occurrence(
        key=OccurrenceKey(uid, recurrence_id),
        start=start,
        end=start + timedelta(minutes=30),
        summary=summary or uid,
        status=status,
        tzid="Europe/Berlin",
        alarms=alarms,
    )


async def calendar(
    store: SQLiteStore,
    name: str,
    *,
    leads: Iterable[timedelta] = (TEN,),
    **fields: object,
) -> Calendar:
    url = fields.pop("url", f"https://calendars.example.com/{name}.ics")
    return await store.add_calendar(
        Calendar(
            url=str(url),
            created_at=NOW - timedelta(days=2),
            name=name,
            leads=tuple(leads),
            **fields,  # type: ignore[arg-type]
        )
    )


async def sync(
    store: SQLiteStore,
    target: Calendar,
    changes: ChangeSet,
    *,
    state: SyncState | None = None,
) -> None:
    lease = await store.claim_calendar(
        target.id, NOW, worker="test", lease_ttl=timedelta(minutes=5)
    )
    assert lease is not None
    write = SyncWrite(state or SyncState(last_success_at=NOW), changes)
    await store.apply_sync(lease, write, NOW)


async def notify(
    store: SQLiteStore,
    target: Calendar,
    occurrence: Occurrence,
    lead: timedelta = TEN,
    *,
    status: NotificationStatus = NotificationStatus.PENDING,
) -> Notification:
    notification = Notification(key=occurrence.key, lead=lead, start=occurrence.start)
    added = await store.add_notifications(target.id, [notification], NOW, status=status)
    assert added == 1
    return notification


async def deliver(store: SQLiteStore, *, fail: str | None = None) -> list[str]:
    """Claim every due notification and mark it delivered, or dead (with *fail*)."""
    claims = await store.claim_notifications(
        NOW, limit=100, worker="test", lease_ttl=timedelta(minutes=1)
    )
    for claim in claims:
        if fail is None:
            await store.mark_delivered(claim, NOW)
        else:
            await store.mark_failed(claim, NOW, error=fail, retry_at=None)
    return [claim.id for claim in claims]


def text(explanations: Iterable[Explanation]) -> str:
    return "\n".join(line for item in explanations for line in item.lines)


# -- upcoming ------------------------------------------------------------------


async def test_upcoming_lists_the_events_ahead_with_their_reminders_by_start(
    store: SQLiteStore,
) -> None:
    work = await calendar(store, "work", leads=(TEN, HOUR))
    later = event("review", NOW + timedelta(days=2))
    sooner = event("standup", NOW + timedelta(hours=3))
    beyond = event("offsite", NOW + timedelta(days=9))
    over = event("breakfast", NOW - timedelta(minutes=5))
    await sync(store, work, ChangeSet(added=(later, sooner, beyond, over)))

    items = await upcoming(store, NOW, days=7)

    assert [item.occurrence.key.uid for item in items] == ["standup", "review"]
    assert items[0].calendar.id == work.id
    assert items[0].fires == (
        (HOUR, sooner.start - HOUR, "scheduled"),
        (TEN, sooner.start - TEN, "scheduled"),
    )


async def test_upcoming_shows_the_stored_state_of_each_reminder(
    store: SQLiteStore,
) -> None:
    work = await calendar(store, "work", leads=(TEN, HOUR))
    soon = event("standup", NOW + timedelta(minutes=30))
    later = event("review", NOW + timedelta(minutes=5))
    await sync(store, work, ChangeSet(added=(soon, later)))
    await notify(store, work, soon, HOUR)
    await deliver(store)
    await notify(store, work, later, TEN)
    await deliver(store, fail="HTTP 500 from the webhook")
    await notify(store, work, later, HOUR, status=NotificationStatus.MISSED)

    items = {item.occurrence.key.uid: item.fires for item in await upcoming(store, NOW)}

    assert [state for _, _, state in items["standup"]] == ["delivered", "scheduled"]
    assert [state for _, _, state in items["review"]] == ["missed", "failed"]


async def test_a_pending_reminder_is_shown_pending(store: SQLiteStore) -> None:
    work = await calendar(store, "work")
    soon = event("standup", NOW + timedelta(minutes=5))
    await sync(store, work, ChangeSet(added=(soon,)))
    await notify(store, work, soon)

    (item,) = await upcoming(store, NOW)

    assert item.fires == ((TEN, soon.start - TEN, "pending"),)


async def test_a_cancelled_event_is_listed_without_reminders(
    store: SQLiteStore,
) -> None:
    work = await calendar(store, "work")
    off = event("standup", NOW + HOUR, status="CANCELLED")
    await sync(store, work, ChangeSet(added=(off,)))

    (item,) = await upcoming(store, NOW)

    assert item.fires == ()


async def test_paused_calendars_and_other_owners_are_left_out(
    store: SQLiteStore,
) -> None:
    paused = await calendar(store, "paused", paused=True)
    other = await calendar(store, "other", owner="acme")
    mine = await calendar(store, "mine")
    for target in (paused, other, mine):
        await sync(
            store, target, ChangeSet(added=(event(target.name or "", NOW + HOUR),))
        )

    everyone = await upcoming(store, NOW)
    acme = await upcoming(store, NOW, owner="acme")

    assert sorted(item.calendar.name or "" for item in everyone) == ["mine", "other"]
    assert [item.calendar.name for item in acme] == ["other"]


async def test_an_event_that_started_within_the_late_grace_is_still_listed(
    store: SQLiteStore,
) -> None:
    work = await calendar(store, "work")
    started = event("standup", NOW - timedelta(minutes=2))
    await sync(store, work, ChangeSet(added=(started,)))

    assert await upcoming(store, NOW) == []
    (item,) = await upcoming(store, NOW, late_grace=timedelta(minutes=5))
    assert item.fires == ((TEN, started.start - TEN, "scheduled"),)


async def test_the_events_own_alarms_count_when_the_calendar_uses_them(
    store: SQLiteStore,
) -> None:
    work = await calendar(store, "work", use_alarms=True)
    alarmed = event("standup", NOW + timedelta(days=1), alarms=(timedelta(minutes=30),))
    await sync(store, work, ChangeSet(added=(alarmed,)))

    (item,) = await upcoming(store, NOW)

    assert [lead for lead, _, _ in item.fires] == [timedelta(minutes=30), TEN]


@pytest.mark.parametrize("days", [0, -1, True, float("inf"), float("nan"), 1e308])
async def test_upcoming_refuses_a_span_that_is_not_positive_or_past_a_year(
    store: SQLiteStore, days: float
) -> None:
    with pytest.raises(ValidationError, match="days"):
        await upcoming(store, NOW, days=days)


# -- explain: an event -----------------------------------------------------------


async def test_explain_a_uid_says_when_each_reminder_will_fire(
    store: SQLiteStore,
) -> None:
    work = await calendar(store, "work", leads=(TEN, HOUR))
    standup = event("standup", NOW + timedelta(hours=3), summary="Standup")
    await sync(store, work, ChangeSet(added=(standup,)))

    (item,) = await explain(store, NOW, "standup")

    assert item.occurrence == standup
    assert item.calendar.id == work.id
    headline, *rest = item.lines
    assert "'Standup'" in headline
    assert "2026-03-02 11:00 UTC (in 3 h)" in headline
    assert "12:00 Europe/Berlin" in headline
    assert rest[0] == (
        "lead 1h: fires 2026-03-02 10:00 UTC (in 2 h): will fire then (not created yet)"
    )
    assert rest[1].startswith("lead 10m: fires 2026-03-02 10:50 UTC (in 2 h 50 min)")
    assert "late grace 0s" in rest[-1]


async def test_explain_says_a_reminder_was_already_delivered(
    store: SQLiteStore,
) -> None:
    work = await calendar(store, "work")
    standup = event("standup", NOW + timedelta(minutes=5))
    await sync(store, work, ChangeSet(added=(standup,)))
    await notify(store, work, standup)
    (delivered_id,) = await deliver(store)

    explained = text(await explain(store, NOW, "standup"))

    assert "delivered 2026-03-02 08:00 UTC (now)" in explained
    assert delivered_id in explained


async def test_explain_says_why_a_dead_letter_failed_and_how_to_retry(
    store: SQLiteStore,
) -> None:
    work = await calendar(store, "work")
    standup = event("standup", NOW + timedelta(minutes=5))
    await sync(store, work, ChangeSet(added=(standup,)))
    await notify(store, work, standup)
    (failed_id,) = await deliver(store, fail="HTTP 500 from the webhook")

    explained = text(await explain(store, NOW, "standup"))

    assert (
        "failed after 1 attempt(s) (last error: HTTP 500 from the webhook)" in explained
    )
    assert f"`calsync requeue {failed_id}`" in explained


async def test_explain_says_a_claim_ended_without_an_outcome(
    store: SQLiteStore,
) -> None:
    work = await calendar(store, "work")
    standup = event("standup", NOW + timedelta(minutes=5))
    await sync(store, work, ChangeSet(added=(standup,)))
    await notify(store, work, standup)
    await store.claim_notifications(
        NOW, limit=1, worker="crashed", lease_ttl=timedelta(minutes=1)
    )

    explained = text(await explain(store, NOW + timedelta(minutes=2), "standup"))

    assert "claimed for delivery 1 time(s) with no outcome yet" in explained
    assert "failed" not in explained


async def test_explain_says_a_pending_reminder_waits_for_dispatch(
    store: SQLiteStore,
) -> None:
    work = await calendar(store, "work")
    standup = event("standup", NOW + timedelta(minutes=5))
    await sync(store, work, ChangeSet(added=(standup,)))
    await notify(store, work, standup)

    assert "pending: due, waiting for the next dispatch" in text(
        await explain(store, NOW, "standup")
    )


async def test_explain_says_a_due_reminder_is_created_by_the_next_check(
    store: SQLiteStore,
) -> None:
    work = await calendar(store, "work")
    await sync(
        store, work, ChangeSet(added=(event("standup", NOW + timedelta(minutes=5)),))
    )

    assert "due now: the next notification check creates it" in text(
        await explain(store, NOW, "standup")
    )


async def test_explain_says_a_reminder_was_missed_while_calsync_was_down(
    store: SQLiteStore,
) -> None:
    work = await calendar(store, "work")
    earlier = event("standup", NOW - timedelta(hours=1))
    await sync(store, work, ChangeSet(added=(earlier,)))
    await notify(store, work, earlier, status=NotificationStatus.MISSED)

    explained = text(await explain(store, NOW, "standup"))

    assert "missed: calsync was not running" in explained
    assert "2026-03-02 07:00 UTC (1 h ago) (start + late grace)" in explained


async def test_explain_says_an_event_that_started_unnoticed_will_not_fire(
    store: SQLiteStore,
) -> None:
    work = await calendar(store, "work")
    await sync(
        store, work, ChangeSet(added=(event("standup", NOW - timedelta(minutes=1)),))
    )

    assert "will not fire: the event started before a reminder was created" in text(
        await explain(store, NOW, "standup")
    )


async def test_explain_says_a_cancelled_event_gets_no_reminders(
    store: SQLiteStore,
) -> None:
    work = await calendar(store, "work")
    await sync(
        store,
        work,
        ChangeSet(added=(event("standup", NOW + HOUR, status="CANCELLED"),)),
    )

    explained = text(await explain(store, NOW, "standup"))

    assert "STATUS:CANCELLED" in explained
    assert (
        "lead 10m: fires 2026-03-02 08:50 UTC (in 50 min): will not fire" in explained
    )


async def test_explain_says_a_paused_calendar_creates_no_reminders(
    store: SQLiteStore,
) -> None:
    work = await calendar(store, "work")
    await sync(store, work, ChangeSet(added=(event("standup", NOW + HOUR),)))
    await store.update_calendar(attrs.evolve(work, paused=True))

    explained = text(await explain(store, NOW, "standup"))

    expected = f"no reminders are created until `calsync resume {work.id}`"
    assert f"its calendar is paused: {expected}" in explained


async def test_explain_says_an_expired_event_is_outside_the_window(
    store: SQLiteStore,
) -> None:
    work = await calendar(store, "work")
    old = event("standup", NOW - timedelta(days=3))
    await sync(store, work, ChangeSet(added=(old,)))

    explained = text(await explain(store, NOW, "standup"))

    assert "outside the window (ended more than 1d ago)" in explained


async def test_explain_lists_reminders_left_from_an_earlier_start(
    store: SQLiteStore,
) -> None:
    work = await calendar(store, "work")
    first = event("standup", NOW + timedelta(minutes=5))
    await sync(store, work, ChangeSet(added=(first,)))
    await notify(store, work, first)
    moved = attrs.evolve(first, start=first.start + HOUR, end=first.end + HOUR)
    await sync(store, work, ChangeSet(updated=(moved,)))

    explanations = await explain(store, NOW, "standup")

    assert explanations[0].occurrence == moved
    assert "will fire then (not created yet)" in text(explanations[:1])
    earlier = explanations[-1]
    assert earlier.occurrence is None
    assert "no longer has" in earlier.lines[0]
    assert (
        "start 2026-03-02 08:05 UTC (in 5 min), lead 10m: cancelled" in earlier.lines[1]
    )


async def test_explain_shows_the_last_and_the_next_instances_of_a_recurring_event(
    store: SQLiteStore,
) -> None:
    work = await calendar(store, "work")
    days = [NOW + timedelta(days=offset, hours=1) for offset in range(-3, 8)]
    instances = tuple(
        event("daily", start, recurrence_id=start.strftime("%Y%m%dT%H%M%SZ"))
        for start in days
    )
    await sync(store, work, ChangeSet(added=instances))

    explanations = await explain(store, NOW, "daily")

    starts = [item.occurrence.start for item in explanations if item.occurrence]
    assert starts == days[2:8]


async def test_explain_an_unknown_query_says_what_to_look_for(
    store: SQLiteStore,
) -> None:
    await calendar(store, "work")
    with pytest.raises(CalendarNotFound, match="calsync list"):
        await explain(store, NOW, "no-such-thing")


async def test_explain_refuses_an_empty_query(store: SQLiteStore) -> None:
    with pytest.raises(ValidationError):
        await explain(store, NOW, "  ")


# -- explain: a calendar ---------------------------------------------------------


async def test_explain_a_calendar_id_describes_it_and_its_next_events(
    store: SQLiteStore,
) -> None:
    work = await calendar(
        store,
        "work",
        url="https://calendars.example.com/feed.ics?token=t0k3n",
        leads=(TEN, HOUR),
    )
    starts = [NOW + timedelta(hours=hours) for hours in range(1, 9)]
    await sync(
        store,
        work,
        ChangeSet(added=tuple(event(f"e{n}", start) for n, start in enumerate(starts))),
        state=SyncState(
            last_success_at=NOW - HOUR,
            last_error="calendars.example.com: HTTP 503",
            consecutive_failures=2,
            next_sync_at=NOW + timedelta(minutes=4),
        ),
    )

    header, *events = await explain(store, NOW, work.id)

    assert header.occurrence is None
    described = "\n".join(header.lines)
    assert "token=***" in described
    assert "t0k3n" not in described
    assert "reminds 10m, 1h before each event" in described
    assert "last synced successfully 2026-03-02 07:00 UTC (1 h ago)" in described
    assert (
        "last error (2 failure(s) in a row): calendars.example.com: HTTP 503"
        in described
    )
    assert "next sync 2026-03-02 08:04 UTC (in 4 min)" in described
    assert [item.occurrence.start for item in events if item.occurrence] == starts[:5]


async def test_explain_a_paused_calendar_says_how_to_resume_it(
    store: SQLiteStore,
) -> None:
    work = await calendar(store, "work", paused=True)

    (header,) = await explain(store, NOW, work.id)

    explained = "\n".join(header.lines)
    assert f"`calsync resume {work.id}`" in explained
    assert "never synced successfully yet" in explained
    assert "no upcoming events" in explained


# -- status ----------------------------------------------------------------------


async def test_status_of_one_owner_counts_only_their_reminders(
    store: SQLiteStore,
) -> None:
    alice = await calendar(store, "alice-work", owner="alice")
    standup = event("standup", NOW + timedelta(minutes=5))
    await sync(store, alice, ChangeSet(added=(standup,)))
    await notify(store, alice, standup)
    await deliver(store, fail="handler down")
    bob_home = await calendar(store, "bob-home", owner="bob")
    await sync(store, bob_home, ChangeSet())
    engine = Engine(store, clock=ManualClock(NOW))

    bob = await engine.status(owner="bob")
    everyone = await engine.status()

    assert [status.calendar.name for status in bob.calendars] == ["bob-home"]
    assert (bob.pending, bob.failed, bob.missed) == (0, 0, 0)
    assert bob.healthy
    assert everyone.failed == 1
    assert not everyone.healthy
