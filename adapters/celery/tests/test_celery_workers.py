"""calsync on real Celery: two prefork worker nodes and beat, on Redis and RabbitMQ.

Beat sends ``calsync.sync_due`` every 2 s; it leases the due calendars and fans
out one ``calsync.sync_calendar`` per lease; new reminders are dispatched by the
follow-up task. Every delivery lands as a row in ``deliveries``, so a duplicate
anywhere is a count of 2. The tests wait for events (with safety timeouts that
fail only when the event never comes) and for more beats before counting
duplicates, never for a fixed while.
"""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from _celery_harness import (
    LEAD,
    SAFETY,
    Cluster,
    Feeds,
    LatePostgres,
    Store,
    eventually,
    expected_id,
    feed,
    soon,
)

import calsync

CALENDARS = 200


async def test_every_calendar_syncs_and_every_reminder_is_delivered_once(
    cluster: Cluster, store: Store, feeds: Feeds
) -> None:
    start = soon()
    expected = set()
    ids = []
    for index in range(CALENDARS):
        uid = f"standup-{index}@example.com"
        feeds.bodies[f"/c{index}.ics"] = feed((uid, start, f"Stand-up {index}"))
        calendar = await store.engine.add_calendar(
            feeds.url(f"/c{index}.ics"), leads=["5m"]
        )
        ids.append(calendar.id)
        expected.add(expected_id(calendar, uid, start))

    cluster.start_worker("w1")
    cluster.start_worker("w2")
    cluster.start_beat()

    async def all_synced() -> bool:
        return await store.synced(ids) == CALENDARS

    async def all_delivered() -> bool:
        return set(await store.deliveries()) >= expected

    await eventually(
        all_synced, within=3 * SAFETY, what=f"{CALENDARS} calendars synced"
    )
    await eventually(all_delivered, what="every reminder delivered")
    await cluster.more_beats()  # time for a duplicate to show

    deliveries = await store.deliveries()
    assert set(deliveries) == expected
    assert [i for i, n in deliveries.items() if n > 1] == []
    assert await store.delivered_ids() == expected
    nodes = {cluster.node_of(t["node"]) for t in cluster.traced()}
    assert nodes == {"w1", "w2"}
    # One Engine per worker process, and one event loop in each, across tasks.
    working = {t["pid"] for t in cluster.traced()}
    engines = cluster.engines_made()
    assert sorted(engines) == sorted(set(engines))
    assert working <= set(engines)
    assert len(working) == 4
    tasks_per_process = len(cluster.traced()) / len(working)
    assert tasks_per_process > 10
    loops = await store.loops_by_process()
    assert all(len(seen) == 1 for seen in loops.values()), loops


@pytest.mark.parametrize("victim", ["node", "pool_child"])
async def test_a_sync_killed_mid_fetch_is_redelivered_and_its_reminder_sent_once(
    cluster: Cluster, store: Store, feeds: Feeds, victim: str
) -> None:
    start = soon()
    others = set()
    for index in range(4):
        uid = f"other-{index}@example.com"
        feeds.bodies[f"/o{index}.ics"] = feed((uid, start, "Other"))
        other = await store.engine.add_calendar(
            feeds.url(f"/o{index}.ics"), leads=["5m"]
        )
        others.add(expected_id(other, uid, start))

    cluster.start_worker("w1")
    cluster.start_worker("w2")
    cluster.start_beat()

    async def others_delivered() -> bool:
        return set(await store.deliveries()) >= others

    # A kill during another reminder's delivery could repeat it (delivery is at
    # least once); this test is about the sync, so they go first.
    await eventually(others_delivered, what="the other reminders delivered")

    # The slow feed answers only once the test lets it: killed mid-fetch, surely.
    feeds.bodies["/slow.ics"] = feed(("review@example.com", start, "Review"))
    feeds.hold("/slow.ics")
    slow = await store.engine.add_calendar(feeds.url("/slow.ics"), leads=["5m"])
    expected = others | {expected_id(slow, "review@example.com", start)}

    async def slow_fetch_arrived() -> bool:
        return feeds.arrived["/slow.ics"] >= 1 and bool(_syncs_of(cluster, slow.id))

    # Killed at once: well before Redis's visibility timeout (10 s in the test
    # app), after which Redis would hand the task out a second time.
    await eventually(slow_fetch_arrived, what="the slow feed requested")
    (running,) = _syncs_of(cluster, slow.id)
    if victim == "node":
        cluster.kill(cluster.node_of(running["node"]))
    else:
        os.kill(running["pid"], signal.SIGKILL)
    assert await store.synced([slow.id]) == 0, "killed mid-fetch, not after it"
    feeds.release("/slow.ics")

    async def slow_synced() -> bool:
        return await store.synced([slow.id]) == 1

    async def all_delivered() -> bool:
        return set(await store.deliveries()) >= expected

    await eventually(slow_synced, what="the killed sync redelivered")
    await eventually(all_delivered, what="every reminder delivered")
    await cluster.more_beats()  # time for a duplicate to show

    calendar = await store.engine.get_calendar(slow.id)
    occurrences = await store.engine.store.list_occurrences(slow.id)
    assert [o.summary for o in occurrences] == ["Review"]
    assert calendar.state.last_error is None
    again = _syncs_of(cluster, slow.id)
    assert len(again) == 2, "the same task, delivered a second time"
    assert again[0]["kwargs"]["handoff"] == again[1]["kwargs"]["handoff"]
    deliveries = await store.deliveries()
    assert set(deliveries) == expected
    assert [i for i, n in deliveries.items() if n > 1] == []
    assert await store.delivered_ids() == expected


def _syncs_of(cluster: Cluster, calendar_id: str) -> list[dict[str, object]]:
    return [
        t
        for t in cluster.traced()
        if t["task"] == "calsync.sync_calendar" and t["args"] == [calendar_id]
    ]


@pytest.mark.parametrize("pool", ["solo", "threads"])
async def test_a_solo_or_threads_pool_runs_the_jobs_too(
    cluster: Cluster, store: Store, feeds: Feeds, pool: str
) -> None:
    start = soon()
    expected, ids = set(), []
    for index in range(10):
        uid = f"standup-{index}@example.com"
        feeds.bodies[f"/c{index}.ics"] = feed((uid, start, "Stand-up"))
        calendar = await store.engine.add_calendar(
            feeds.url(f"/c{index}.ics"), leads=["5m"]
        )
        ids.append(calendar.id)
        expected.add(expected_id(calendar, uid, start))

    cluster.start_worker("w1", pool=pool)
    cluster.start_beat()

    async def all_delivered() -> bool:
        return set(await store.deliveries()) >= expected

    await eventually(all_delivered, what="every reminder delivered")
    await cluster.more_beats()  # time for a duplicate to show
    assert await store.synced(ids) == len(ids)
    deliveries = await store.deliveries()
    assert sorted(deliveries.values()) == [1] * len(expected)


async def test_a_store_that_is_down_at_first_makes_the_task_retry_until_it_is_up(
    cluster: Cluster, store: Store, feeds: Feeds, late_postgres: LatePostgres
) -> None:
    ids = []
    for index in range(3):
        feeds.bodies[f"/c{index}.ics"] = feed()
        calendar = await store.engine.add_calendar(feeds.url(f"/c{index}.ics"))
        ids.append(calendar.id)
    cluster.env["CALSYNC_CELERY_STORE_URL"] = late_postgres.url
    cluster.start_worker("w1")
    cluster.send("calsync.sync_due")  # no beat: this one message, and its retries

    async def retried() -> bool:
        return any(t["retries"] >= 1 for t in cluster.runs_of("calsync.sync_due"))

    await eventually(retried, what="sync_due retried")
    assert await store.synced(ids) == 0
    await late_postgres.open()

    async def all_synced() -> bool:
        return await store.synced(ids) == len(ids)

    await eventually(all_synced, what="the calendars synced after a retry")
    assert len({t["id"] for t in cluster.runs_of("calsync.sync_due")}) == 1


async def test_syncs_and_checks_wake_a_check_at_each_fire_time_before_beats(
    cluster: Cluster, store: Store, feeds: Feeds
) -> None:
    # Beat checks hourly. The sync that brings the event in wakes a check at
    # its first reminder's fire time; that check wakes one for the second.
    start = soon() + timedelta(minutes=1, seconds=25)  # fires in ~25 s, then ~45 s
    second = timedelta(minutes=4, seconds=40)
    feeds.bodies["/team.ics"] = feed(("review@example.com", start, "Review"))
    team = await store.engine.add_calendar(feeds.url("/team.ics"), leads=[LEAD, second])
    cluster.env["CALSYNC_CELERY_CHECK"] = "every 1h"
    cluster.start_worker("w1")
    cluster.start_beat()

    async def synced() -> bool:
        return await store.synced([team.id]) == 1

    await eventually(synced, what="the calendar synced")
    assert await store.deliveries() == {}
    for lead, count in ((LEAD, 1), (second, 2)):

        async def delivered(count: int = count) -> bool:
            return len(await store.deliveries()) >= count

        # Beat's hourly check never comes in time: only the wake-ups deliver.
        until_fire = (start - lead - datetime.now(UTC)).total_seconds()
        await eventually(
            delivered, within=max(until_fire, 0) + SAFETY, what=f"the {lead} reminder"
        )
    for record in await store.engine.store.list_notifications(calendar_id=team.id):
        assert record.delivered_at is not None
        assert record.delivered_at >= record.fire_at, "delivered before its time"
    first_id = expected_id(team, "review@example.com", start)
    second_id = calsync.stores.notification_id(
        team.id,
        calsync.Notification(
            key=calsync.core.OccurrenceKey("review@example.com"),
            lead=second,
            start=start,
        ),
    )
    assert await store.deliveries() == {first_id: 1, second_id: 1}
    wake_ups = [
        t for t in cluster.runs_of("calsync.check_notifications") if t["kwargs"]
    ]
    # Every wake-up stops at beat's next tick, so chains cannot pile up.
    assert len({t["kwargs"]["until"] for t in wake_ups}) == 1
    sent = len({t["id"] for t in wake_ups})
    if cluster.broker == "redis":
        # The test app's 10 s visibility timeout is shorter than a wake-up's
        # eta, so Redis may hand one out twice, and each run wakes the next
        # (README explains); the deliveries above stayed exactly once.
        assert 2 <= sent <= 4
    else:
        assert sent == 2


async def test_no_secret_reaches_the_worker_or_beat_logs(
    cluster: Cluster, store: Store, feeds: Feeds, late_postgres: LatePostgres
) -> None:
    # A feed token, a failing feed's token and a database password: each goes
    # through a path that logs (a delivery, a failed fetch, a store retry).
    start = soon()
    feeds.bodies["/team.ics"] = feed(("review@example.com", start, "Review"))
    team = await store.engine.add_calendar(
        feeds.url("/team.ics?token=feed-s3cret-one"), leads=["5m"]
    )
    gone = await store.engine.add_calendar(feeds.url("/gone.ics?token=feed-s3cret-two"))
    cluster.env["CALSYNC_CELERY_STORE_URL"] = psycopg.conninfo.make_conninfo(
        late_postgres.url, password="db-s3cret-three"
    )
    cluster.start_worker("w1")
    cluster.start_beat()

    async def retried() -> bool:
        return any(t["retries"] >= 1 for t in cluster.runs_of("calsync.sync_due"))

    await eventually(retried, what="sync_due retried while the store is down")
    await late_postgres.open()

    async def delivered_and_failed() -> bool:
        failed = (await store.engine.get_calendar(gone.id)).state.last_error
        return bool(await store.deliveries()) and failed is not None

    await eventually(delivered_and_failed, what="a delivery and a failure")
    assert await store.deliveries() == {
        expected_id(team, "review@example.com", start): 1
    }
    cluster.stop()
    logs = "\n".join(
        path.read_text(errors="replace") for path in cluster.folder.glob("*.log")
    )
    assert "StoreUnavailable" in logs  # the retry was logged...
    assert "/gone.ics" in logs  # ...and so was the failed feed, by its URL,
    assert "s3cret" not in logs  # with every secret redacted
