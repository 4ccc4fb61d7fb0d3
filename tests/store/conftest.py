"""The `store` fixture: every contract test runs on every Store implementation."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from calsync import Calendar, MemoryStore, Occurrence, Store
from calsync.core import OccurrenceKey

POSTGRES_URL = os.environ.get("CALSYNC_TEST_POSTGRES_URL")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)

needs_postgres = pytest.mark.skipif(
    POSTGRES_URL is None,
    reason="CALSYNC_TEST_POSTGRES_URL is not set: no PostgreSQL to test against",
)

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=needs_postgres),
]

StoreFactory = Callable[[], Store]


def fresh_schema() -> str:
    """A schema name no other test (or test run) uses."""
    return f"calsync_test_{uuid.uuid4().hex[:12]}"


async def drop_schema(schema: str) -> None:
    import psycopg

    assert POSTGRES_URL is not None
    async with await psycopg.AsyncConnection.connect(
        POSTGRES_URL, autocommit=True
    ) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=BACKENDS)
async def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreFactory]:
    """Make (unopened) stores that share one backing database per test."""
    backend = request.param
    if backend == "memory":
        shared = MemoryStore()
        yield lambda: shared
        return
    if backend == "sqlite":
        from calsync import SQLiteStore

        path = tmp_path / "calsync.db"
        yield lambda: SQLiteStore(path)
        return
    from calsync import PostgresStore

    schema = fresh_schema()
    assert POSTGRES_URL is not None
    try:
        yield lambda: PostgresStore(POSTGRES_URL, schema=schema)
    finally:
        await drop_schema(schema)


@pytest.fixture
async def store(store_factory: StoreFactory) -> AsyncIterator[Store]:
    async with store_factory() as opened:
        yield opened


def calendar(
    url: str = "https://example.com/team.ics",
    *,
    created_at: datetime = T0,
    **settings: object,
) -> Calendar:
    return Calendar(url=url, created_at=created_at, **settings)  # type: ignore[arg-type]


def occurrence(
    uid: str,
    start: datetime,
    *,
    recurrence_id: str = "",
    minutes: int = 30,
    summary: str = "Stand-up",
) -> Occurrence:
    return Occurrence(
        key=OccurrenceKey(uid, recurrence_id),
        start=start,
        end=start + timedelta(minutes=minutes),
        summary=summary,
    )
