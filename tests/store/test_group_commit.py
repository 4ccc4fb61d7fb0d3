"""The Store contract of `Store.apply_syncs` (group commit) and ``keep_leads``.

Every implementation passes every test here, like tests/store/test_contract.py.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from calsync import Store
from calsync.core import ChangeSet, StoreError
from calsync.stores import NotificationStatus, SQLiteStore, SyncState, SyncWrite

from .conftest import MINUTE, T0, calendar, occurrence
from .test_contract import TTL, note, seed

PENDING = NotificationStatus.PENDING
CANCELLED = NotificationStatus.CANCELLED


async def add_and_claim(store: Store, count: int, worker: str = "w1"):
    for index in range(count):
        await store.add_calendar(calendar(f"https://example.com/{index}.ics"))
    return await store.claim_due_calendars(
        T0, limit=count, worker=worker, lease_ttl=TTL
    )


async def test_apply_syncs_writes_every_state_and_releases_every_lease(
    store: Store,
) -> None:
    leases = await add_and_claim(store, 5)
    writes = [
        (lease, SyncWrite(state=SyncState(etag=f"e{n}", next_sync_at=T0 + MINUTE)))
        for n, lease in enumerate(leases)
    ]
    applied = await store.apply_syncs(writes, T0)
    assert [a.cancelled if a else None for a in applied] == [0] * 5
    for n, lease in enumerate(leases):
        stored = await store.get_calendar(lease.calendar_id)
        assert stored.state.etag == f"e{n}"
    # Released: due again at T0 + MINUTE, claimable by anyone.
    again = await store.claim_due_calendars(
        T0 + MINUTE, limit=10, worker="w2", lease_ttl=TTL
    )
    assert sorted(lease.calendar_id for lease in again) == sorted(
        lease.calendar_id for lease in leases
    )


async def test_apply_syncs_of_nothing_is_nothing(store: Store) -> None:
    assert await store.apply_syncs([], T0) == []


async def test_a_lost_lease_in_a_batch_writes_nothing_and_the_rest_is_written(
    store: Store,
) -> None:
    leases = await add_and_claim(store, 3)
    lost = leases[1]
    await store.release_lease(lost)
    taken = await store.claim_calendar(lost.calendar_id, T0, worker="w2", lease_ttl=TTL)
    assert taken is not None
    writes = [(lease, SyncWrite(state=SyncState(etag="batch"))) for lease in leases]
    applied = await store.apply_syncs(writes, T0)
    assert [a is None for a in applied] == [False, True, False]
    etags = [
        (await store.get_calendar(lease.calendar_id)).state.etag for lease in leases
    ]
    assert etags == ["batch", None, "batch"]
    # The new holder still writes.
    await store.apply_sync(taken, SyncWrite(state=SyncState(etag="taken")), T0)
    assert (await store.get_calendar(lost.calendar_id)).state.etag == "taken"


async def test_a_lease_writes_once_in_a_batch(store: Store) -> None:
    [lease] = await add_and_claim(store, 1)
    first = SyncWrite(state=SyncState(etag="1"))
    second = SyncWrite(state=SyncState(etag="2"))
    applied = await store.apply_syncs([(lease, first), (lease, second)], T0)
    assert [a is None for a in applied] == [False, True]
    assert (await store.get_calendar(lease.calendar_id)).state.etag == "1"


async def test_a_batch_applies_changes_and_notifications_as_apply_sync_does(
    store: Store,
) -> None:
    occ = occurrence("a", T0 + 5 * MINUTE)
    leases = await add_and_claim(store, 2)
    changed, plain = leases
    writes = [
        (plain, SyncWrite(state=SyncState(etag="plain"))),
        (
            changed,
            SyncWrite(
                state=SyncState(etag="changed"),
                changes=ChangeSet(added=(occ,)),
                create=(note(occ),),
            ),
        ),
    ]
    applied = await store.apply_syncs(writes, T0)
    assert [(a.created, a.cancelled) if a else None for a in applied] == [
        (0, 0),
        (1, 0),
    ]
    assert await store.list_occurrences(changed.calendar_id) == [occ]
    assert await store.list_occurrences(plain.calendar_id) == []
    [record] = await store.list_notifications()
    assert record.calendar_id == changed.calendar_id
    assert record.status == PENDING


async def test_a_batch_write_without_next_sync_at_makes_its_calendar_due_now(
    store: Store,
) -> None:
    [lease] = await add_and_claim(store, 1)
    await store.apply_syncs([(lease, SyncWrite(state=SyncState()))], T0 + MINUTE)
    stored = await store.get_calendar(lease.calendar_id)
    assert stored.state.next_sync_at == T0 + MINUTE


async def test_a_batch_clears_requests_made_before_its_claims_only(
    store: Store,
) -> None:
    leases = await add_and_claim(store, 2)
    early, late = leases
    await store.request_sync(late.calendar_id, T0 + MINUTE)  # during the sync
    writes = [
        (lease, SyncWrite(state=SyncState(next_sync_at=T0 + timedelta(hours=1))))
        for lease in leases
    ]
    await store.apply_syncs(writes, T0 + MINUTE)
    again = await store.claim_due_calendars(
        T0 + 2 * MINUTE, limit=10, worker="w2", lease_ttl=TTL
    )
    assert [lease.calendar_id for lease in again] == [late.calendar_id]
    assert early.calendar_id != late.calendar_id


@pytest.mark.parametrize("batched", [False, True], ids=["apply_sync", "apply_syncs"])
async def test_keep_leads_cancels_pending_notifications_of_other_leads(
    store: Store, batched: bool
) -> None:
    occ = occurrence("a", T0 + timedelta(hours=1))
    cal = await seed(store, occ)
    other = await seed(
        store, occ, cal=calendar("https://example.com/other.ics")
    )  # its reminders are not touched
    for calendar_id in (cal.id, other.id):
        notes = [note(occ, MINUTE), note(occ, 10 * MINUTE), note(occ, 30 * MINUTE)]
        assert await store.add_notifications(calendar_id, notes, T0) == 3
    await store.request_sync(cal.id, T0)
    [lease] = await store.claim_due_calendars(T0, limit=1, worker="w", lease_ttl=TTL)
    assert lease.calendar_id == cal.id
    write = SyncWrite(state=SyncState(), keep_leads=(10 * MINUTE,))
    if batched:
        [applied] = await store.apply_syncs([(lease, write)], T0)
        assert applied is not None
    else:
        applied = await store.apply_sync(lease, write, T0)
    assert applied.cancelled == 2
    mine = await store.list_notifications(calendar_id=cal.id)
    assert {r.notification.lead: r.status for r in mine} == {
        MINUTE: CANCELLED,
        10 * MINUTE: PENDING,
        30 * MINUTE: CANCELLED,
    }
    theirs = await store.list_notifications(calendar_id=other.id)
    assert {r.status for r in theirs} == {PENDING}


async def test_keep_leads_comes_before_create_and_counts_once(store: Store) -> None:
    occ = occurrence("a", T0 + timedelta(hours=1))
    moved = occurrence("a", T0 + timedelta(hours=2))
    cal = await seed(store, occ)
    await store.add_notifications(cal.id, [note(occ, MINUTE), note(occ)], T0)
    await store.request_sync(cal.id, T0)
    [lease] = await store.claim_due_calendars(T0, limit=1, worker="w", lease_ttl=TTL)
    # The event moved (its reminders cancelled as stale) and lead 1m went.
    write = SyncWrite(
        state=SyncState(),
        changes=ChangeSet(updated=(moved,)),
        create=(note(moved),),
        keep_leads=(10 * MINUTE,),
    )
    [applied] = await store.apply_syncs([(lease, write)], T0)
    assert applied is not None
    assert (applied.created, applied.cancelled) == (1, 2)
    statuses = {
        (r.notification.lead, r.notification.start): r.status
        for r in await store.list_notifications(calendar_id=cal.id)
    }
    assert statuses == {
        (MINUTE, occ.start): CANCELLED,
        (10 * MINUTE, occ.start): CANCELLED,
        (10 * MINUTE, moved.start): PENDING,
    }


async def test_a_failing_write_rolls_the_whole_batch_back(tmp_path: Path) -> None:
    occ = occurrence("a", T0 + timedelta(hours=1))
    async with SQLiteStore(tmp_path / "batch.db") as store:
        leases = await add_and_claim(store, 3)
        good = SyncWrite(state=SyncState(etag="ok"), changes=ChangeSet(added=(occ,)))
        unbindable = SyncState(etag=object())  # type: ignore[arg-type]
        writes = [(leases[0], good), (leases[1], SyncWrite(state=unbindable))]
        writes.append((leases[2], good))
        with pytest.raises(StoreError):
            await store.apply_syncs(writes, T0)
        for lease in leases:
            assert await store.list_occurrences(lease.calendar_id) == []
            assert (await store.get_calendar(lease.calendar_id)).state.etag is None
        # Nothing was written: the leases still hold, and write on their own.
        await store.apply_sync(leases[0], good, T0)
        assert await store.list_occurrences(leases[0].calendar_id) == [occ]
