"""Many store objects, each with its own connection, racing on one database."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from calsync import Notification, Store
from calsync.core import ChangeSet
from calsync.stores import SyncState, SyncWrite

from .conftest import MINUTE, T0, StoreFactory, calendar, occurrence

STORES = 6
ROUNDS = 300
TTL = timedelta(minutes=5)

T = TypeVar("T")


async def race(stores: list[Store], work: Callable[[Store], Awaitable[T]]) -> list[T]:
    """Run ``work`` on every store at once (past one barrier); return each result."""
    barrier = asyncio.Barrier(len(stores))

    async def one(store: Store) -> T:
        await barrier.wait()
        return await work(store)

    return list(await asyncio.gather(*(one(store) for store in stores)))


async def open_all(store_factory: StoreFactory) -> list[Store]:
    stores = [store_factory() for _ in range(STORES)]
    for store in stores:
        await store.open()
    return stores


async def test_racing_stores_create_each_reminder_once(
    store_factory: StoreFactory,
) -> None:
    stores = await open_all(store_factory)
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
            created = await race(
                stores,
                lambda store, reminder=reminder: store.add_notifications(
                    cal.id, [reminder], T0
                ),
            )
            assert sum(created) == 1, (event.key, created)
        assert len(await stores[0].list_notifications(limit=ROUNDS + 1)) == ROUNDS
    finally:
        for store in stores:
            await store.close()


async def test_racing_stores_ensure_one_calendar_per_url(
    store_factory: StoreFactory,
) -> None:
    stores = await open_all(store_factory)
    try:
        for n in range(20):
            url = f"https://feeds.example/{n}.ics"
            outcomes = await race(
                stores,
                # Each caller brings a calendar with an id of its own.
                lambda store, url=url: store.ensure_calendar(calendar(url)),
            )
            assert len({stored.id for stored, _ in outcomes}) == 1
            assert [added for _, added in outcomes].count(True) == 1
        assert len(await stores[0].list_calendars()) == 20
    finally:
        for store in stores:
            await store.close()
