"""Helpers for testing an application that embeds calsync.

`MemoryStore` keeps everything in memory, so a test needs no database;
`disposable_postgres` gives a test an empty PostgreSQL store and drops it after;
`ManualClock` is a clock the test moves by hand, for the Engine and the Runner;
`FeedServer` is a real HTTP server on 127.0.0.1 that serves the feeds a test
sets and injects faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime, timedelta

from calsync.core.errors import ValidationError
from calsync.core.model import as_aware_utc
from calsync.stores.memory import MemoryStore
from calsync.stores.postgres import PostgresStore
from calsync.testing.feedserver import FeedRequest, FeedServer

__all__ = [
    "FeedRequest",
    "FeedServer",
    "ManualClock",
    "MemoryStore",
    "disposable_postgres",
]


@contextlib.asynccontextmanager
async def disposable_postgres(
    url: str, *, prefix: str = "calsync_test", max_size: int = 4
) -> AsyncIterator[PostgresStore]:
    """Yield an unopened `PostgresStore` on a new schema, dropped with its data after.

    The schema is ``prefix`` and a random suffix, so tests (and test runs) sharing
    one database never see each other's rows. Needs the ``postgres`` extra.
    """
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    store = PostgresStore(url, schema=schema, max_size=max_size)
    try:
        yield store
    finally:
        await store.close()
        await _drop_postgres_schema(url, schema)


async def _drop_postgres_schema(url: str, schema: str) -> None:
    """Drop ``schema`` with everything in it, on a connection of its own."""
    import psycopg
    from psycopg import sql

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        statement = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE")
        await conn.execute(statement.format(sql.Identifier(schema)))


class ManualClock:
    """A clock that stands still until the test moves it; pass it as ``clock=``.

    Calling it returns the current instant, aware and in UTC. It refuses naive
    datetimes (`ValidationError`), whose instant is unknown. Its `sleep` and
    `monotonic` put a `Runner` on the same virtual time:
    ``Runner(engine, handler, sleep=clock.sleep, monotonic=clock.monotonic)``.
    """

    def __init__(self, start: datetime) -> None:
        self._now = as_aware_utc(start)
        self._sleepers: list[tuple[datetime, asyncio.Future[None]]] = []

    def __call__(self) -> datetime:
        """Return the instant the clock shows."""
        return self._now

    def __repr__(self) -> str:
        return f"ManualClock({self._now.isoformat()})"

    @property
    def now(self) -> datetime:
        """The instant the clock shows."""
        return self._now

    def advance(self, by: timedelta) -> datetime:
        """Move the clock forward by *by* (>= 0) and return the new instant."""
        if not isinstance(by, timedelta) or by < timedelta(0):
            raise ValidationError(
                f"advance takes a timedelta >= 0, got {by!r}; use set() to go back"
            )
        self._now += by
        self._wake_sleepers()
        return self._now

    def set(self, instant: datetime) -> datetime:
        """Put the clock at *instant* (forward or back) and return it in UTC."""
        self._now = as_aware_utc(instant)
        self._wake_sleepers()
        return self._now

    def monotonic(self) -> float:
        """Return the clock's instant in POSIX seconds: `time.monotonic`'s stand-in."""
        return self._now.timestamp()

    def sleep(self, seconds: float) -> Awaitable[None]:
        """Return once the clock moved ``seconds`` on: `asyncio.sleep`'s stand-in.

        The sleep ends ``seconds`` after the instant the clock showed at the call.
        Real time does not count: only `advance` and `set` move a sleeper on. A
        sleep of zero or less returns at once (after yielding to the event loop).
        """
        return self._sleep_until(self._now + timedelta(seconds=max(seconds, 0.0)))

    async def _sleep_until(self, until: datetime) -> None:
        if until <= self._now:
            await asyncio.sleep(0)
            return
        sleeper = (until, asyncio.get_running_loop().create_future())
        self._sleepers.append(sleeper)
        try:
            await sleeper[1]
        finally:
            self._sleepers.remove(sleeper)

    @property
    def sleepers(self) -> tuple[datetime, ...]:
        """When each pending `sleep` ends, earliest first."""
        return tuple(sorted(until for until, _ in self._sleepers))

    def _wake_sleepers(self) -> None:
        for until, future in self._sleepers:
            if until <= self._now and not future.done():
                # Through the future's loop, so a clock moved from a thread is safe.
                with contextlib.suppress(RuntimeError):  # that loop is closed
                    future.get_loop().call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
