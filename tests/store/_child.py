"""A store client run as its own OS process by the concurrency and crash tests.

Usage: python _child.py BACKEND TARGET MODE WORKER
BACKEND is "sqlite" (TARGET a file path), "postgres" or "mariadb" (TARGET a schema
name, the server from CALSYNC_TEST_POSTGRES_URL or CALSYNC_TEST_MARIADB_URL).
It prints one JSON object per line.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta

from calsync import Occurrence, PostgresStore, SQLiteStore, Store
from calsync.core import ChangeSet, LeaseLost, OccurrenceKey
from calsync.stores import MariaDBStore, SyncState, SyncWrite

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LONG = timedelta(hours=1)


def open_store(backend: str, target: str) -> Store:
    if backend == "sqlite":
        return SQLiteStore(target)
    if backend == "mariadb":
        return MariaDBStore(os.environ["CALSYNC_TEST_MARIADB_URL"], schema=target)
    return PostgresStore(os.environ["CALSYNC_TEST_POSTGRES_URL"], schema=target)


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def claim_everything(store: Store, worker: str) -> None:
    """Claim calendars and notifications in small batches until none are left."""
    calendars: list[str] = []
    notifications: list[str] = []
    say(ready=True)
    await asyncio.to_thread(sys.stdin.readline)
    while True:
        leases = await store.claim_due_calendars(
            T0, limit=2, worker=worker, lease_ttl=LONG
        )
        claims = await store.claim_notifications(
            T0, limit=3, worker=worker, lease_ttl=LONG
        )
        calendars += [lease.calendar_id for lease in leases]
        notifications += [claim.id for claim in claims]
        if not leases and not claims:
            break
        await asyncio.sleep(0.005)  # let the others at the lock between batches
    say(calendars=calendars, notifications=notifications)


async def hold_then_write(store: Store, worker: str) -> None:
    """Claim at T0, wait for a line on stdin, then try to write under that lease."""
    [lease] = await store.claim_due_calendars(
        T0, limit=1, worker=worker, lease_ttl=timedelta(minutes=5)
    )
    say(claimed=lease.calendar_id, token=lease.token)
    await asyncio.to_thread(sys.stdin.readline)
    try:
        await store.apply_sync(
            lease, SyncWrite(state=SyncState(etag=worker)), T0 + timedelta(minutes=6)
        )
    except LeaseLost as error:
        say(outcome="lease_lost", error=str(error))
    else:
        say(outcome="written")


async def take_over(store: Store, worker: str) -> None:
    """Claim after the first lease expired, and write."""
    [lease] = await store.claim_due_calendars(
        T0 + timedelta(minutes=5), limit=1, worker=worker, lease_ttl=LONG
    )
    await store.apply_sync(
        lease, SyncWrite(state=SyncState(etag=worker)), T0 + timedelta(minutes=5)
    )
    say(claimed=lease.calendar_id, token=lease.token, outcome="written")


def generation(label: str, count: int) -> tuple[Occurrence, ...]:
    return tuple(
        Occurrence(
            key=OccurrenceKey(f"{label}-{n}"),
            start=T0 + timedelta(minutes=n),
            end=T0 + timedelta(minutes=n + 30),
            summary=f"{label} {n}",
        )
        for n in range(count)
    )


async def big_apply(store: Store, worker: str) -> None:
    """Replace the 'before' generation by the 'after' one in one large apply."""
    count = int(os.environ.get("CALSYNC_CRASH_ROWS", "20000"))
    [lease] = await store.claim_due_calendars(
        T0 + timedelta(days=1), limit=1, worker=worker, lease_ttl=LONG
    )
    before = await store.list_occurrences(lease.calendar_id)
    changes = ChangeSet(added=generation("after", count), removed=tuple(before))
    write = SyncWrite(state=SyncState(etag="after"), changes=changes)
    say(applying=len(before))
    await store.apply_sync(lease, write, T0 + timedelta(days=1))
    say(applied=True)


async def claim_and_hang(store: Store, worker: str) -> None:
    """Claim every due notification for five minutes, then wait to be killed."""
    claims = await store.claim_notifications(
        T0, limit=100, worker=worker, lease_ttl=timedelta(minutes=5)
    )
    say(claimed={claim.id: claim.attempt for claim in claims})
    await asyncio.to_thread(sys.stdin.readline)


MODES = {
    "claim": claim_everything,
    "hold": hold_then_write,
    "take_over": take_over,
    "big_apply": big_apply,
    "claim_and_hang": claim_and_hang,
}


async def ensure_config(config_path: str) -> None:
    """Open the configured engine, wait for a line, then ensure its [[calendars]]."""
    from calsync.cli.commands import ensure_calendars
    from calsync.config import build_engine, load_config

    config = load_config(config_path)
    async with build_engine(config) as engine:
        say(ready=True)
        await asyncio.to_thread(sys.stdin.readline)
        await ensure_calendars(engine, config)
        say(calendars=[c.id for c in await engine.list_calendars()])


async def main() -> None:
    backend, target, mode, worker = sys.argv[1:5]
    if mode == "ensure":
        await ensure_config(target)
        return
    async with open_store(backend, target) as store:
        await MODES[mode](store, worker)


if __name__ == "__main__":
    asyncio.run(main())
