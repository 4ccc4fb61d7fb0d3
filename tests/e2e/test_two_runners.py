"""Two runner processes on one store: one sync of a calendar at once, no duplicates."""

from __future__ import annotations

from datetime import timedelta

from calsync import Engine

from .conftest import (
    Runners,
    TimedFeedServer,
    Timeline,
    event,
    eventually,
    expected_id,
    ics,
)

LEAD = timedelta(seconds=1)
CALENDARS = 4
# Slow answers, so two syncs of one calendar at once could not go unnoticed.
FEED_DELAY = 0.3


async def test_two_runners_never_sync_one_calendar_at_once_nor_deliver_twice(
    engine: Engine, runners: Runners, feeds: TimedFeedServer
) -> None:
    time = Timeline()
    expected = set()
    for number in range(CALENDARS):
        path = f"/team-{number}.ics"
        starts = {f"c{number}-{n}": time.at(3 + n) for n in range(2)}
        # Half the feeds send no validators: every sync downloads and compares.
        feeds.set(
            path,
            ics(*(event(uid, start) for uid, start in starts.items())),
            validators=number % 2 == 0,
        )
        feeds.delay(path, FEED_DELAY)
        calendar = await engine.add_calendar(
            feeds.url(path), every="every 1s", leads=[LEAD]
        )
        expected |= {expected_id(calendar, uid, s, LEAD) for uid, s in starts.items()}
    first, second = runners.spawn(), runners.spawn()

    async def all_delivered() -> bool:
        return set(runners.delivered_ids()) >= expected

    await eventually(all_delivered, within=15, what="every reminder delivered")
    await first.stop()
    await second.stop()

    for number in range(CALENDARS):
        path = f"/team-{number}.ics"
        assert len(feeds.requests(path)) >= 3, "too few syncs to show anything"
        assert feeds.overlaps(path) == [], f"{path} was synced twice at once"
    assert runners.delivered_ids() == dict.fromkeys(expected, 1)
    pids = {delivered.pid for delivered in runners.deliveries()}
    assert pids <= {first.pid, second.pid}
    for runner in (first, second):
        assert "synced " in runner.log.read_text(), "one runner never got to sync"
