"""Two runner processes on one store: one sync of a calendar at once, no duplicates.

On the real clock, with assertions about outcomes only: the test waits (with a
safety timeout) until every reminder was delivered, each feed was fetched a few
times and both runners synced something, however long a busy machine takes.
"""

from __future__ import annotations

from datetime import timedelta

from calsync import Engine

from .conftest import (
    SAFETY,
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
# Syncs of each calendar to see before stopping: enough for the runners to race.
SYNCS = 3
OPTIONS = {
    # However late the runners start, their reminders are still due.
    "late_grace": 600,
    # No lease runs out under a slow sync: a second sync at once is a real bug.
    "lease_ttl": 60,
}


async def test_two_runners_never_sync_one_calendar_at_once_nor_deliver_twice(
    engine: Engine, runners: Runners, feeds: TimedFeedServer
) -> None:
    time = Timeline()
    expected = set()
    paths = [f"/team-{number}.ics" for number in range(CALENDARS)]
    for number, path in enumerate(paths):
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
    first, second = runners.spawn(**OPTIONS), runners.spawn(**OPTIONS)

    async def all_delivered() -> bool:
        return set(runners.delivered_ids()) >= expected

    async def each_synced_enough() -> bool:
        return all(len(feeds.requests(path)) >= SYNCS for path in paths)

    async def both_synced() -> bool:
        return all("synced " in runner.log.read_text() for runner in (first, second))

    await eventually(all_delivered, within=SAFETY, what="every reminder delivered")
    await eventually(each_synced_enough, within=SAFETY, what=f"{SYNCS} syncs each")
    await eventually(both_synced, within=SAFETY, what="both runners syncing")
    await first.stop()
    await second.stop()

    for path in paths:
        assert feeds.overlaps(path) == [], f"{path} was synced twice at once"
    assert runners.delivered_ids() == dict.fromkeys(expected, 1)
    pids = {delivered.pid for delivered in runners.deliveries()}
    assert pids <= {first.pid, second.pid}
