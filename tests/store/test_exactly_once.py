"""Property: across any sequence of syncs, checks and dispatches, no reminder twice.

A tiny engine made of the pure core (`diff`, `notifications_due`) drives a real
store through random feed edits, moving events, removals and repeated checks.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calsync import Calendar, Occurrence, Store, Window, diff, notifications_due
from calsync.core import OccurrenceKey
from calsync.stores import NotificationStatus, SyncState, SyncWrite

from .conftest import T0, StoreFactory

LEADS = (timedelta(minutes=10), timedelta(minutes=30))
TTL = timedelta(minutes=5)
STEP = timedelta(minutes=7)
UIDS = ("standup", "review", "retro")

feeds = st.dictionaries(
    st.sampled_from(UIDS), st.integers(min_value=0, max_value=12), max_size=3
)
steps = st.lists(
    st.tuples(st.sampled_from(["sync", "check", "dispatch", "check"]), feeds),
    min_size=1,
    max_size=25,
)


def feed_occurrences(feed: dict[str, int]) -> list[Occurrence]:
    """Each uid starts at T0 + slot * 7 minutes: editing a slot moves the event."""
    return [
        Occurrence(
            key=OccurrenceKey(uid),
            start=T0 + slot * STEP,
            end=T0 + slot * STEP + timedelta(minutes=20),
            summary=uid,
        )
        for uid, slot in feed.items()
    ]


async def run_steps(
    store: Store, plan: list[tuple[str, dict[str, int]]], n: int
) -> None:
    cal = await store.add_calendar(
        Calendar(url=f"https://feeds.example/{n}.ics", created_at=T0, leads=LEADS)
    )
    now = T0 - timedelta(minutes=40)
    delivered: Counter[tuple[object, ...]] = Counter()
    for action, feed in plan:
        now += timedelta(minutes=3)
        if action == "sync":
            await store.request_sync(cal.id, now)
            [lease] = await store.claim_due_calendars(
                now, limit=1, worker="w", lease_ttl=TTL
            )
            previous = await store.list_occurrences(cal.id)
            window = Window.around(
                now, past=timedelta(days=1), horizon=timedelta(days=9)
            )
            current = feed_occurrences(feed)
            changes = diff(previous, current, window)
            due = notifications_due(current, leads=LEADS, now=now)
            write = SyncWrite(state=SyncState(), changes=changes, create=due)
            await store.apply_sync(lease, write, now)
        elif action == "check":
            current = await store.list_occurrences(cal.id)
            due = notifications_due(current, leads=LEADS, now=now)
            await store.add_notifications(cal.id, due, now)
        else:
            for claim in await store.claim_notifications(
                now, limit=10, worker="d", lease_ttl=TTL
            ):
                record = claim.record
                delivered[(record.calendar_id, *record.notification.identity)] += 1
                await store.mark_delivered(claim, now)
        await check_invariants(store, cal.id, delivered)


async def check_invariants(store: Store, calendar_id: str, delivered: Counter) -> None:
    records = await store.list_notifications(calendar_id=calendar_id)
    identities = Counter(r.notification.identity for r in records)
    assert max(identities.values(), default=0) <= 1
    assert max(delivered.values(), default=0) <= 1
    stored = {o.key: o.start for o in await store.list_occurrences(calendar_id)}
    for record in records:
        if record.status is NotificationStatus.PENDING:
            # A pending reminder always points at its event as it is now.
            assert stored.get(record.notification.key) == record.notification.start


def test_no_reminder_is_created_or_delivered_twice(store_factory: StoreFactory) -> None:
    counter = iter(range(10_000))

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(plan=steps)
    def check(plan: list[tuple[str, dict[str, int]]]) -> None:
        async def example() -> None:
            async with store_factory() as store:
                await run_steps(store, plan, next(counter))

        asyncio.run(example())

    check()
