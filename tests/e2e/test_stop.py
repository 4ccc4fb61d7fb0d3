"""SIGTERM while a feed answers slowly: the runner exits in time, the lease is free."""

from __future__ import annotations

from datetime import timedelta

from calsync import Engine

from .conftest import Runners, TimedFeedServer, event, eventually, ics, sqlite_only

PATH = "/slow.ics"


@sqlite_only
async def test_sigterm_during_a_slow_fetch_exits_in_time_and_releases_the_lease(
    engine: Engine, runners: Runners, feeds: TimedFeedServer
) -> None:
    feeds.set(PATH, ics(event("standup", engine.now() + timedelta(hours=1))))
    feeds.delay(PATH, 30)
    calendar = await engine.add_calendar(feeds.url(PATH))
    # A lease that outlives the test: only giving it back frees the calendar.
    runner = runners.spawn(lease_ttl=120)

    async def fetching() -> bool:
        return feeds.in_flight[PATH] > 0

    await eventually(fetching, within=5, what="the runner fetching the slow feed")
    await runner.stop()

    lease = await engine.store.claim_calendar(
        calendar.id, engine.now(), worker="another", lease_ttl=timedelta(minutes=1)
    )
    assert lease is not None, "the stopped runner kept the calendar leased"
    assert lease.calendar.state.last_error is None
