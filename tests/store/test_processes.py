"""Several OS processes on one store: exclusive claims, fenced writes, atomicity."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from calsync import Notification, Store
from calsync.core import ChangeSet
from calsync.stores import SyncState, SyncWrite

from .conftest import (
    MARIADB_URL,
    POSTGRES_URL,
    SQL_BACKENDS,
    T0,
    calendar,
    occurrence,
    sql_store,
    sql_target,
)

CHILD = Path(__file__).with_name("_child.py")


@pytest.fixture(params=SQL_BACKENDS)
async def target(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, str]]:
    """(backend, target) naming a fresh database the children can open."""
    async with sql_target(request.param, tmp_path) as name:
        yield (request.param, name)


def open_store(backend: str, name: str) -> Store:
    return sql_store(backend, name)


def spawn(backend: str, name: str, mode: str, worker: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), backend, name, mode, worker],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(child: subprocess.Popen[str], timeout: float = 120) -> list[dict]:
    out, err = child.communicate(timeout=timeout)
    assert child.returncode == 0, err
    return [json.loads(line) for line in out.splitlines() if line.strip()]


async def test_four_processes_claim_every_item_exactly_once(
    target: tuple[str, str],
) -> None:
    backend, name = target
    async with open_store(backend, name) as store:
        expected_notifications = set()
        for n in range(24):
            cal = await store.add_calendar(calendar(f"https://feeds.example/{n}.ics"))
            occurrences = [
                occurrence(f"e{n}-{i}", T0 + timedelta(minutes=i)) for i in range(5)
            ]
            await store.request_sync(cal.id, T0)
            [lease] = await store.claim_due_calendars(
                T0, limit=1, worker="seed", lease_ttl=timedelta(minutes=1)
            )
            assert lease.calendar_id == cal.id
            notes = [
                Notification(key=o.key, lead=timedelta(minutes=10), start=o.start)
                for o in occurrences
            ]
            applied = await store.apply_sync(
                lease,
                SyncWrite(
                    state=SyncState(next_sync_at=T0 - timedelta(minutes=1)),
                    changes=ChangeSet(added=tuple(occurrences)),
                    create=notes,
                ),
                T0,
            )
            assert applied.created == 5
            expected_notifications |= {
                record.id
                for record in await store.list_notifications(calendar_id=cal.id)
            }
        expected_calendars = {c.id for c in await store.list_calendars()}
    children = [spawn(backend, name, "claim", f"worker-{i}") for i in range(4)]
    for child in children:  # all open the store, then all start at once
        assert child.stdout is not None
        ready = await asyncio.to_thread(child.stdout.readline)
        assert json.loads(ready) == {"ready": True}
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    results = [finish(child)[-1] for child in children]
    calendar_claims = Counter(c for r in results for c in r["calendars"])
    notification_claims = Counter(n for r in results for n in r["notifications"])
    assert set(calendar_claims) == expected_calendars
    assert set(notification_claims) == expected_notifications
    assert max(calendar_claims.values()) == 1
    assert max(notification_claims.values()) == 1
    busy = sum(1 for r in results if r["calendars"] or r["notifications"])
    assert busy >= 2, "the processes did not overlap; the test proved nothing"


async def test_expired_lease_is_taken_over_by_another_process(
    target: tuple[str, str],
) -> None:
    backend, name = target
    async with open_store(backend, name) as store:
        cal = await store.add_calendar(calendar())
    holder = spawn(backend, name, "hold", "slow")
    assert holder.stdout is not None
    assert holder.stdin is not None
    first = json.loads(await asyncio.to_thread(holder.stdout.readline))
    assert first["claimed"] == cal.id
    [taker] = finish(spawn(backend, name, "take_over", "fast"))
    assert taker["token"] == first["token"] + 1
    holder.stdin.write("go\n")
    holder.stdin.flush()
    [outcome] = finish(holder)
    assert outcome["outcome"] == "lease_lost"
    async with open_store(backend, name) as store:
        assert (await store.get_calendar(cal.id)).state.etag == "fast"


async def test_sigkill_during_a_large_apply_leaves_before_or_after(
    target: tuple[str, str],
) -> None:
    backend, name = target
    rows = 20_000
    before = tuple(
        occurrence(f"before-{n}", T0 + timedelta(minutes=n)) for n in range(rows)
    )
    async with open_store(backend, name) as store:
        cal = await store.add_calendar(calendar())
        [lease] = await store.claim_due_calendars(
            T0, limit=1, worker="seed", lease_ttl=timedelta(minutes=1)
        )
        await store.apply_sync(
            lease,
            SyncWrite(state=SyncState(etag="before"), changes=ChangeSet(added=before)),
            T0,
        )
    rng = random.Random(5545)
    interrupted = False
    for _attempt in range(4):
        child = spawn(backend, name, "big_apply", "doomed")
        assert child.stdout is not None
        line = await asyncio.to_thread(child.stdout.readline)
        assert json.loads(line)["applying"] == rows
        await asyncio.sleep(rng.uniform(0.01, 0.2))
        child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate(timeout=60)
        await assert_before_or_after(backend, name, cal.id, rows)
        if "applied" not in rest:
            interrupted = True
            break
        await reset(backend, name, cal.id, before)
    assert interrupted, "no kill landed inside an apply; the test proved nothing"


async def test_redelivery_after_sigkill_carries_a_higher_attempt(
    target: tuple[str, str],
) -> None:
    from calsync import Delivery, Engine, Settings
    from calsync.testing import ManualClock

    backend, name = target
    standup = occurrence("standup", T0 + timedelta(minutes=10))
    async with open_store(backend, name) as store:
        await store.add_calendar(calendar())
        [lease] = await store.claim_due_calendars(
            T0, limit=1, worker="seed", lease_ttl=timedelta(minutes=1)
        )
        reminder = Notification(
            key=standup.key, lead=timedelta(minutes=10), start=standup.start
        )
        write = SyncWrite(
            state=SyncState(), changes=ChangeSet(added=(standup,)), create=(reminder,)
        )
        assert (await store.apply_sync(lease, write, T0)).created == 1
    child = spawn(backend, name, "claim_and_hang", "doomed")
    assert child.stdout is not None
    claimed = json.loads(await asyncio.to_thread(child.stdout.readline))["claimed"]
    assert list(claimed.values()) == [1]
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    deliveries: list[Delivery] = []

    async def handler(delivery: Delivery) -> None:
        deliveries.append(delivery)

    clock = ManualClock(T0 + timedelta(minutes=5))  # the dead claim has ended
    settings = Settings(worker="survivor", per_host_rate=None)
    async with Engine(
        open_store(backend, name), settings=settings, clock=clock
    ) as engine:
        assert (await engine.dispatch_notifications(handler)).delivered == 1
    [delivery] = deliveries
    assert delivery.id in claimed
    assert delivery.attempt == 2


async def test_processes_started_together_ensure_each_config_calendar_once(
    target: tuple[str, str], tmp_path: Path
) -> None:
    backend, name = target
    if backend == "sqlite":
        store = f'url = "sqlite:///{name}"'
    else:
        server = POSTGRES_URL if backend == "postgres" else MARIADB_URL
        store = f'url = "{server}"\nschema = "{name}"'
    urls = [f"https://feeds.example/team-{n}.ics?token=t{n}" for n in range(12)]
    entries = "".join(f'[[calendars]]\nurl = "{url}"\n\n' for url in urls)
    config = tmp_path / "calsync.toml"
    config.write_text(f"[store]\n{store}\n\n{entries}")
    children = [spawn(backend, str(config), "ensure", f"run-{n}") for n in range(4)]
    for child in children:  # every one has opened the store: now all at once
        assert child.stdout is not None
        ready = await asyncio.to_thread(child.stdout.readline)
        assert json.loads(ready) == {"ready": True}, child.stderr
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    seen = [finish(child)[-1]["calendars"] for child in children]
    assert all(ids == seen[0] for ids in seen)
    async with open_store(backend, name) as opened:
        stored = await opened.list_calendars()
    assert sorted(c.url for c in stored) == sorted(urls)
    assert [c.id for c in stored] == seen[0]


async def assert_before_or_after(
    backend: str, name: str, calendar_id: str, rows: int
) -> None:
    async with open_store(backend, name) as store:
        state = (await store.get_calendar(calendar_id)).state
        occurrences = await store.list_occurrences(calendar_id)
    prefixes = Counter(o.key.uid.split("-")[0] for o in occurrences)
    assert state.etag in ("before", "after")
    assert prefixes == Counter({state.etag: rows})


async def reset(backend: str, name: str, calendar_id: str, before: tuple) -> None:
    """Put the 'before' generation back for another attempt."""
    async with open_store(backend, name) as store:
        current = await store.list_occurrences(calendar_id)
        await store.request_sync(calendar_id, T0)
        [lease] = await store.claim_due_calendars(
            T0 + timedelta(days=2),
            limit=1,
            worker="reset",
            lease_ttl=timedelta(minutes=1),
        )
        changes = ChangeSet(added=before, removed=tuple(current))
        await store.apply_sync(
            lease, SyncWrite(state=SyncState(etag="before"), changes=changes), T0
        )
