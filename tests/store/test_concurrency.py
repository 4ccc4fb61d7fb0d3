"""Many store objects, each with its own connection, racing on one database."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from calsync import ChangeSet, Notification, Store, SyncState, SyncWrite

from .conftest import MINUTE, T0, StoreFactory, calendar, occurrence

STORES = 6
ROUNDS = 300
TTL = timedelta(minutes=5)


async def test_racing_stores_create_each_reminder_once(
    store_factory: StoreFactory,
) -> None:
    stores = [store_factory() for _ in range(STORES)]
    for store in stores:
        await store.open()
    try:
        events = [occurrence(f"event-{n}", T0 + n * MINUTE) for n in range(ROUNDS)]
        cal = await stores[0].add_calendar(calendar())
        [lease] = await stores[0].claim_due_calendars(
            T0, limit=1, worker="seed", lease_ttl=TTL
        )
        write = SyncWrite(state=SyncState(), changes=ChangeSet(added=tuple(events)))
        await stores[0].apply_sync(lease, write, T0)
        for event in events:
            reminder = Notification(key=event.key, lead=10 * MINUTE, start=event.start)
            created = await race(stores, cal.id, reminder)
            assert sum(created) == 1, (event.key, created)
        assert len(await stores[0].list_notifications(limit=ROUNDS + 1)) == ROUNDS
    finally:
        for store in stores:
            await store.close()


async def race(
    stores: list[Store], calendar_id: str, reminder: Notification
) -> list[int]:
    """Every store inserts ``reminder`` at once; return what each counted as new."""
    barrier = asyncio.Barrier(len(stores))

    async def insert(store: Store) -> int:
        await barrier.wait()
        return await store.add_notifications(calendar_id, [reminder], T0)

    return list(await asyncio.gather(*(insert(store) for store in stores)))
