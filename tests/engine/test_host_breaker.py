"""The per-host circuit: when every feed of a host fails, the host is rested as a
whole (one probe after the cool-down) and other hosts are untouched.

Two hosts on one feed server: 127.0.0.1 and localhost (the circuit keys by host
name, like the per-host limits). The clock is virtual.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from calsync import Engine, HttpFetcher, Store
from calsync.core import CircuitBreaker, CircuitState
from calsync.engine import SyncOutcome
from calsync.testing import FeedServer, ManualClock

from .conftest import T0, event, ics, settings

MINUTE = timedelta(minutes=1)
BROKEN = ("/a1.ics", "/a2.ics", "/a3.ics")


@pytest.fixture
async def engine(store: Store, clock: ManualClock) -> AsyncIterator[Engine]:
    fetcher = HttpFetcher(allow=["127.0.0.1", "localhost"])
    config = settings(
        sync_concurrency=1,
        breaker=CircuitBreaker(
            failure_threshold=3,
            cool_down=timedelta(hours=1),
            probe_timeout=timedelta(minutes=10),
        ),
    )
    async with Engine(store, fetcher, settings=config, clock=clock) as engine:
        yield engine


def _fetches(feeds: FeedServer) -> int:
    return sum(len(feeds.requests(path)) for path in BROKEN)


async def test_a_host_whose_feeds_all_fail_is_rested_as_a_whole(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    for path in (*BROKEN, "/b.ics"):
        feeds.set(path, ics(event(path.strip("/"), T0 + timedelta(hours=5))))
        if path in BROKEN:
            feeds.fail(path, 503)
            await engine.add_calendar(feeds.url(path))
    other = await engine.add_calendar(
        feeds.url("/b.ics").replace("127.0.0.1", "localhost"), every="5m"
    )
    first = await engine.sync_due()
    assert len(first.failed) == 3
    assert _fetches(feeds) == 3

    # Each calendar's own backoff has passed, but its host rests: no fetch.
    clock.advance(5 * MINUTE)
    rested = await engine.sync_due()
    assert _fetches(feeds) == 3
    by_id = {result.calendar_id: result for result in rested.results}
    assert by_id.pop(other.id).outcome is SyncOutcome.UNCHANGED  # localhost is fine
    assert {result.outcome for result in by_id.values()} == {SyncOutcome.SKIPPED}
    for result in by_id.values():
        assert result.error is not None
        assert "127.0.0.1 is rested" in result.error
        assert result.next_sync_at == T0 + timedelta(hours=1)
    for calendar in await engine.list_calendars():
        assert calendar.state.circuit is CircuitState.CLOSED
        assert calendar.state.consecutive_failures in (0, 1)  # rests are no failures

    # After the cool-down one calendar probes the host; it fails, the rest wait.
    clock.set(T0 + timedelta(hours=1, minutes=1))
    probed = await engine.sync_due()
    assert _fetches(feeds) == 4
    outcomes = sorted(str(result.outcome) for result in probed.results)
    assert outcomes == ["failed", "skipped", "skipped", "unchanged"]

    # The host is back: the next probe succeeds and every feed of it follows.
    for path in BROKEN:
        feeds.recover(path)
    clock.set(T0 + timedelta(hours=2, minutes=2))
    recovered = await engine.sync_due()
    assert _fetches(feeds) == 7
    changed = [r for r in recovered.results if r.outcome is SyncOutcome.CHANGED]
    assert len(changed) == 3


async def test_feeds_failing_on_their_own_do_not_rest_their_host(
    engine: Engine, feeds: FeedServer, clock: ManualClock
) -> None:
    for path, status in zip(BROKEN, (404, 500, 410), strict=True):
        feeds.fail(path, status)
        await engine.add_calendar(feeds.url(path))
    assert len((await engine.sync_due()).failed) == 3
    feeds.set("/b.ics", ics(event("b", T0 + timedelta(hours=5))))
    healthy = await engine.add_calendar(feeds.url("/b.ics"))
    result = await engine.sync_calendar(healthy.id)
    assert result.outcome is SyncOutcome.CHANGED
