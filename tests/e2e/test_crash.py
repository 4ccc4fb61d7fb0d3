"""Runner processes killed with SIGKILL at random points, then restarted.

Every reminder must still be delivered, and a reminder may reach the handler
twice only if it was in flight (recorded by the handler, not yet marked
delivered) in a process that was killed: with the handler recording ids, the
effects are exactly once.

The default run kills 3 times; ``CALSYNC_LONG_TESTS=1`` kills 50 times.
``CALSYNC_E2E_SEED`` replays the kill times of a failed run (it is printed).

On the real clock: where a kill lands is the random part, and the assertions
are about outcomes only. The late grace covers any start-up delay and the
handler timeout (half the lease) any slow disk, so a busy machine changes where
the kills land, never the verdict.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from datetime import timedelta

import pytest

from calsync import Engine
from calsync.stores import NotificationStatus

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

KILLS = 50 if os.environ.get("CALSYNC_LONG_TESTS") == "1" else 3
LEAD = timedelta(seconds=1)
# A killed runner's claims come back after this; a live one's never run out.
LEASE_TTL = 6.0
# Kill this long after a start: from before the first sync to mid-dispatch.
KILL_AFTER = (0.2, 1.6)
PER_SECOND = 3


@pytest.fixture
def rng() -> random.Random:
    seed = int(os.environ.get("CALSYNC_E2E_SEED", random.randrange(2**32)))
    print(f"CALSYNC_E2E_SEED={seed}")
    return random.Random(seed)


async def test_killed_runners_lose_no_reminder_and_repeat_only_those_in_flight(
    engine: Engine, runners: Runners, feeds: TimedFeedServer, rng: random.Random
) -> None:
    time = Timeline()
    span = round(KILLS * sum(KILL_AFTER) / 2 + 2)
    starts = {
        f"e{second}-{n}": time.at(2 + second)
        for second in range(span)
        for n in range(PER_SECOND)
    }
    feeds.set("/busy.ics", ics(*(event(uid, start) for uid, start in starts.items())))
    calendar = await engine.add_calendar(
        feeds.url("/busy.ics"), every="15m", leads=[LEAD]
    )
    expected = {expected_id(calendar, uid, at, LEAD) for uid, at in starts.items()}
    options = {
        "late_grace": 600,
        "lease_ttl": LEASE_TTL,
        "dispatch_concurrency": 1,
        "handler_delay": 0.03,
    }

    killed: set[int] = set()
    for _ in range(KILLS):
        runner = runners.spawn(**options)
        await asyncio.sleep(rng.uniform(*KILL_AFTER))
        await runner.kill()
        killed.add(runner.pid)
    survivor = runners.spawn(**options)

    async def all_delivered() -> bool:
        # Marked delivered in the store, not only recorded by the handler: a call
        # a killed runner recorded but never marked is redelivered after its lease.
        if not set(runners.delivered_ids()) >= expected:
            return False
        counted = await engine.store.notification_counts(calendar_id=calendar.id)
        return counted[NotificationStatus.DELIVERED] == len(expected)

    last = max(starts.values())
    await eventually(
        all_delivered,
        within=max(time.until(last), 0) + 2 * LEASE_TTL + SAFETY,
        what="every reminder delivered after the restarts",
    )
    await survivor.stop()

    counts = runners.delivered_ids()
    assert set(counts) == expected
    # A repeat is an earlier call whose process was killed right in it: the
    # last call that process recorded (it made one call at a time).
    last_call = {d.pid: d.id for d in runners.deliveries()}
    repeats = Counter[str]()
    seen: set[str] = set()
    for delivered in reversed(runners.deliveries()):
        if delivered.id in seen:
            assert delivered.pid in killed, "a delivery repeated without a kill"
            assert last_call[delivered.pid] == delivered.id, "repeat not in flight"
            repeats[delivered.id] += 1
        seen.add(delivered.id)
    print(f"{KILLS} kills, {sum(repeats.values())} repeated deliveries")
    # One handler call at a time per process: at most one in flight per kill.
    assert sum(repeats.values()) <= KILLS
    counted = await engine.store.notification_counts(calendar_id=calendar.id)
    assert counted[NotificationStatus.DELIVERED] == len(expected)
    assert sum(counted.values()) == len(expected)
