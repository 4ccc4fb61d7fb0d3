"""Engine.claim_due and sync_calendar(handoff=...): a task queue's fan-out."""

from __future__ import annotations

import asyncio
import socket

import pytest

from calsync import Engine, PostgresStore, ValidationError
from calsync.core import StoreUnavailable
from calsync.engine import SyncOutcome
from calsync.stores import NotificationStatus
from calsync.testing import FeedServer, ManualClock

from .conftest import MINUTE, T0, event, ics


async def _calendars(engine: Engine, feeds: FeedServer, count: int) -> list[str]:
    ids = []
    for n in range(count):
        feeds.set(f"/{n}.ics", ics(event(f"e{n}", T0 + 30 * MINUTE)))
        calendar = await engine.add_calendar(feeds.url(f"/{n}.ics"), every="15m")
        ids.append(calendar.id)
    return ids


async def test_claim_due_hands_out_each_due_calendar_once_while_leased(
    engine: Engine, feeds: FeedServer
) -> None:
    ids = await _calendars(engine, feeds, 3)
    leases = await engine.claim_due()
    assert sorted(lease.calendar_id for lease in leases) == sorted(ids)
    assert await engine.claim_due() == []
    [run, *_] = await engine.store.recent_job_runs(job="claim_due")
    assert run.counts == {"claimed": 0}
    assert feeds.requests() == ()


async def test_claim_due_respects_its_limit(engine: Engine, feeds: FeedServer) -> None:
    await _calendars(engine, feeds, 3)
    assert len(await engine.claim_due(limit=2)) == 2
    assert len(await engine.claim_due(limit=2)) == 1
    with pytest.raises(ValidationError, match="limit"):
        await engine.claim_due(limit=0)


async def test_a_handed_off_lease_is_synced_and_not_handed_out_again(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    [calendar_id] = await _calendars(engine, feeds, 1)
    [lease] = await engine.claim_due()
    result = await engine.sync_calendar(calendar_id, handoff=lease.handoff)
    assert (result.outcome, result.added) == (SyncOutcome.CHANGED, 1)
    assert result.notifications_created == 0
    clock.advance(MINUTE)
    assert await engine.claim_due() == []
    clock.advance(15 * MINUTE)
    assert [lease.calendar_id for lease in await engine.claim_due()] == [calendar_id]


async def test_a_redelivered_task_finds_the_calendar_synced_and_skips_it(
    engine: Engine, feeds: FeedServer
) -> None:
    [calendar_id] = await _calendars(engine, feeds, 1)
    [lease] = await engine.claim_due()
    await engine.sync_calendar(calendar_id, handoff=lease.handoff)
    again = await engine.sync_calendar(calendar_id, handoff=lease.handoff)
    assert again.outcome is SyncOutcome.SKIPPED
    assert again.ok
    assert len(feeds.requests()) == 1


async def test_a_redelivered_task_takes_over_a_lease_its_dead_worker_held(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    [calendar_id] = await _calendars(engine, feeds, 1)
    [lease] = await engine.claim_due()
    # The first delivery adopted the lease (a renewal) and then its worker died.
    clock.advance(MINUTE)
    await engine.store.renew_lease(lease, clock(), engine.settings.lease_ttl)
    clock.advance(MINUTE)
    result = await engine.sync_calendar(calendar_id, handoff=lease.handoff)
    assert (result.outcome, result.added) == (SyncOutcome.CHANGED, 1)


async def test_an_expired_handoff_still_syncs_a_calendar_that_is_due(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    [calendar_id] = await _calendars(engine, feeds, 1)
    [lease] = await engine.claim_due()
    clock.advance(engine.settings.lease_ttl + MINUTE)
    result = await engine.sync_calendar(calendar_id, handoff=lease.handoff)
    assert result.outcome is SyncOutcome.CHANGED


async def test_an_expired_handoff_claimed_by_a_later_fan_out_is_busy(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    [calendar_id] = await _calendars(engine, feeds, 1)
    [old] = await engine.claim_due()
    clock.advance(engine.settings.lease_ttl + MINUTE)
    [new] = await engine.claim_due()
    assert new.token > old.token
    late = await engine.sync_calendar(calendar_id, handoff=old.handoff)
    assert late.outcome is SyncOutcome.BUSY
    assert feeds.requests() == ()
    current = await engine.sync_calendar(calendar_id, handoff=new.handoff)
    assert current.outcome is SyncOutcome.CHANGED


async def test_an_expired_handoff_of_a_calendar_synced_since_is_skipped(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    [calendar_id] = await _calendars(engine, feeds, 1)
    [lease] = await engine.claim_due()
    clock.advance(engine.settings.lease_ttl + MINUTE)
    assert (await engine.sync_calendar(calendar_id)).outcome is SyncOutcome.CHANGED
    late = await engine.sync_calendar(calendar_id, handoff=lease.handoff)
    assert late.outcome is SyncOutcome.SKIPPED
    assert len(feeds.requests()) == 1


async def test_two_deliveries_of_one_handoff_at_once_write_once(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    [calendar_id] = await _calendars(engine, feeds, 1)
    feeds.set("/0.ics", ics(event("soon", T0 + 5 * MINUTE)))
    feeds.delay("/0.ics", 0.3)
    [lease] = await engine.claim_due()
    first, second = await asyncio.gather(
        engine.sync_calendar(calendar_id, handoff=lease.handoff),
        engine.sync_calendar(calendar_id, handoff=lease.handoff),
    )
    outcomes = sorted([first.outcome, second.outcome])
    assert outcomes == sorted([SyncOutcome.CHANGED, SyncOutcome.LOST])
    assert first.notifications_created + second.notifications_created == 1
    pending = await engine.store.list_notifications(
        calendar_id=calendar_id, status=NotificationStatus.PENDING
    )
    assert len(pending) == 1


async def test_a_malformed_handoff_is_refused_naming_the_calendar(
    engine: Engine, feeds: FeedServer
) -> None:
    [calendar_id] = await _calendars(engine, feeds, 1)
    for bad in ["", "x:w", "12", "²:w"]:
        with pytest.raises(ValidationError, match=calendar_id):
            await engine.sync_calendar(calendar_id, handoff=bad)
    assert feeds.requests() == ()


async def test_follow_ups_name_the_jobs_worth_running_at_once(
    engine: Engine, feeds: FeedServer
) -> None:
    [calendar_id] = await _calendars(engine, feeds, 1)
    added = await engine.sync_calendar(calendar_id)
    assert added.follow_ups == ("check_notifications",)
    feeds.set("/0.ics", ics(event("e0", T0 + 30 * MINUTE), event("soon", T0 + MINUTE)))
    due = await engine.sync_calendar(calendar_id, force=True)
    assert due.follow_ups == ("check_notifications", "dispatch_notifications")
    forced = await engine.sync_calendar(calendar_id, force=True)
    assert forced.follow_ups == ()
    check = await engine.check_notifications()
    assert check.follow_ups == ()


async def test_sync_due_follow_ups_cover_all_its_calendars(
    engine: Engine, feeds: FeedServer
) -> None:
    await _calendars(engine, feeds, 2)
    result = await engine.sync_due()
    assert result.follow_ups == ("check_notifications",)


async def test_an_unreachable_postgres_is_store_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = PostgresStore(
        f"postgresql://calsync:s3cret@127.0.0.1:{port}/test?connect_timeout=2",
        max_size=1,
    )
    with pytest.raises(StoreUnavailable) as refused:
        await store.open()
    assert "s3cret" not in str(refused.value)
