"""GroupCommit: syncs that finish together share one store transaction."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import attrs
import pytest

from calsync import Engine, HttpFetcher, MemoryStore, SQLiteStore, Store
from calsync.core import LeaseLost
from calsync.engine import SyncOutcome
from calsync.engine.commit import GroupCommit
from calsync.stores import (
    AppliedSync,
    Calendar,
    Lease,
    NotificationStatus,
    SyncState,
    SyncWrite,
)
from calsync.testing import FeedServer, ManualClock

from .conftest import MINUTE, T0, event, ics, settings

TTL = timedelta(minutes=5)


class _CountingStore(MemoryStore):
    """A memory store that counts its write transactions by kind."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.singles = 0

    async def apply_syncs(self, writes, now):  # type: ignore[no-untyped-def]
        self.batches.append(len(writes))
        return await super().apply_syncs(writes, now)

    async def apply_sync(self, lease, write, now):  # type: ignore[no-untyped-def]
        self.singles += 1
        await self.gate.wait()
        return await super().apply_sync(lease, write, now)

    gate = asyncio.Event()
    gate.set()


async def _leases(store: Store, count: int) -> list[Lease]:
    for index in range(count):
        calendar = Calendar(url=f"https://example.com/{index}.ics", created_at=T0)
        await store.add_calendar(calendar)
    return await store.claim_due_calendars(T0, limit=count, worker="w", lease_ttl=TTL)


async def test_writes_queued_together_share_one_transaction() -> None:
    async with _CountingStore() as store:
        leases = await _leases(store, 5)
        commit = GroupCommit(store, lambda: T0)
        writes = [SyncWrite(SyncState(etag=f"e{n}")) for n in range(5)]
        applied = await asyncio.gather(
            *(
                commit.apply(lease, write)
                for lease, write in zip(leases, writes, strict=True)
            )
        )
        assert applied == [AppliedSync()] * 5
        assert (store.batches, store.singles) == ([5], 0)
        etags = [(await store.get_calendar(x.calendar_id)).state.etag for x in leases]
        assert etags == [f"e{n}" for n in range(5)]


async def test_a_lone_write_is_written_at_once_as_apply_sync_does() -> None:
    async with _CountingStore() as store:
        [lease] = await _leases(store, 1)
        commit = GroupCommit(store, lambda: T0)
        await commit.apply(lease, SyncWrite(SyncState(etag="alone")))
        assert (store.batches, store.singles) == ([], 1)
        with pytest.raises(LeaseLost):  # released by the write
            await commit.apply(lease, SyncWrite(SyncState(etag="again")))


async def test_writes_queued_during_a_commit_go_in_the_next_one() -> None:
    async with _CountingStore() as store:
        leases = await _leases(store, 4)
        commit = GroupCommit(store, lambda: T0)
        first = asyncio.ensure_future(commit.apply(leases[0], SyncWrite(SyncState())))
        await asyncio.sleep(0)  # the writer takes the first write alone
        rest = [commit.apply(lease, SyncWrite(SyncState())) for lease in leases[1:]]
        await asyncio.gather(first, *rest)
        assert (store.singles, store.batches) == (1, [3])


async def test_a_lost_lease_fails_its_own_write_only() -> None:
    async with _CountingStore() as store:
        leases = await _leases(store, 3)
        await store.release_lease(leases[1])
        commit = GroupCommit(store, lambda: T0)
        outcomes = await asyncio.gather(
            *(commit.apply(lease, SyncWrite(SyncState(etag="b"))) for lease in leases),
            return_exceptions=True,
        )
        assert isinstance(outcomes[1], LeaseLost)
        assert outcomes[0] == outcomes[2] == AppliedSync()
        assert store.batches == [3]


async def test_a_refused_batch_is_written_one_by_one(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "refused.db") as store:
        leases = await _leases(store, 3)
        commit = GroupCommit(store, lambda: T0)
        unbindable = SyncState(etag=object())  # type: ignore[arg-type]
        writes = [SyncState(etag="a"), unbindable, SyncState(etag="c")]
        outcomes = await asyncio.gather(
            *(
                commit.apply(lease, SyncWrite(state))
                for lease, state in zip(leases, writes, strict=True)
            ),
            return_exceptions=True,
        )
        assert outcomes[0] == outcomes[2] == AppliedSync()
        assert isinstance(outcomes[1], Exception)
        etags = [(await store.get_calendar(x.calendar_id)).state.etag for x in leases]
        assert etags == ["a", None, "c"]


async def test_a_waiter_cancelled_before_its_batch_writes_nothing() -> None:
    async with _CountingStore() as store:
        leases = await _leases(store, 3)
        commit = GroupCommit(store, lambda: T0)
        store.gate = asyncio.Event()  # the first write waits under way
        first = asyncio.ensure_future(commit.apply(leases[0], SyncWrite(SyncState())))
        while store.singles == 0:
            await asyncio.sleep(0)
        cancelled = asyncio.ensure_future(
            commit.apply(leases[1], SyncWrite(SyncState(etag="cancelled")))
        )
        kept = asyncio.ensure_future(
            commit.apply(leases[2], SyncWrite(SyncState(etag="kept")))
        )
        await asyncio.sleep(0)  # both queued behind the first
        cancelled.cancel()
        await asyncio.sleep(0)
        store.gate.set()
        await asyncio.gather(first, kept)
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        stored = await store.get_calendar(leases[1].calendar_id)
        assert stored.state.etag is None
        # Its lease still holds: the sync that was cancelled gives it back.
        await store.release_lease(leases[1])
        assert (await store.get_calendar(leases[2].calendar_id)).state.etag == "kept"


async def test_a_cycle_of_many_calendars_syncs_each_once(
    tmp_path: Path, feeds: FeedServer, clock: ManualClock
) -> None:
    store = SQLiteStore(tmp_path / "cycle.db")
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    engine = Engine(store, fetcher, settings=settings(sync_concurrency=8), clock=clock)
    async with engine:
        for index in range(20):
            feeds.set(f"/{index}.ics", ics(event(f"e{index}", T0 + 5 * MINUTE)))
            await engine.add_calendar(feeds.url(f"/{index}.ics"))
        first = await engine.sync_due()
        assert first.counts == {"synced": 20, "changed": 20}
        assert sum(r.notifications_created for r in first.results) == 20
        clock.advance(timedelta(minutes=16))
        second = await engine.sync_due()
        assert second.counts == {"synced": 20, "unchanged": 20}
        assert all(r.outcome is SyncOutcome.UNCHANGED for r in second.results)
        assert (await engine.sync_due()).results == ()  # every lease was released


async def test_an_unchanged_sync_cancels_reminders_of_a_dropped_lead(
    tmp_path: Path, feeds: FeedServer, clock: ManualClock
) -> None:
    """A lead dropped while the calendar was leased is cancelled by its next sync."""
    store = SQLiteStore(tmp_path / "leads.db")
    fetcher = HttpFetcher(allow=["127.0.0.1"])
    async with Engine(store, fetcher, settings=settings(), clock=clock) as engine:
        feeds.set("/a.ics", ics(event("a", T0 + 20 * MINUTE)))
        calendar = await engine.add_calendar(feeds.url("/a.ics"), leads=["10m", "30m"])
        assert (await engine.sync_calendar(calendar.id)).notifications_created == 1
        # Changed in the store directly, as a racing update would leave it.
        stored = await store.get_calendar(calendar.id)
        await store.update_calendar(attrs.evolve(stored, leads=(timedelta(hours=1),)))
        result = await engine.sync_calendar(calendar.id)
        assert result.outcome is SyncOutcome.UNCHANGED
        assert result.notifications_cancelled == 1
        records = await store.list_notifications(calendar_id=calendar.id)
        statuses = {r.notification.lead: r.status for r in records}
        assert statuses[30 * MINUTE] is NotificationStatus.CANCELLED
