"""The Store contract: every implementation passes every test here."""

from __future__ import annotations

from datetime import datetime, timedelta

import attrs
import pytest

from calsync import BasicAuth, BearerAuth, Notification, Store, ValidationError, Window
from calsync.core import (
    CalendarExists,
    CalendarNotFound,
    ChangeSet,
    CircuitState,
    LeaseLost,
    OccurrenceKey,
)
from calsync.stores import (
    JobOutcome,
    JobRun,
    NotificationStatus,
    SyncState,
    SyncWrite,
    notification_id,
)
from calsync.stores.store import SCHEMA_VERSION

from .conftest import MINUTE, T0, StoreFactory, calendar, occurrence

TTL = timedelta(minutes=5)
PENDING = NotificationStatus.PENDING


async def claim_one(store: Store, now: datetime = T0, worker: str = "w1"):
    leases = await store.claim_due_calendars(
        now, limit=10, worker=worker, lease_ttl=TTL
    )
    assert len(leases) == 1
    return leases[0]


async def seed(store: Store, *occurrences, cal=None):
    """Add a calendar and sync the given occurrences into it."""
    cal = await store.add_calendar(cal or calendar())
    lease = await claim_one(store)
    await store.apply_sync(
        lease,
        SyncWrite(
            state=SyncState(next_sync_at=T0 + timedelta(hours=1)),
            changes=ChangeSet(added=tuple(occurrences)),
        ),
        T0,
    )
    return cal


def note(occ, lead: timedelta = 10 * MINUTE) -> Notification:
    return Notification(key=occ.key, lead=lead, start=occ.start)


# -- calendars -------------------------------------------------------------


async def test_store_satisfies_the_protocol(store: Store) -> None:
    assert isinstance(store, Store)
    assert await store.schema_version() == SCHEMA_VERSION


async def test_added_calendar_reads_back_equal_and_due_at_creation(
    store: Store,
) -> None:
    cal = calendar(
        name="Team",
        leads=(timedelta(minutes=10), timedelta(hours=1, microseconds=5)),
        tz="Europe/Berlin",
        use_alarms=True,
        auth=BasicAuth("me", "s3cret"),
    )
    stored = await store.add_calendar(cal)
    assert stored.state.next_sync_at == T0
    assert await store.get_calendar(cal.id) == stored
    assert stored == attrs.evolve(cal, state=SyncState(next_sync_at=T0))


async def test_bearer_auth_round_trips(store: Store) -> None:
    cal = await store.add_calendar(calendar(auth=BearerAuth("tok")))
    assert (await store.get_calendar(cal.id)).auth == BearerAuth("tok")


async def test_same_id_twice_is_refused(store: Store) -> None:
    cal = await store.add_calendar(calendar())
    with pytest.raises(CalendarExists):
        await store.add_calendar(calendar("https://example.com/other.ics", id=cal.id))


async def test_same_url_twice_for_one_owner_is_refused(store: Store) -> None:
    await store.add_calendar(calendar())
    with pytest.raises(CalendarExists):
        await store.add_calendar(calendar())
    other = await store.add_calendar(calendar(owner="acme"))
    assert other.owner == "acme"


async def test_unknown_calendar_is_not_found(store: Store) -> None:
    with pytest.raises(CalendarNotFound):
        await store.get_calendar("nope")
    with pytest.raises(CalendarNotFound):
        await store.remove_calendar("nope")
    with pytest.raises(CalendarNotFound):
        await store.list_occurrences("nope")
    with pytest.raises(CalendarNotFound):
        await store.request_sync("nope", T0)


async def test_owner_scopes_get_and_remove(store: Store) -> None:
    cal = await store.add_calendar(calendar(owner="acme"))
    assert (await store.get_calendar(cal.id, owner="acme")).id == cal.id
    with pytest.raises(CalendarNotFound):
        await store.get_calendar(cal.id, owner="globex")
    with pytest.raises(CalendarNotFound):
        await store.remove_calendar(cal.id, owner="globex")
    assert (await store.get_calendar(cal.id)).id == cal.id


async def test_list_calendars_by_owner_oldest_first(store: Store) -> None:
    late = await store.add_calendar(calendar("https://a/2.ics", created_at=T0 + MINUTE))
    early = await store.add_calendar(calendar("https://a/1.ics"))
    other = await store.add_calendar(
        calendar("https://a/3.ics", owner="acme", created_at=T0 + 2 * MINUTE)
    )
    assert [c.id for c in await store.list_calendars()] == [early.id, late.id, other.id]
    assert [c.id for c in await store.list_calendars(owner="default")] == [
        early.id,
        late.id,
    ]
    assert [c.id for c in await store.list_calendars(owner="acme")] == [other.id]


async def test_update_replaces_settings_and_keeps_sync_state(store: Store) -> None:
    cal = await store.add_calendar(calendar())
    lease = await claim_one(store)
    state = SyncState(etag='"v1"', body_hash="abc", next_sync_at=T0 + MINUTE)
    await store.apply_sync(lease, SyncWrite(state=state), T0)
    changed = attrs.evolve(
        cal, name="Renamed", paused=True, leads=(timedelta(0),), state=SyncState()
    )
    updated = await store.update_calendar(changed)
    assert updated.name == "Renamed"
    assert updated.paused
    assert updated.leads == (timedelta(0),)
    assert updated.state == state
    assert await store.get_calendar(cal.id) == updated


async def test_update_to_a_new_url_forgets_validators(store: Store) -> None:
    cal = await store.add_calendar(calendar())
    lease = await claim_one(store)
    state = SyncState(
        etag='"v1"', last_modified="x", body_hash="abc", next_sync_at=T0 + MINUTE
    )
    await store.apply_sync(lease, SyncWrite(state=state), T0)
    updated = await store.update_calendar(
        attrs.evolve(cal, url="https://example.com/new.ics")
    )
    assert updated.state.etag is None
    assert updated.state.last_modified is None
    assert updated.state.body_hash is None
    assert updated.state.next_sync_at == T0 + MINUTE


async def test_update_to_a_taken_url_changes_nothing(store: Store) -> None:
    first = await store.add_calendar(calendar("https://a/1.ics"))
    second = await store.add_calendar(calendar("https://a/2.ics"))
    with pytest.raises(CalendarExists):
        await store.update_calendar(attrs.evolve(second, url=first.url, name="x"))
    assert await store.get_calendar(second.id) == second


async def test_update_unknown_calendar_is_not_found(store: Store) -> None:
    with pytest.raises(CalendarNotFound):
        await store.update_calendar(calendar())


async def test_remove_deletes_occurrences_and_notifications(store: Store) -> None:
    occ = occurrence("a", T0 + 5 * MINUTE)
    cal = await seed(store, occ)
    assert await store.add_notifications(cal.id, [note(occ)], T0) == 1
    await store.remove_calendar(cal.id)
    with pytest.raises(CalendarNotFound):
        await store.get_calendar(cal.id)
    assert await store.list_notifications() == []
    assert await store.occurrences_starting(T0, T0 + timedelta(days=1)) == []
    again = await store.add_calendar(calendar())
    assert await store.list_occurrences(again.id) == []


# -- claiming calendars ----------------------------------------------------


async def test_new_calendar_is_claimed_once_while_leased(store: Store) -> None:
    cal = await store.add_calendar(calendar())
    lease = await claim_one(store)
    assert lease.calendar == cal
    assert lease.worker == "w1"
    assert lease.expires_at == T0 + TTL
    again = await store.claim_due_calendars(
        T0 + MINUTE, limit=10, worker="w2", lease_ttl=TTL
    )
    assert again == []


async def test_calendar_is_due_exactly_at_next_sync_at(store: Store) -> None:
    due = T0 + timedelta(hours=1)
    await store.add_calendar(calendar(state=SyncState(next_sync_at=due)))
    early = await store.claim_due_calendars(
        due - timedelta(microseconds=1), limit=5, worker="w", lease_ttl=TTL
    )
    assert early == []
    assert (
        len(await store.claim_due_calendars(due, limit=5, worker="w", lease_ttl=TTL))
        == 1
    )


async def test_claims_go_earliest_due_first_up_to_the_limit(store: Store) -> None:
    ids = []
    for minutes in (30, 10, 20):
        cal = await store.add_calendar(
            calendar(
                f"https://a/{minutes}.ics",
                state=SyncState(next_sync_at=T0 + minutes * MINUTE),
            )
        )
        ids.append((minutes, cal.id))
    now = T0 + timedelta(hours=1)
    leases = await store.claim_due_calendars(now, limit=2, worker="w", lease_ttl=TTL)
    assert [lease.calendar_id for lease in leases] == [
        cal_id for _, cal_id in sorted(ids)[:2]
    ]


async def test_paused_calendar_is_not_claimed_unless_requested(store: Store) -> None:
    cal = await store.add_calendar(calendar(paused=True))
    assert await store.claim_due_calendars(T0, limit=5, worker="w", lease_ttl=TTL) == []
    await store.request_sync(cal.id, T0)
    assert (await claim_one(store)).calendar_id == cal.id


async def test_requested_sync_comes_before_periodic_ones(store: Store) -> None:
    overdue = await store.add_calendar(calendar("https://a/1.ics"))
    later = await store.add_calendar(
        calendar(
            "https://a/2.ics", state=SyncState(next_sync_at=T0 + timedelta(days=1))
        )
    )
    await store.request_sync(later.id, T0)
    leases = await store.claim_due_calendars(T0, limit=1, worker="w", lease_ttl=TTL)
    assert [lease.calendar_id for lease in leases] == [later.id]
    leases = await store.claim_due_calendars(T0, limit=5, worker="w", lease_ttl=TTL)
    assert [lease.calendar_id for lease in leases] == [overdue.id]


async def test_apply_clears_a_request_made_before_the_claim(store: Store) -> None:
    cal = await store.add_calendar(
        calendar(state=SyncState(next_sync_at=T0 + timedelta(days=1)))
    )
    await store.request_sync(cal.id, T0)
    lease = await claim_one(store, T0 + MINUTE)
    later = SyncState(next_sync_at=T0 + timedelta(days=1))
    await store.apply_sync(lease, SyncWrite(state=later), T0 + MINUTE)
    assert (
        await store.claim_due_calendars(
            T0 + 2 * MINUTE, limit=5, worker="w", lease_ttl=TTL
        )
        == []
    )


async def test_request_during_a_sync_survives_its_apply(store: Store) -> None:
    cal = await store.add_calendar(calendar())
    lease = await claim_one(store)
    await store.request_sync(cal.id, T0 + MINUTE)
    later = SyncState(next_sync_at=T0 + timedelta(days=1))
    await store.apply_sync(lease, SyncWrite(state=later), T0 + 2 * MINUTE)
    assert (await claim_one(store, T0 + 3 * MINUTE)).calendar_id == cal.id


async def test_second_request_during_a_requested_sync_survives_its_apply(
    store: Store,
) -> None:
    cal = await store.add_calendar(
        calendar(state=SyncState(next_sync_at=T0 + timedelta(days=1)))
    )
    await store.request_sync(cal.id, T0)
    lease = await claim_one(store, T0 + MINUTE)
    await store.request_sync(cal.id, T0 + 2 * MINUTE)
    later = SyncState(next_sync_at=T0 + timedelta(days=1))
    await store.apply_sync(lease, SyncWrite(state=later), T0 + 3 * MINUTE)
    assert (await claim_one(store, T0 + 4 * MINUTE)).calendar_id == cal.id


async def test_expired_lease_is_taken_over_and_the_old_write_refused(
    store: Store,
) -> None:
    occ = occurrence("a", T0 + timedelta(hours=2))
    cal = await seed(store, occ)
    await store.request_sync(cal.id, T0)
    stale = await claim_one(store, T0, worker="slow")
    taken = await claim_one(store, T0 + TTL, worker="fast")
    assert taken.token > stale.token
    bad = SyncWrite(
        state=SyncState(last_error="stale"), changes=ChangeSet(removed=(occ,))
    )
    with pytest.raises(LeaseLost):
        await store.apply_sync(stale, bad, T0 + TTL)
    assert await store.list_occurrences(cal.id) == [occ]
    assert (await store.get_calendar(cal.id)).state.last_error is None
    await store.apply_sync(taken, SyncWrite(state=SyncState(etag="e")), T0 + TTL)
    assert (await store.get_calendar(cal.id)).state.etag == "e"


async def test_a_lease_writes_once(store: Store) -> None:
    await store.add_calendar(calendar())
    lease = await claim_one(store)
    await store.apply_sync(lease, SyncWrite(state=SyncState(etag="1")), T0)
    with pytest.raises(LeaseLost):
        await store.apply_sync(lease, SyncWrite(state=SyncState(etag="2")), T0)
    assert (await store.get_calendar(lease.calendar_id)).state.etag == "1"


async def test_apply_without_next_sync_at_makes_the_calendar_due_now(
    store: Store,
) -> None:
    await store.add_calendar(calendar())
    lease = await claim_one(store)
    await store.apply_sync(lease, SyncWrite(state=SyncState()), T0 + MINUTE)
    again = await claim_one(store, T0 + MINUTE)
    assert again.calendar.state.next_sync_at == T0 + MINUTE


async def test_released_lease_makes_the_calendar_claimable(store: Store) -> None:
    await store.add_calendar(calendar())
    lease = await claim_one(store)
    await store.release_lease(lease)
    assert (await claim_one(store, T0, worker="w2")).token == lease.token + 1
    await store.release_lease(lease)  # lost: ignored


async def test_renewed_lease_keeps_others_out(store: Store) -> None:
    await store.add_calendar(calendar())
    lease = await claim_one(store)
    renewed = await store.renew_lease(lease, T0 + 4 * MINUTE, TTL)
    assert renewed.expires_at == T0 + 9 * MINUTE
    assert (
        await store.claim_due_calendars(T0 + TTL, limit=5, worker="w2", lease_ttl=TTL)
        == []
    )
    await store.apply_sync(renewed, SyncWrite(state=SyncState(etag="ok")), T0 + TTL)


async def test_renewing_a_lost_lease_raises(store: Store) -> None:
    await store.add_calendar(calendar())
    lease = await claim_one(store)
    await claim_one(store, T0 + TTL, worker="w2")
    with pytest.raises(LeaseLost):
        await store.renew_lease(lease, T0 + TTL, TTL)


async def test_sync_state_round_trips(store: Store) -> None:
    await store.add_calendar(calendar())
    lease = await claim_one(store)
    state = SyncState(
        etag='W/"x"',
        last_modified="Wed, 21 Oct 2026 07:28:00 GMT",
        body_hash="h",
        last_attempt_at=T0,
        last_success_at=T0 - MINUTE,
        last_error="HTTP 500",
        consecutive_failures=3,
        next_sync_at=T0 + timedelta(hours=2),
        circuit=CircuitState.HALF_OPEN,
        held_removals=42,
        held_removals_hash="guard",
    )
    await store.apply_sync(lease, SyncWrite(state=state), T0)
    assert (await store.get_calendar(lease.calendar_id)).state == state


# -- applying changes ------------------------------------------------------


async def test_apply_adds_updates_removes_and_expires(store: Store) -> None:
    old = occurrence("old", T0 - timedelta(days=3))
    gone = occurrence("gone", T0 + timedelta(hours=1))
    edit = occurrence("edit", T0 + timedelta(hours=2))
    cal = await seed(store, old, gone, edit)
    await store.request_sync(cal.id, T0)
    lease = await claim_one(store)
    edited = attrs.evolve(edit, summary="Moved room")
    new = occurrence("new", T0 + timedelta(hours=3), recurrence_id="20260301T150000Z")
    changes = ChangeSet(
        added=(new,), updated=(edited,), removed=(gone,), expired=(old,)
    )
    await store.apply_sync(lease, SyncWrite(state=SyncState(), changes=changes), T0)
    assert await store.list_occurrences(cal.id) == [edited, new]
    assert await store.list_occurrences(cal.id, include_expired=True) == [
        old,
        edited,
        new,
    ]


async def test_list_occurrences_filters_by_window(store: Store) -> None:
    first = occurrence("a", T0, minutes=60)
    second = occurrence("b", T0 + timedelta(hours=2))
    cal = await seed(store, first, second)
    window = Window(T0 + 30 * MINUTE, T0 + timedelta(hours=2))
    assert await store.list_occurrences(cal.id, window) == [first]


async def test_occurrences_round_trip_every_field(store: Store) -> None:
    from datetime import date

    full = attrs.evolve(
        occurrence("x", T0),
        all_day=True,
        location="Room 1",
        description="Line 1\nLine 2 — ünïcode",
        status="TENTATIVE",
        sequence=7,
        tzid="Europe/Berlin",
        start_date=date(2026, 3, 1),
        end_date=date(2026, 3, 2),
        alarms=(timedelta(minutes=15), timedelta(days=1)),
    )
    cal = await seed(store, full)
    [stored] = await store.list_occurrences(cal.id)
    assert stored == full
    assert stored.content_hash == full.content_hash


async def test_occurrences_starting_spans_calendars_and_skips_paused(
    store: Store,
) -> None:
    a = occurrence("a", T0 + 10 * MINUTE)
    b = occurrence("b", T0 + 20 * MINUTE)
    late = occurrence("late", T0 + 30 * MINUTE)
    first = await seed(store, a, late)
    second = await store.add_calendar(calendar("https://b/2.ics"))
    lease = await claim_one(store)
    await store.apply_sync(
        lease, SyncWrite(state=SyncState(), changes=ChangeSet(added=(b,))), T0
    )
    found = await store.occurrences_starting(T0 + 10 * MINUTE, T0 + 30 * MINUTE)
    assert found == [(first.id, a), (second.id, b)]
    await store.update_calendar(attrs.evolve(second, paused=True))
    found = await store.occurrences_starting(T0, T0 + timedelta(hours=1))
    assert found == [(first.id, a), (first.id, late)]


# -- notifications ---------------------------------------------------------


async def test_a_notification_is_created_once(store: Store) -> None:
    occ = occurrence("a", T0 + 5 * MINUTE)
    cal = await seed(store, occ)
    assert await store.add_notifications(cal.id, [note(occ), note(occ)], T0) == 1
    assert await store.add_notifications(cal.id, [note(occ)], T0 + MINUTE) == 0
    [record] = await store.list_notifications()
    assert record.id == notification_id(cal.id, note(occ))
    assert record.status is PENDING
    assert record.due_at == occ.start - 10 * MINUTE
    assert record.created_at == T0
    assert record.attempts == 0


async def test_notifications_need_their_occurrence_at_that_start(store: Store) -> None:
    occ = occurrence("a", T0 + 5 * MINUTE)
    cal = await seed(store, occ)
    moved = Notification(key=occ.key, lead=MINUTE, start=occ.start + MINUTE)
    unknown = Notification(key=OccurrenceKey("zzz"), lead=MINUTE, start=occ.start)
    assert await store.add_notifications(cal.id, [moved, unknown], T0) == 0
    with pytest.raises(CalendarNotFound):
        await store.add_notifications("nope", [note(occ)], T0)


async def test_expired_occurrence_gets_no_new_notification(store: Store) -> None:
    occ = occurrence("a", T0 - timedelta(days=2))
    cal = await seed(store, occ)
    await store.request_sync(cal.id, T0)
    lease = await claim_one(store)
    changes = ChangeSet(expired=(occ,))
    await store.apply_sync(lease, SyncWrite(state=SyncState(), changes=changes), T0)
    assert await store.add_notifications(cal.id, [note(occ)], T0) == 0


async def test_each_lead_and_start_is_its_own_notification(store: Store) -> None:
    occ = occurrence("a", T0 + timedelta(hours=1))
    cal = await seed(store, occ)
    notes = [note(occ, MINUTE), note(occ, 10 * MINUTE), note(occ, timedelta(0))]
    assert await store.add_notifications(cal.id, notes, T0) == 3
    fire_times = [r.fire_at for r in await store.list_notifications(calendar_id=cal.id)]
    assert fire_times == sorted(n.fire_at for n in notes)


async def test_apply_cancels_pending_notifications_of_removed_and_moved(
    store: Store,
) -> None:
    gone = occurrence("gone", T0 + timedelta(hours=1))
    moves = occurrence("moves", T0 + timedelta(hours=1))
    stays = occurrence("stays", T0 + timedelta(hours=1))
    retitled = occurrence("retitled", T0 + timedelta(hours=1))
    cal = await seed(store, gone, moves, stays, retitled)
    notes = [note(o) for o in (gone, moves, stays, retitled)]
    assert await store.add_notifications(cal.id, notes, T0) == 4
    await store.request_sync(cal.id, T0)
    lease = await claim_one(store)
    moved = attrs.evolve(moves, start=moves.start + MINUTE, end=moves.end + MINUTE)
    changes = ChangeSet(
        updated=(moved, attrs.evolve(retitled, summary="New title")), removed=(gone,)
    )
    applied = await store.apply_sync(
        lease,
        SyncWrite(state=SyncState(), changes=changes, create=(note(moved),)),
        T0,
    )
    assert applied.cancelled == 2
    assert applied.created == 1
    by_uid = {
        (r.notification.key.uid, r.notification.start): r.status
        for r in await store.list_notifications()
    }
    assert by_uid == {
        ("gone", gone.start): NotificationStatus.CANCELLED,
        ("moves", moves.start): NotificationStatus.CANCELLED,
        ("moves", moved.start): PENDING,
        ("stays", stays.start): PENDING,
        ("retitled", retitled.start): PENDING,
    }


async def test_apply_cancels_notifications_asked_for(store: Store) -> None:
    occ = occurrence("a", T0 + timedelta(hours=1))
    cal = await seed(store, occ)
    await store.add_notifications(cal.id, [note(occ, MINUTE), note(occ)], T0)
    await store.request_sync(cal.id, T0)
    lease = await claim_one(store)
    write = SyncWrite(state=SyncState(), cancel=(note(occ, MINUTE),))
    assert (await store.apply_sync(lease, write, T0)).cancelled == 1
    statuses = {r.notification.lead: r.status for r in await store.list_notifications()}
    assert statuses == {MINUTE: NotificationStatus.CANCELLED, 10 * MINUTE: PENDING}


async def test_claimed_notification_carries_its_occurrence(store: Store) -> None:
    occ = occurrence("a", T0 + 10 * MINUTE)
    cal = await seed(store, occ)
    await store.add_notifications(cal.id, [note(occ)], T0)
    [claim] = await store.claim_notifications(T0, limit=10, worker="d", lease_ttl=TTL)
    assert claim.occurrence == occ
    assert claim.record.calendar_id == cal.id
    assert claim.expires_at == T0 + TTL
    assert claim.id == notification_id(cal.id, note(occ))


async def test_notifications_are_claimed_when_due_and_once_per_claim(
    store: Store,
) -> None:
    soon = occurrence("soon", T0 + 10 * MINUTE)
    later = occurrence("later", T0 + 20 * MINUTE)
    cal = await seed(store, soon, later)
    await store.add_notifications(cal.id, [note(soon), note(later)], T0)
    claims = await store.claim_notifications(T0, limit=10, worker="d", lease_ttl=TTL)
    assert [c.record.notification.key.uid for c in claims] == ["soon"]
    again = await store.claim_notifications(
        T0 + MINUTE, limit=10, worker="e", lease_ttl=TTL
    )
    assert again == []
    back = await store.claim_notifications(
        T0 + TTL, limit=10, worker="e", lease_ttl=TTL
    )
    assert [c.record.notification.key.uid for c in back] == ["soon"]
    assert back[0].token > claims[0].token


async def test_delivered_notification_is_not_claimed_again(store: Store) -> None:
    occ = occurrence("a", T0 + 10 * MINUTE)
    cal = await seed(store, occ)
    await store.add_notifications(cal.id, [note(occ)], T0)
    [claim] = await store.claim_notifications(T0, limit=10, worker="d", lease_ttl=TTL)
    await store.mark_delivered(claim, T0 + MINUTE)
    await store.mark_delivered(claim, T0 + 2 * MINUTE)
    [record] = await store.list_notifications(status=NotificationStatus.DELIVERED)
    assert record.delivered_at == T0 + MINUTE
    later = T0 + timedelta(hours=1)
    assert (
        await store.claim_notifications(later, limit=9, worker="d", lease_ttl=TTL) == []
    )
    assert await store.add_notifications(cal.id, [note(occ)], later) == 0


async def test_failed_attempt_is_retried_at_the_given_time(store: Store) -> None:
    occ = occurrence("a", T0 + 10 * MINUTE)
    cal = await seed(store, occ)
    await store.add_notifications(cal.id, [note(occ)], T0)
    [claim] = await store.claim_notifications(T0, limit=10, worker="d", lease_ttl=TTL)
    retry_at = T0 + 2 * MINUTE
    assert await store.mark_failed(claim, T0, error="HTTP 502", retry_at=retry_at)
    [record] = await store.list_notifications()
    assert (record.status, record.attempts, record.last_error) == (
        PENDING,
        1,
        "HTTP 502",
    )
    assert record.due_at == retry_at
    early = retry_at - timedelta(seconds=1)
    assert (
        await store.claim_notifications(early, limit=9, worker="d", lease_ttl=TTL) == []
    )
    [again] = await store.claim_notifications(
        retry_at, limit=9, worker="d", lease_ttl=TTL
    )
    assert again.record.attempts == 2


async def test_last_failure_dead_letters_and_requeue_revives(store: Store) -> None:
    occ = occurrence("a", T0 + 10 * MINUTE)
    cal = await seed(store, occ)
    await store.add_notifications(cal.id, [note(occ)], T0)
    [claim] = await store.claim_notifications(T0, limit=10, worker="d", lease_ttl=TTL)
    assert await store.mark_failed(claim, T0, error="boom", retry_at=None)
    [dead] = await store.list_notifications(status=NotificationStatus.FAILED)
    assert dead.attempts == 1
    later = T0 + timedelta(hours=1)
    assert (
        await store.claim_notifications(later, limit=9, worker="d", lease_ttl=TTL) == []
    )
    assert await store.requeue([dead.id, "unknown"], later) == 1
    assert await store.requeue([dead.id], later) == 0
    [revived] = await store.claim_notifications(
        later, limit=9, worker="d", lease_ttl=TTL
    )
    assert revived.record.attempts == 1
    assert revived.record.status is PENDING


async def test_failure_on_a_taken_over_claim_changes_nothing(store: Store) -> None:
    occ = occurrence("a", T0 + 10 * MINUTE)
    cal = await seed(store, occ)
    await store.add_notifications(cal.id, [note(occ)], T0)
    [stale] = await store.claim_notifications(T0, limit=10, worker="a", lease_ttl=TTL)
    [fresh] = await store.claim_notifications(
        T0 + TTL, limit=10, worker="b", lease_ttl=TTL
    )
    assert not await store.mark_failed(stale, T0 + TTL, error="late", retry_at=None)
    [record] = await store.list_notifications()
    assert (record.status, record.attempts, record.last_error) == (PENDING, 2, None)
    assert await store.mark_failed(fresh, T0 + TTL, error="x", retry_at=None)


async def test_a_released_claim_comes_back_at_once_with_its_attempt_unused(
    store: Store,
) -> None:
    occ = occurrence("a", T0 + 10 * MINUTE)
    cal = await seed(store, occ)
    await store.add_notifications(cal.id, [note(occ)], T0)
    [claim] = await store.claim_notifications(T0, limit=10, worker="d", lease_ttl=TTL)
    assert await store.release_claim(claim, T0 + MINUTE)
    assert not await store.release_claim(claim, T0 + MINUTE)
    assert not await store.mark_failed(claim, T0, error="late", retry_at=None)
    [again] = await store.claim_notifications(
        T0 + MINUTE, limit=9, worker="e", lease_ttl=TTL
    )
    assert again.record.attempts == 1
    assert again.attempt == 1


async def test_cancelled_notification_is_never_claimed(store: Store) -> None:
    occ = occurrence("a", T0 + 10 * MINUTE)
    cal = await seed(store, occ)
    await store.add_notifications(cal.id, [note(occ)], T0)
    await store.request_sync(cal.id, T0)
    lease = await claim_one(store)
    write = SyncWrite(state=SyncState(), changes=ChangeSet(removed=(occ,)))
    await store.apply_sync(lease, write, T0)
    assert await store.claim_notifications(T0, limit=9, worker="d", lease_ttl=TTL) == []


async def test_claim_on_a_removed_occurrence_has_none(store: Store) -> None:
    occ = occurrence("a", T0 + 10 * MINUTE)
    cal = await seed(store, occ)
    await store.add_notifications(cal.id, [note(occ)], T0)
    [claim] = await store.claim_notifications(T0, limit=9, worker="d", lease_ttl=TTL)
    await store.request_sync(cal.id, T0)
    lease = await claim_one(store)
    write = SyncWrite(state=SyncState(), changes=ChangeSet(removed=(occ,)))
    await store.apply_sync(lease, write, T0)
    # The claim raced the removal: the delivery is recorded as it happened.
    await store.mark_delivered(claim, T0 + MINUTE)
    [record] = await store.list_notifications()
    assert record.status is NotificationStatus.DELIVERED


# -- job runs and pruning --------------------------------------------------


async def test_job_runs_come_back_newest_first(store: Store) -> None:
    for minutes, job in ((1, "sync_due"), (3, "cleanup"), (2, "sync_due")):
        await store.record_job_run(
            JobRun(
                job=job,
                started_at=T0,
                finished_at=T0 + minutes * MINUTE,
                outcome=JobOutcome.OK if job == "cleanup" else JobOutcome.PARTIAL,
                counts={"synced": minutes},
                error=None if job == "cleanup" else "1 calendar failed",
            )
        )
    runs = await store.recent_job_runs()
    assert [run.finished_at for run in runs] == [
        T0 + 3 * MINUTE,
        T0 + 2 * MINUTE,
        T0 + MINUTE,
    ]
    sync_runs = await store.recent_job_runs(job="sync_due", limit=1)
    assert sync_runs == [
        JobRun(
            job="sync_due",
            started_at=T0,
            finished_at=T0 + 2 * MINUTE,
            outcome=JobOutcome.PARTIAL,
            counts={"synced": 2},
            error="1 calendar failed",
        )
    ]


async def test_prune_removes_only_what_retention_allows(store: Store) -> None:
    old = occurrence("old", T0 - timedelta(days=10))
    live = occurrence("live", T0 - timedelta(days=10) + MINUTE)
    soon = occurrence("soon", T0 + 5 * MINUTE)
    cal = await seed(store, old, live, soon)
    await store.add_notifications(cal.id, [note(soon), note(live)], T0)
    await store.request_sync(cal.id, T0)
    lease = await claim_one(store)
    changes = ChangeSet(expired=(old,))
    await store.apply_sync(lease, SyncWrite(state=SyncState(), changes=changes), T0)
    claims = await store.claim_notifications(T0, limit=9, worker="d", lease_ttl=TTL)
    for claim in claims:
        await store.mark_delivered(claim, T0)
    await store.record_job_run(
        JobRun("cleanup", T0 - timedelta(days=40), T0 - timedelta(days=40), "ok")
    )
    await store.record_job_run(JobRun("cleanup", T0, T0, "ok"))
    counts = await store.prune(
        occurrences_before=T0 - timedelta(days=1),
        notifications_before=T0,
        job_runs_before=T0 - timedelta(days=30),
    )
    assert (counts.occurrences, counts.notifications, counts.job_runs) == (1, 1, 1)
    assert await store.list_occurrences(cal.id, include_expired=True) == [live, soon]
    [kept] = await store.list_notifications()
    assert kept.notification.key.uid == "soon"
    assert len(await store.recent_job_runs()) == 1


# -- bad input -------------------------------------------------------------


async def test_naive_time_is_refused_and_nothing_changes(store: Store) -> None:
    cal = await store.add_calendar(calendar())
    naive = T0.replace(tzinfo=None)
    with pytest.raises(ValidationError):
        await store.claim_due_calendars(naive, limit=5, worker="w", lease_ttl=TTL)
    with pytest.raises(ValidationError):
        await store.request_sync(cal.id, naive)
    assert (await claim_one(store)).calendar_id == cal.id


async def test_bad_claim_arguments_are_refused(store: Store) -> None:
    with pytest.raises(ValidationError):
        await store.claim_due_calendars(T0, limit=0, worker="w", lease_ttl=TTL)
    with pytest.raises(ValidationError):
        await store.claim_notifications(T0, limit=5, worker="w", lease_ttl=timedelta(0))


async def test_a_failed_apply_loses_nothing(store: Store) -> None:
    occ = occurrence("a", T0 + timedelta(hours=1))
    cal = await seed(store, occ)
    await store.request_sync(cal.id, T0)
    lease = await claim_one(store)
    await store.release_lease(lease)
    with pytest.raises(LeaseLost):
        await store.apply_sync(
            lease, SyncWrite(state=SyncState(), changes=ChangeSet(removed=(occ,))), T0
        )
    assert await store.list_occurrences(cal.id) == [occ]


async def test_data_survives_reopening(store_factory: StoreFactory) -> None:
    occ = occurrence("a", T0 + timedelta(hours=1))
    async with store_factory() as first:
        cal = await seed(first, occ)
        await first.add_notifications(cal.id, [note(occ)], T0)
    async with store_factory() as second:
        assert (await second.get_calendar(cal.id)).id == cal.id
        assert await second.list_occurrences(cal.id) == [occ]
        assert len(await second.list_notifications()) == 1


async def test_text_with_nul_characters_is_stored(store: Store) -> None:
    hostile = attrs.evolve(occurrence("a\x00b", T0), summary="x\x00y")
    cal = await seed(store, hostile)
    [stored] = await store.list_occurrences(cal.id)
    assert (stored.key.uid, stored.summary) == ("ab", "xy")


# -- schema 2: manual claims -----------------------------------------------

MISSED = NotificationStatus.MISSED
CANCELLED = NotificationStatus.CANCELLED
HOUR = timedelta(hours=1)


async def resync(
    store: Store,
    cal,
    changes: ChangeSet | None = None,
    *,
    create=(),
    cancel=(),
    now: datetime = T0,
):
    """Sync a seeded calendar once more under a fresh lease."""
    await store.request_sync(cal.id, now)
    lease = await claim_one(store, now)
    write = SyncWrite(
        state=SyncState(next_sync_at=now + HOUR),
        changes=changes,
        create=create,
        cancel=cancel,
    )
    return await store.apply_sync(lease, write, now)


async def test_claim_calendar_leases_a_paused_calendar_that_is_not_due(
    store: Store,
) -> None:
    cal = await store.add_calendar(
        calendar(paused=True, state=SyncState(next_sync_at=T0 + timedelta(days=1)))
    )
    lease = await store.claim_calendar(cal.id, T0, worker="cli", lease_ttl=TTL)
    assert lease is not None
    assert (lease.calendar, lease.worker, lease.expires_at) == (cal, "cli", T0 + TTL)
    await store.apply_sync(lease, SyncWrite(state=SyncState(etag="manual")), T0)
    assert (await store.get_calendar(cal.id)).state.etag == "manual"


async def test_claim_calendar_returns_none_while_another_lease_holds_it(
    store: Store,
) -> None:
    cal = await store.add_calendar(calendar())
    periodic = await claim_one(store, T0, worker="runner")
    assert await store.claim_calendar(cal.id, T0, worker="cli", lease_ttl=TTL) is None
    await store.release_lease(periodic)
    manual = await store.claim_calendar(cal.id, T0, worker="cli", lease_ttl=TTL)
    assert manual is not None
    assert manual.token > periodic.token
    assert await store.claim_calendar(cal.id, T0, worker="cli", lease_ttl=TTL) is None
    assert await store.claim_due_calendars(T0, limit=5, worker="w", lease_ttl=TTL) == []


async def test_claim_calendar_takes_over_an_expired_lease_and_fences_it(
    store: Store,
) -> None:
    cal = await store.add_calendar(calendar())
    stale = await store.claim_calendar(cal.id, T0, worker="slow", lease_ttl=TTL)
    taken = await store.claim_calendar(cal.id, T0 + TTL, worker="fast", lease_ttl=TTL)
    assert stale is not None
    assert taken is not None
    assert taken.token > stale.token
    with pytest.raises(LeaseLost):
        await store.apply_sync(stale, SyncWrite(state=SyncState(etag="old")), T0 + TTL)
    await store.apply_sync(taken, SyncWrite(state=SyncState(etag="new")), T0 + TTL)
    assert (await store.get_calendar(cal.id)).state.etag == "new"


async def test_claim_calendar_apply_clears_a_request_made_before_it(
    store: Store,
) -> None:
    cal = await store.add_calendar(
        calendar(state=SyncState(next_sync_at=T0 + timedelta(days=1)))
    )
    await store.request_sync(cal.id, T0)
    lease = await store.claim_calendar(cal.id, T0 + MINUTE, worker="w", lease_ttl=TTL)
    assert lease is not None
    later = SyncState(next_sync_at=T0 + timedelta(days=1))
    await store.apply_sync(lease, SyncWrite(state=later), T0 + MINUTE)
    due = await store.claim_due_calendars(
        T0 + 2 * MINUTE, limit=5, worker="w", lease_ttl=TTL
    )
    assert due == []


async def test_claim_calendar_keeps_a_request_made_during_its_sync(
    store: Store,
) -> None:
    cal = await store.add_calendar(
        calendar(state=SyncState(next_sync_at=T0 + timedelta(days=1)))
    )
    lease = await store.claim_calendar(cal.id, T0, worker="w", lease_ttl=TTL)
    assert lease is not None
    await store.request_sync(cal.id, T0 + MINUTE)
    later = SyncState(next_sync_at=T0 + timedelta(days=1))
    await store.apply_sync(lease, SyncWrite(state=later), T0 + 2 * MINUTE)
    assert (await claim_one(store, T0 + 3 * MINUTE)).calendar_id == cal.id


async def test_claim_calendar_refuses_unknown_ids_and_bad_arguments(
    store: Store,
) -> None:
    cal = await store.add_calendar(calendar())
    with pytest.raises(CalendarNotFound):
        await store.claim_calendar("nope", T0, worker="w", lease_ttl=TTL)
    with pytest.raises(ValidationError):
        await store.claim_calendar(cal.id, T0, worker="", lease_ttl=TTL)
    with pytest.raises(ValidationError):
        await store.claim_calendar(cal.id, T0, worker="w", lease_ttl=timedelta(0))
    with pytest.raises(ValidationError):
        await store.claim_calendar(
            cal.id, T0.replace(tzinfo=None), worker="w", lease_ttl=TTL
        )
    assert (await claim_one(store)).calendar_id == cal.id


# -- schema 2: revived and missed reminders --------------------------------


async def test_event_moved_away_and_back_gets_its_reminder_back_once(
    store: Store,
) -> None:
    ten = occurrence("a", T0 + HOUR)
    eleven = attrs.evolve(ten, start=ten.start + HOUR, end=ten.end + HOUR)
    cal = await seed(store, ten)
    assert await store.add_notifications(cal.id, [note(ten)], T0) == 1
    away = await resync(store, cal, ChangeSet(updated=(eleven,)), create=[note(eleven)])
    assert (away.created, away.cancelled) == (1, 1)
    back = await resync(store, cal, ChangeSet(updated=(ten,)), create=[note(ten)])
    assert (back.created, back.cancelled) == (1, 1)
    statuses = {
        r.notification.start: r.status for r in await store.list_notifications()
    }
    assert statuses == {ten.start: PENDING, eleven.start: CANCELLED}
    delivered = []
    for minutes in range(0, 4 * 60, 5):
        now = T0 + minutes * MINUTE
        await store.add_notifications(cal.id, [note(ten)], now)
        for claim in await store.claim_notifications(
            now, limit=10, worker="d", lease_ttl=TTL
        ):
            delivered.append(claim.record.notification.start)
            await store.mark_delivered(claim, now)
    assert delivered == [ten.start]


async def test_a_lead_removed_and_added_again_is_revived_by_add_notifications(
    store: Store,
) -> None:
    occ = occurrence("a", T0 + HOUR)
    cal = await seed(store, occ)
    await store.add_notifications(cal.id, [note(occ, MINUTE)], T0)
    assert (await resync(store, cal, cancel=[note(occ, MINUTE)])).cancelled == 1
    assert await store.add_notifications(cal.id, [note(occ, MINUTE)], T0) == 1
    assert await store.add_notifications(cal.id, [note(occ, MINUTE)], T0) == 0
    [record] = await store.list_notifications()
    assert (record.status, record.due_at) == (PENDING, record.fire_at)
    assert record.created_at == T0


async def test_revival_keeps_an_unfinished_claim_and_the_attempts(
    store: Store,
) -> None:
    occ = occurrence("a", T0 + 10 * MINUTE)
    cal = await seed(store, occ)
    await store.add_notifications(cal.id, [note(occ)], T0)
    [claim] = await store.claim_notifications(T0, limit=9, worker="d", lease_ttl=TTL)
    await resync(store, cal, cancel=[note(occ)], now=T0 + MINUTE)
    assert await store.add_notifications(cal.id, [note(occ)], T0 + MINUTE) == 1
    [record] = await store.list_notifications()
    assert (record.status, record.due_at) == (PENDING, T0 + TTL)
    early = await store.claim_notifications(
        T0 + 2 * MINUTE, limit=9, worker="e", lease_ttl=TTL
    )
    assert early == []
    # The claim was never taken over: its failure still counts.
    retry_at = T0 + 10 * MINUTE
    assert await store.mark_failed(claim, T0, error="HTTP 502", retry_at=retry_at)
    await resync(store, cal, cancel=[note(occ)], now=T0 + 3 * MINUTE)
    assert await store.add_notifications(cal.id, [note(occ)], T0 + 3 * MINUTE) == 1
    [record] = await store.list_notifications()
    assert (record.status, record.attempts, record.due_at) == (PENDING, 1, retry_at)
    [again] = await store.claim_notifications(
        retry_at, limit=9, worker="e", lease_ttl=TTL
    )
    assert again.token > claim.token


async def test_delivered_failed_and_missed_reminders_are_never_revived(
    store: Store,
) -> None:
    sent = occurrence("sent", T0 + 10 * MINUTE)
    dead = occurrence("dead", T0 + 10 * MINUTE)
    gone_by = occurrence("gone_by", T0 + 10 * MINUTE)
    cal = await seed(store, sent, dead, gone_by)
    await store.add_notifications(cal.id, [note(sent), note(dead)], T0)
    await store.add_notifications(cal.id, [note(gone_by)], T0, status=MISSED)
    for claim in await store.claim_notifications(
        T0, limit=9, worker="d", lease_ttl=TTL
    ):
        if claim.record.notification.key.uid == "sent":
            await store.mark_delivered(claim, T0)
        else:
            await store.mark_failed(claim, T0, error="boom", retry_at=None)
    notes = [note(sent), note(dead), note(gone_by)]
    assert await store.add_notifications(cal.id, notes, T0 + MINUTE) == 0
    assert (await resync(store, cal, create=notes, now=T0 + MINUTE)).created == 0
    statuses = {
        r.notification.key.uid: r.status for r in await store.list_notifications()
    }
    assert statuses == {
        "sent": NotificationStatus.DELIVERED,
        "dead": NotificationStatus.FAILED,
        "gone_by": MISSED,
    }


async def test_missed_reminders_are_recorded_and_never_claimed(store: Store) -> None:
    occ = occurrence("a", T0 + 5 * MINUTE)
    cal = await seed(store, occ)
    later = T0 + timedelta(hours=2)
    assert await store.add_notifications(cal.id, [note(occ)], later, status=MISSED) == 1
    assert await store.add_notifications(cal.id, [note(occ)], later, status=MISSED) == 0
    assert await store.add_notifications(cal.id, [note(occ)], later) == 0
    [record] = await store.list_notifications(status=MISSED)
    assert record.id == notification_id(cal.id, note(occ))
    assert (record.created_at, record.attempts) == (later, 0)
    assert (
        await store.claim_notifications(later, limit=9, worker="d", lease_ttl=TTL) == []
    )


async def test_a_missed_insert_never_changes_a_stored_reminder(store: Store) -> None:
    waiting = occurrence("waiting", T0 + HOUR)
    dropped = occurrence("dropped", T0 + HOUR)
    cal = await seed(store, waiting, dropped)
    await store.add_notifications(cal.id, [note(waiting), note(dropped)], T0)
    await resync(store, cal, cancel=[note(dropped)])
    notes = [note(waiting), note(dropped)]
    assert await store.add_notifications(cal.id, notes, T0, status=MISSED) == 0
    statuses = {
        r.notification.key.uid: r.status for r in await store.list_notifications()
    }
    assert statuses == {"waiting": PENDING, "dropped": CANCELLED}


async def test_missed_reminders_need_their_occurrence_at_that_start(
    store: Store,
) -> None:
    occ = occurrence("a", T0 + 5 * MINUTE)
    cal = await seed(store, occ)
    moved = Notification(key=occ.key, lead=MINUTE, start=occ.start + MINUTE)
    assert await store.add_notifications(cal.id, [moved], T0, status=MISSED) == 0


@pytest.mark.parametrize(
    "status", [NotificationStatus.DELIVERED, CANCELLED, "failed", "bogus"]
)
async def test_notifications_are_only_added_as_pending_or_missed(
    store: Store, status: object
) -> None:
    occ = occurrence("a", T0 + 5 * MINUTE)
    cal = await seed(store, occ)
    with pytest.raises(ValidationError):
        await store.add_notifications(cal.id, [note(occ)], T0, status=status)  # type: ignore[arg-type]
    assert await store.list_notifications() == []


async def test_prune_removes_missed_reminders_like_delivered_ones(
    store: Store,
) -> None:
    past = occurrence("past", T0 - HOUR)
    recent = occurrence("recent", T0 + HOUR)
    cal = await seed(store, past, recent)
    notes = [note(past), note(recent)]
    assert await store.add_notifications(cal.id, notes, T0, status=MISSED) == 2
    counts = await store.prune(
        occurrences_before=T0 - timedelta(days=1),
        notifications_before=T0,
        job_runs_before=T0,
    )
    assert counts.notifications == 1
    [kept] = await store.list_notifications()
    assert kept.notification.key.uid == "recent"


# -- schema 2: counts and filters ------------------------------------------


async def test_notification_counts_name_every_status(store: Store) -> None:
    empty = dict.fromkeys(NotificationStatus, 0)
    assert await store.notification_counts() == empty
    cal = await store.add_calendar(calendar())
    assert await store.notification_counts(calendar_id=cal.id) == empty


async def test_notification_counts_by_status_and_calendar(store: Store) -> None:
    occs = [occurrence(uid, T0 + 10 * MINUTE) for uid in "abcdef"]
    first = await seed(store, *occs)
    notes = [note(occ) for occ in occs]
    await store.add_notifications(first.id, notes[:5], T0)
    await store.add_notifications(first.id, notes[5:], T0, status=MISSED)
    claims = await store.claim_notifications(T0, limit=3, worker="d", lease_ttl=TTL)
    await store.mark_delivered(claims[0], T0)
    await store.mark_failed(claims[1], T0, error="boom", retry_at=None)
    await resync(store, first, cancel=[claims[2].record.notification])
    other_occ = occurrence("z", T0 + HOUR)
    second = await store.add_calendar(calendar("https://b/2.ics"))
    lease = await claim_one(store)
    await store.apply_sync(
        lease,
        SyncWrite(
            state=SyncState(next_sync_at=T0 + HOUR),
            changes=ChangeSet(added=(other_occ,)),
            create=(note(other_occ),),
        ),
        T0,
    )
    by_first = {
        PENDING: 2,
        NotificationStatus.DELIVERED: 1,
        NotificationStatus.FAILED: 1,
        CANCELLED: 1,
        MISSED: 1,
    }
    assert await store.notification_counts(calendar_id=first.id) == by_first
    assert await store.notification_counts() == {**by_first, PENDING: 3}
    assert await store.notification_counts(calendar_id=second.id) == {
        **dict.fromkeys(NotificationStatus, 0),
        PENDING: 1,
    }
    assert await store.notification_counts(calendar_id="nope") == dict.fromkeys(
        NotificationStatus, 0
    )


async def test_notification_counts_of_one_owner_leave_the_others_out(
    store: Store,
) -> None:
    alice_event = occurrence("a", T0 + HOUR)
    alice = await seed(store, alice_event, cal=calendar(owner="alice"))
    await store.add_notifications(alice.id, [note(alice_event)], T0)
    later = T0 + HOUR
    [claim] = await store.claim_notifications(later, limit=5, worker="d", lease_ttl=TTL)
    await store.mark_failed(claim, later, error="boom", retry_at=None)
    await store.add_calendar(calendar("https://b/bob.ics", owner="bob"))
    none = dict.fromkeys(NotificationStatus, 0)
    assert await store.notification_counts(owner="bob") == none
    assert await store.notification_counts(owner="nobody") == none
    assert await store.notification_counts(owner="alice") == {
        **none,
        NotificationStatus.FAILED: 1,
    }
    assert await store.notification_counts(owner="alice", calendar_id="x") == none


async def test_ensure_calendar_adds_once_then_returns_the_stored_one(
    store: Store,
) -> None:
    first, added = await store.ensure_calendar(calendar(name="Team", owner="alice"))
    assert added
    again, added_again = await store.ensure_calendar(
        calendar(name="Other name", owner="alice")
    )
    assert not added_again
    assert again == first
    assert again.name == "Team"
    bob, bob_added = await store.ensure_calendar(calendar(owner="bob"))
    assert bob_added
    assert bob.id != first.id
    with pytest.raises(CalendarExists):
        await store.ensure_calendar(calendar("https://c/3.ics", id=first.id))
    assert len(await store.list_calendars()) == 2


async def test_list_notifications_by_uid_and_start(store: Store) -> None:
    standup = occurrence("standup", T0 + HOUR)
    review = occurrence("review", T0 + 2 * HOUR)
    retro = occurrence("retro", T0 + 3 * HOUR)
    first = await seed(store, standup, review, retro)
    notes = [
        note(o, lead) for o in (standup, review, retro) for lead in (0 * HOUR, HOUR)
    ]
    await store.add_notifications(first.id, notes, T0)
    elsewhere = occurrence("standup", T0 + 4 * HOUR)
    second = await store.add_calendar(calendar("https://b/2.ics"))
    lease = await claim_one(store)
    await store.apply_sync(
        lease,
        SyncWrite(
            state=SyncState(next_sync_at=T0 + HOUR),
            changes=ChangeSet(added=(elsewhere,)),
            create=(note(elsewhere),),
        ),
        T0,
    )

    def shown(records):
        return [(r.calendar_id, r.notification.key.uid, r.fire_at) for r in records]

    by_uid = await store.list_notifications(uid="standup")
    assert shown(by_uid) == [
        (first.id, "standup", T0),
        (first.id, "standup", T0 + HOUR),
        (second.id, "standup", elsewhere.start - 10 * MINUTE),
    ]
    in_first = await store.list_notifications(calendar_id=first.id, uid="standup")
    assert shown(in_first) == shown(by_uid)[:2]
    # Half-open: an event starting at the window's end is outside it.
    starts = Window(T0 + 2 * HOUR, T0 + 4 * HOUR)
    assert {
        r.notification.key.uid for r in await store.list_notifications(starts=starts)
    } == {"review", "retro"}
    picked = await store.list_notifications(
        calendar_id=first.id,
        status=PENDING,
        uid="retro",
        starts=Window(T0 + 3 * HOUR, T0 + 3 * HOUR + MINUTE),
        limit=1,
    )
    assert shown(picked) == [(first.id, "retro", T0 + 2 * HOUR)]
    assert await store.list_notifications(uid="standup", starts=starts) == []
    later = Window(T0 + 2 * HOUR, T0 + 5 * HOUR)
    assert await store.list_notifications(uid="standup", starts=later) == [
        r for r in by_uid if r.calendar_id == second.id
    ]


# -- schema 2: sync state --------------------------------------------------


async def test_parse_time_and_refresh_interval_are_kept(store: Store) -> None:
    parsed = SyncState(
        parsed_at=T0,
        refresh_interval=timedelta(hours=6, microseconds=1),
        next_sync_at=T0 + HOUR,
    )
    cal = await store.add_calendar(calendar(state=parsed))
    assert (await store.get_calendar(cal.id)).state == parsed
    lease = await claim_one(store, T0 + HOUR)
    assert lease.calendar.state == parsed
    not_modified = attrs.evolve(parsed, etag='"v2"', next_sync_at=T0 + 7 * HOUR)
    await store.apply_sync(lease, SyncWrite(state=not_modified), T0 + HOUR)
    assert (await store.get_calendar(cal.id)).state == not_modified
    [listed] = await store.list_calendars()
    assert listed.state == not_modified


def test_sync_state_refuses_a_negative_refresh_interval() -> None:
    with pytest.raises(ValidationError):
        SyncState(refresh_interval=timedelta(seconds=-1))
    with pytest.raises(ValidationError):
        SyncState(parsed_at=T0.replace(tzinfo=None))


@pytest.mark.parametrize("limit", [-1, 1.5, True])
async def test_a_read_limit_must_be_a_whole_number_not_below_zero(
    store: Store, limit: object
) -> None:
    with pytest.raises(ValidationError, match="limit"):
        await store.list_notifications(limit=limit)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="limit"):
        await store.recent_job_runs(limit=limit)  # type: ignore[arg-type]
    assert await store.list_notifications(limit=0) == []
