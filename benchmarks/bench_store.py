"""How the hot store queries scale with the number of stored occurrences.

For SQLite, PostgreSQL and MariaDB (one `SQLStore`, three backends), with 10k,
100k and 1M occurrences loaded through the public Store API into 200 calendars
(one of them 5,000 occurrences, the rest share the remainder), the median of N
runs of:

  (a) claim_due_calendars while 10 calendars are due,
  (b) claim_notifications at a `now` where 50 of many pending ones are due,
  (c) apply_sync of a 1 %-changed ChangeSet (50 of 5,000 updated),

each as wall time and as process CPU time (``_cpu``: the store's worker thread
included), which machine load disturbs less.

Target: (a) and (b) grow at most 2x from 10k to 1M (index lookups, not scans).

    python benchmarks/bench_store.py [--sizes 10000,100000,1000000] [--runs 15]
        [--backends sqlite,postgres,mariadb] [--notify-every 10] [--json out.json]

PostgreSQL is measured when CALSYNC_TEST_POSTGRES_URL (or --postgres) is set,
MariaDB when CALSYNC_TEST_MARIADB_URL (or --mariadb) is. The table prints the
backends side by side, with the load time of each size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import attrs

from calsync import (
    Calendar,
    Notification,
    Occurrence,
    PostgresStore,
    SQLiteStore,
    Store,
)
from calsync.core import ChangeSet, OccurrenceKey
from calsync.stores import SyncState, SyncWrite

try:
    from calsync.stores import MariaDBStore
except ImportError:  # a calsync from before the one SQL store
    MariaDBStore = None  # type: ignore[assignment,misc]

TIMED = ("claim_due_calendars", "claim_notifications", "apply_1pct")
OPERATIONS = (*TIMED, *(f"{op}_cpu" for op in TIMED), "load_s")

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CALENDARS = 200
TARGET_SIZE = 5_000
DUE_CALENDARS = 10
DUE_NOTIFICATIONS = 50
TTL = timedelta(minutes=5)
T = TypeVar("T")


def occurrences_of(calendar_index: int, count: int) -> tuple[Occurrence, ...]:
    """``count`` occurrences, one every 30 minutes from T0 on."""
    return tuple(
        Occurrence(
            key=OccurrenceKey(f"c{calendar_index}-e{n}", ""),
            start=T0 + timedelta(minutes=30 * n, seconds=calendar_index),
            end=T0 + timedelta(minutes=30 * n + 25, seconds=calendar_index),
            summary=f"Event {n} of calendar {calendar_index}",
            location="Room 4",
        )
        for n in range(count)
    )


async def load(
    store: Store, total: int, notify_every: int = 10
) -> tuple[list[str], datetime]:
    """Store 200 calendars holding ``total`` occurrences, the last one 5,000.

    Every ``notify_every``-th occurrence has a pending notification. Returns the
    calendar ids and a `now` at which exactly 50 notifications are due.
    """
    calendar_ids = []
    fire_times = []
    far = T0 + timedelta(days=365)
    rest = (total - TARGET_SIZE) // (CALENDARS - 1)
    for index in range(CALENDARS):
        due = index < DUE_CALENDARS
        calendar = await store.add_calendar(
            Calendar(
                url=f"https://feeds.example/{index}.ics",
                created_at=T0,
                state=SyncState(next_sync_at=T0 if due else far),
            )
        )
        size = TARGET_SIZE if index == CALENDARS - 1 else rest
        occurrences = occurrences_of(index, size)
        await store.request_sync(calendar.id, T0)
        [lease] = await store.claim_due_calendars(
            T0, limit=1, worker="load", lease_ttl=TTL
        )
        assert lease.calendar_id == calendar.id
        notes = [
            Notification(key=o.key, lead=timedelta(minutes=10), start=o.start)
            for o in occurrences[::notify_every]
        ]
        fire_times += [note.fire_at for note in notes]
        await store.apply_sync(
            lease,
            SyncWrite(
                state=SyncState(next_sync_at=T0 if due else far),
                changes=ChangeSet(added=occurrences),
                create=notes,
            ),
            T0,
        )
        calendar_ids.append(calendar.id)
    fire_times.sort()
    now = fire_times[DUE_NOTIFICATIONS - 1]
    assert fire_times[DUE_NOTIFICATIONS] > now, "ties at the cut: pick other times"
    return calendar_ids, now


class Timer:
    """Wall and process-CPU seconds of each timed call, by operation."""

    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}

    async def time(self, op: str, call: Awaitable[T]) -> T:
        # Process CPU counts the store's worker thread too.
        wall, cpu = time.perf_counter(), time.process_time()
        result = await call
        self.cpu.setdefault(op, []).append(time.process_time() - cpu)
        self.wall.setdefault(op, []).append(time.perf_counter() - wall)
        return result

    def medians(self) -> dict[str, float]:
        return {
            **{op: statistics.median(times) for op, times in self.wall.items()},
            **{f"{op}_cpu": statistics.median(t) for op, t in self.cpu.items()},
        }


async def measure(
    store: Store, calendar_ids: list[str], now: datetime, runs: int
) -> dict[str, float]:
    timer = Timer()
    for run in range(runs):
        leases = await timer.time(
            "claim_due_calendars",
            store.claim_due_calendars(
                T0, limit=DUE_CALENDARS, worker="bench", lease_ttl=TTL
            ),
        )
        assert len(leases) == min(DUE_CALENDARS, len(calendar_ids)), len(leases)
        for lease in leases:
            await store.release_lease(lease)

        claims = await timer.time(
            "claim_notifications",
            store.claim_notifications(now, limit=100, worker="bench", lease_ttl=TTL),
        )
        assert len(claims) == DUE_NOTIFICATIONS, len(claims)
        for claim in claims:
            await store.mark_failed(
                claim, now, error="bench", retry_at=claim.record.fire_at
            )

        target = calendar_ids[-1]
        await store.request_sync(target, T0)
        [lease] = await store.claim_due_calendars(
            T0, limit=1, worker="bench", lease_ttl=TTL
        )
        assert lease.calendar_id == target
        current = await store.list_occurrences(target)
        changed = tuple(
            attrs.evolve(o, summary=f"{o.summary} (edit {run})") for o in current[::100]
        )
        write = SyncWrite(
            state=SyncState(next_sync_at=lease.calendar.state.next_sync_at),
            changes=ChangeSet(updated=changed, unchanged=len(current) - len(changed)),
        )
        await timer.time("apply_1pct", store.apply_sync(lease, write, T0))
    return timer.medians()


async def bench_backend(
    name: str,
    make: Callable[[], Store],
    sizes: list[int],
    runs: int,
    notify_every: int = 10,
) -> dict[int, dict[str, float]]:
    results = {}
    for size in sizes:
        store = make()
        async with store:
            started = time.perf_counter()
            calendar_ids, now = await load(store, size, notify_every)
            loaded = time.perf_counter() - started
            print(
                f"  {name}: loaded {size:,} occurrences in {loaded:.1f} s", flush=True
            )
            results[size] = await measure(store, calendar_ids, now, runs)
            results[size]["load_s"] = loaded / 1000  # printed in seconds
        await cleanup(name, store)
    return results


async def cleanup(name: str, store: Store) -> None:
    schema = getattr(store, "schema", None)
    if name == "postgres":
        import psycopg

        async with await psycopg.AsyncConnection.connect(
            os.environ["CALSYNC_TEST_POSTGRES_URL"], autocommit=True
        ) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    if name == "mariadb":
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        url = make_url(os.environ["CALSYNC_TEST_MARIADB_URL"])
        engine = create_engine(url.set(drivername="mysql+pymysql"))
        with engine.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{schema}`"))
        engine.dispose()


def table(results: dict[str, dict[int, dict[str, float]]]) -> None:
    """Print the backends side by side: median ms per call, and load seconds."""
    names = list(results)
    sizes = sorted({size for by_size in results.values() for size in by_size})
    print(
        "\nmedian ms per call (_cpu: process CPU ms; load_s: seconds to load), "
        "growth from smallest"
    )
    print(f"{'operation':<26}{'size':>10}" + "".join(f"{n:>12}" for n in names))
    for op in OPERATIONS:
        for size in sizes:
            cells = "".join(
                f"{results[n][size][op] * 1000:>12.2f}" if size in results[n] else ""
                for n in names
            )
            print(f"{op:<26}{size:>10,}{cells}")
        if op != "load_s" and len(sizes) > 1:
            growth = "".join(
                f"{results[n][sizes[-1]][op] / results[n][sizes[0]][op]:>11.2f}x"
                for n in names
            )
            target = " (<= 2x)" if op.startswith("claim") else ""
            print(f"{'  growth':<36}{growth}{target}")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument(
        "--postgres", default=os.environ.get("CALSYNC_TEST_POSTGRES_URL")
    )
    parser.add_argument("--mariadb", default=os.environ.get("CALSYNC_TEST_MARIADB_URL"))
    parser.add_argument("--backends", default="sqlite,postgres,mariadb")
    parser.add_argument("--json", help="also write the medians to this file")
    parser.add_argument(
        "--notify-every",
        type=int,
        default=10,
        help="one pending notification per this many occurrences (1: as many)",
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    wanted = args.backends.split(",")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(1000))

        def sqlite() -> Store:
            return SQLiteStore(Path(tmp) / f"bench-{next(counter)}.db")

        if "sqlite" in wanted:
            results["sqlite"] = await bench_backend(
                "sqlite", sqlite, sizes, args.runs, args.notify_every
            )
    if args.postgres and "postgres" in wanted:
        os.environ["CALSYNC_TEST_POSTGRES_URL"] = args.postgres

        def postgres() -> Store:
            schema = f"calsync_bench_{uuid.uuid4().hex[:8]}"
            return PostgresStore(args.postgres, schema=schema)

        results["postgres"] = await bench_backend(
            "postgres", postgres, sizes, args.runs, args.notify_every
        )
    if args.mariadb and "mariadb" in wanted and MariaDBStore is not None:
        os.environ["CALSYNC_TEST_MARIADB_URL"] = args.mariadb

        def mariadb() -> Store:
            schema = f"calsync_bench_{uuid.uuid4().hex[:8]}"
            return MariaDBStore(args.mariadb, schema=schema)

        results["mariadb"] = await bench_backend(
            "mariadb", mariadb, sizes, args.runs, args.notify_every
        )
    table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
