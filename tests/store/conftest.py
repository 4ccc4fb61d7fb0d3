"""The `store` fixture: every contract test runs on every Store implementation."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from calsync import Calendar, MemoryStore, Occurrence, Store
from calsync.core import OccurrenceKey

POSTGRES_URL = os.environ.get("CALSYNC_TEST_POSTGRES_URL")
MARIADB_URL = os.environ.get("CALSYNC_TEST_MARIADB_URL")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)

needs_postgres = pytest.mark.skipif(
    POSTGRES_URL is None,
    reason="CALSYNC_TEST_POSTGRES_URL is not set: no PostgreSQL to test against",
)

needs_mariadb = pytest.mark.skipif(
    MARIADB_URL is None,
    reason="CALSYNC_TEST_MARIADB_URL is not set: no MariaDB to test against",
)

SQL_BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=needs_postgres),
    pytest.param("mariadb", id="mariadb", marks=needs_mariadb),
]
"""The SQL stores, each a backend of the one `SQLStore`."""

BACKENDS = [pytest.param("memory", id="memory"), *SQL_BACKENDS]

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


def mariadb_sql(statement: str, params: object = None) -> list[tuple[object, ...]]:
    """Run one statement on a MariaDB connection of its own; return its rows."""
    import pymysql
    from sqlalchemy.engine import make_url

    assert MARIADB_URL is not None
    url = make_url(MARIADB_URL)
    conn = pymysql.connect(
        host=url.host,
        port=url.port or 3306,
        user=url.username,
        password=url.password or "",
        database=url.database,
        autocommit=True,
    )
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement, params)
            return list(cursor.fetchall())
    finally:
        conn.close()


async def drop_database(name: str) -> None:
    await asyncio.to_thread(mariadb_sql, f"DROP DATABASE IF EXISTS `{name}`")


def sql_store(kind: str, target: str, **options: object) -> Store:
    """An unopened SQL store of ``kind`` on ``target`` (file path or schema)."""
    from calsync.stores import MariaDBStore, PostgresStore, SQLiteStore

    if kind == "sqlite":
        return SQLiteStore(target, **options)  # type: ignore[arg-type]
    if kind == "postgres":
        assert POSTGRES_URL is not None
        return PostgresStore(POSTGRES_URL, schema=target, **options)  # type: ignore[arg-type]
    assert MARIADB_URL is not None
    return MariaDBStore(MARIADB_URL, schema=target, **options)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def sql_target(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh database of ``kind`` for a test: a file path or a schema name."""
    if kind == "sqlite":
        yield str(tmp_path / "calsync.db")
        return
    schema = fresh_schema()
    try:
        yield schema
    finally:
        await (drop_schema if kind == "postgres" else drop_database)(schema)


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
    async with sql_target(backend, tmp_path) as target:
        yield lambda: sql_store(backend, target)


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
