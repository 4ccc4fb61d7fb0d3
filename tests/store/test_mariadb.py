"""What only `MariaDBStore` promises: its claim's index, its schema upgrades."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from calsync.stores import sql as sql_module
from calsync.stores.dialects import MariaDBBackend
from calsync.stores.store import SCHEMA_VERSION

from .conftest import (
    MARIADB_URL,
    T0,
    calendar,
    drop_database,
    fresh_schema,
    mariadb_sql,
    needs_mariadb,
    sql_store,
)

pytestmark = needs_mariadb


@pytest.fixture
async def database() -> AsyncIterator[str]:
    name = fresh_schema()
    try:
        yield name
    finally:
        await drop_database(name)


async def run(statement: str, params: object = None) -> list[tuple[object, ...]]:
    return await asyncio.to_thread(mariadb_sql, statement, params)


def compiled(statement: Any, database: str, params: dict[str, Any]) -> tuple[str, Any]:
    """The SQL text the store sends for ``statement`` in ``database``, its values."""
    from sqlalchemy.dialects.mysql import pymysql

    done = statement.compile(
        dialect=pymysql.dialect(),
        schema_translate_map={None: database},
        render_schema_translate=True,
        compile_kwargs={"render_postcompile": True},
    )
    values = done.construct_params(params)
    return str(done), tuple(values[name] for name in done.positiontup)


async def index_columns(database: str, name: str) -> list[tuple[object, ...]]:
    return await run(
        "SELECT column_name FROM information_schema.statistics WHERE "
        "table_schema = %s AND table_name = 'notifications' AND index_name = %s "
        "ORDER BY seq_in_index",
        (database, name),
    )


async def layout(database: str) -> list[tuple[object, ...]]:
    """The columns and index columns of every table of ``database``."""
    columns = await run(
        "SELECT table_name, column_name, column_type, is_nullable, column_default "
        "FROM information_schema.columns WHERE table_schema = %s "
        "ORDER BY table_name, column_name",
        (database,),
    )
    indexes = await run(
        "SELECT table_name, index_name, seq_in_index, column_name, non_unique "
        "FROM information_schema.statistics WHERE table_schema = %s "
        "ORDER BY table_name, index_name, seq_in_index",
        (database,),
    )
    return columns + indexes


async def test_claiming_notifications_reads_the_pending_ones_in_due_order(
    database: str,
) -> None:
    # Led by due_at alone, the index made MariaDB read every settled row due
    # before now, or every pending row and sort them: a claim grew with the
    # outbox. 19,000 delivered, 1,000 pending of which 50 are due.
    async with sql_store("mariadb", database):
        pass
    await run(
        f"INSERT INTO `{database}`.calendars (id, owner, url, schedule, leads, "
        "window_past, horizon, use_alarms, paused, created_at, next_sync_at, "
        "circuit) VALUES ('c', 'default', 'https://feeds.example/c.ics', "
        "'every 15m', '[]', 0, 1, 0, 0, 0, 0, 'closed')"
    )
    await run(
        "SET STATEMENT max_recursive_iterations = 100000 FOR "
        f"INSERT INTO `{database}`.notifications (id, calendar_id, uid, "
        "recurrence_id, lead, start_at, fire_at, status, created_at, due_at) "
        "WITH RECURSIVE seq(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM seq "
        "WHERE g < 20000) SELECT CONCAT('n', g), 'c', CONCAT('e', g), '', 0, g, "
        "g, IF(g <= 19000, 'delivered', 'pending'), 0, g FROM seq"
    )
    await run(f"ANALYZE TABLE `{database}`.notifications")
    assert MARIADB_URL is not None
    statements = sql_module.Statements(MariaDBBackend(MARIADB_URL, database, 1, 1))
    text, values = compiled(
        statements.claim_notifications,
        database,
        {"now": 19050, "limit": 10, "worker": "w", "due_at": 0},
    )
    plan = await run(f"EXPLAIN {text}", values)
    [notifications] = [row for row in plan if row[2] == "notifications"]
    # The key used, the rows it expects to read (50 are due), no sort.
    assert notifications[5] == "notifications_due", plan
    assert int(str(notifications[8])) < 1000, plan
    assert "filesort" not in str(notifications[9]), plan


async def test_a_schema_3_database_takes_the_claim_index_in_place(
    database: str,
) -> None:
    async with sql_store("mariadb", database) as store:
        cal = await store.add_calendar(calendar())
    # Schema 3's index, led by due_at alone.
    await run(f"DROP INDEX notifications_due ON `{database}`.notifications")
    await run(f"CREATE INDEX notifications_due ON `{database}`.notifications (due_at)")
    await run(f"UPDATE `{database}`.schema_version SET version = 3")
    assert await index_columns(database, "notifications_due") == [("due_at",)]
    async with sql_store("mariadb", database) as store:
        assert await store.schema_version() == SCHEMA_VERSION
        assert await store.get_calendar(cal.id) == cal
        claims = await store.claim_notifications(
            T0, limit=1, worker="w", lease_ttl=timedelta(minutes=5)
        )
        assert claims == []
    assert await index_columns(database, "notifications_due") == [
        ("status",),
        ("due_at",),
    ]
    fresh = fresh_schema()
    try:
        async with sql_store("mariadb", fresh):
            pass
        assert await layout(database) == await layout(fresh)
    finally:
        await drop_database(fresh)
