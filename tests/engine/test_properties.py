"""Exactly once, end to end: random feed edits, syncs, checks and dispatches.

Over any sequence, no reminder is delivered twice; every reminder delivered is
for the event as the store knows it at that moment (moved events at their new
time, removed ones never); and every reminder still ahead fires when its time
comes (nothing cancelled by mistake, a move away and back included).
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from calsync import Engine, HttpFetcher, SQLiteStore
from calsync.testing import FeedServer, ManualClock

from .conftest import MINUTE, T0, Recorder, event, ics
from .conftest import settings as engine_settings

UIDS = ("a", "b")
LEAD = timedelta(minutes=10)
ANCHOR = event("anchor", T0 + timedelta(days=30))  # never removed: no guard trips

steps = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.sampled_from(UIDS), st.none() | st.integers(1, 8)),
        st.tuples(st.just("advance"), st.integers(1, 8)),
        st.tuples(st.just("sync")),
        st.tuples(st.just("check")),
        st.tuples(st.just("dispatch")),
    ),
    max_size=40,
)


def _body(feed: dict[str, int]) -> str:
    return ics(ANCHOR, *(event(uid, T0 + k * 5 * MINUTE) for uid, k in feed.items()))


async def _run(plan: list[tuple[object, ...]]) -> None:
    clock = ManualClock(T0)
    handler = Recorder()
    feed: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as folder:
        async with FeedServer() as feeds:
            feeds.set("/p.ics", _body(feed))
            store = SQLiteStore(Path(folder) / "p.db")
            fetcher = HttpFetcher(allow=["127.0.0.1"])
            config = engine_settings(parse_cache_size=0)
            async with Engine(store, fetcher, settings=config, clock=clock) as engine:
                calendar = await engine.add_calendar(feeds.url("/p.ics"), leads=[LEAD])
                synced: dict[str, int] = {}
                for step in plan:
                    match step:
                        case ("set", uid, None):
                            feed.pop(str(uid), None)
                            feeds.set("/p.ics", _body(feed))
                        case ("set", uid, int(k)):
                            feed[str(uid)] = k
                            feeds.set("/p.ics", _body(feed))
                        case ("advance", int(minutes)):
                            clock.advance(minutes * MINUTE)
                        case ("sync",):
                            result = await engine.sync_calendar(calendar.id)
                            assert result.ok, result.error
                            synced = dict(feed)
                        case ("check",):
                            await engine.check_notifications()
                        case ("dispatch",):
                            before = len(handler.deliveries)
                            await engine.dispatch_notifications(handler)
                            for delivery in handler.deliveries[before:]:
                                uid = delivery.notification.key.uid
                                assert uid in synced, f"{uid} was removed"
                                start = T0 + synced[uid] * 5 * MINUTE
                                assert delivery.notification.start == start
                assert len(handler.ids) == len(set(handler.ids)), "delivered twice"
                # Every event not yet started gets its reminder (late ones at once).
                await engine.sync_calendar(calendar.id)
                synced = dict(feed)
                ahead = {
                    uid: T0 + k * 5 * MINUTE
                    for uid, k in synced.items()
                    if T0 + k * 5 * MINUTE > clock()
                }
                for uid, start in sorted(ahead.items(), key=lambda item: item[1]):
                    clock.set(max(clock(), start - LEAD))
                    await engine.check_notifications()
                    await engine.dispatch_notifications(handler)
                    fired = [
                        d for d in handler.deliveries if d.notification.key.uid == uid
                    ]
                    assert [d.notification.start for d in fired][-1:] == [start], uid
                assert len(handler.ids) == len(set(handler.ids)), "delivered twice"


@settings(max_examples=100, deadline=None, derandomize=True)
@given(steps)
def test_reminders_fire_exactly_once_for_the_event_as_it_is(
    plan: list[tuple[object, ...]],
) -> None:
    asyncio.run(_run(plan))
