"""PostgresStore beyond the contract: schemas, migrations, secrets, plans, races."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, timedelta
from typing import Any

import attrs
import pytest

from calsync import Notification, StoreError, ValidationError, Window
from calsync.core import ChangeSet, SchemaVersionError
from calsync.stores import NotificationStatus, SyncState, SyncWrite
from calsync.stores.store import SCHEMA_VERSION

from .conftest import (
    MINUTE,
    POSTGRES_URL,
    T0,
    calendar,
    drop_schema,
    fresh_schema,
    occurrence,
)

psycopg = pytest.importorskip("psycopg")
postgres = pytest.importorskip("calsync.stores.postgres")
PostgresStore = postgres.PostgresStore
sql_module = pytest.importorskip("calsync.stores.sql")
sqltables = pytest.importorskip("calsync.stores.sqltables")

TTL = timedelta(minutes=5)
TABLES = {"schema_version", "calendars", "occurrences", "notifications", "job_runs"}


@pytest.fixture
def url() -> str:
    if POSTGRES_URL is None:
        pytest.skip("CALSYNC_TEST_POSTGRES_URL is unset: no PostgreSQL to test against")
    return POSTGRES_URL


@pytest.fixture
async def schema(url: str) -> AsyncIterator[str]:
    name = fresh_schema()
    try:
        yield name
    finally:
        await drop_schema(name)


@pytest.fixture
async def store(url: str, schema: str) -> AsyncIterator[Any]:
    async with PostgresStore(url, schema=schema) as opened:
        yield opened


def quote_ident(name: str) -> str:
    """``name`` as a quoted PostgreSQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def compiled(statement: Any, schema: str, params: Any) -> tuple[str, Any]:
    """The SQL text the store sends for ``statement`` on ``schema``, its parameters."""
    from sqlalchemy.dialects.postgresql import psycopg as dialect

    done = statement.compile(
        dialect=dialect.dialect(),
        schema_translate_map={None: schema},
        render_schema_translate=True,
        compile_kwargs={"render_postcompile": True},
    )
    return str(done), done.construct_params(params)


def statements() -> Any:
    """The store's statements, built for PostgreSQL."""
    from calsync.stores.dialects import PostgresBackend

    return sql_module.Statements(PostgresBackend("postgresql://x@h/d", "x", 1, 1))


async def sql(url: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement on a connection of its own; return its rows, if any."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(statement, params)
        return await cursor.fetchall() if cursor.description else []


async def synced(store: Any, *occurrences: Any, url: str = "https://a/1.ics") -> Any:
    """Add a calendar and apply the given occurrences to it under a lease."""
    cal = await store.add_calendar(calendar(url))
    await store.request_sync(cal.id, T0)
    [lease] = await store.claim_due_calendars(T0, limit=1, worker="w", lease_ttl=TTL)
    assert lease.calendar_id == cal.id
    write = SyncWrite(
        state=SyncState(next_sync_at=T0 + timedelta(days=1)),
        changes=ChangeSet(added=occurrences),
    )
    await store.apply_sync(lease, write, T0)
    return cal


# -- schemas and migrations ------------------------------------------------


async def test_tables_live_in_the_configured_schema_only(
    store: Any, url: str, schema: str
) -> None:
    rows = await sql(
        url,
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_name = ANY(%s)",
        (sorted(TABLES),),
    )
    assert {name for where, name in rows if where == schema} == TABLES
    assert not [name for where, name in rows if where == "public"]


async def test_stores_on_two_schemas_do_not_see_each_other(
    store: Any, url: str
) -> None:
    other_schema = fresh_schema()
    try:
        async with PostgresStore(url, schema=other_schema) as other:
            cal = await other.add_calendar(calendar())
            assert await store.list_calendars() == []
            same_url = await store.add_calendar(calendar())
            assert [c.id for c in await other.list_calendars()] == [cal.id]
            assert same_url.id != cal.id
    finally:
        await drop_schema(other_schema)


async def test_schema_name_is_quoted_never_spliced_into_sql(url: str) -> None:
    hostile = f'{fresh_schema()} "; DROP TABLE x; --'
    try:
        async with PostgresStore(url, schema=hostile) as store:
            cal = await store.add_calendar(calendar())
            assert (await store.get_calendar(cal.id)).id == cal.id
        [(count,)] = await sql(
            url,
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s",
            (hostile,),
        )
        assert count == len(TABLES)
    finally:
        await sql(url, f"DROP SCHEMA IF EXISTS {quote_ident(hostile)} CASCADE")


async def test_new_schema_records_the_current_version_once(
    url: str, schema: str
) -> None:
    for _ in range(3):
        async with PostgresStore(url, schema=schema) as store:
            assert await store.schema_version() == SCHEMA_VERSION
    rows = await sql(url, f'SELECT version FROM "{schema}".schema_version')
    assert rows == [(SCHEMA_VERSION,)]


async def test_newer_schema_is_refused_without_touching_data(
    store: Any, url: str, schema: str
) -> None:
    cal = await store.add_calendar(calendar())
    await store.close()
    newer = SCHEMA_VERSION + 1
    await sql(url, f'UPDATE "{schema}".schema_version SET version = %s', (newer,))
    with pytest.raises(SchemaVersionError) as refused:
        await PostgresStore(url, schema=schema).open()
    message = str(refused.value)
    assert str(newer) in message
    assert str(SCHEMA_VERSION) in message
    assert "upgrade calsync" in message
    assert await sql(url, f'SELECT version FROM "{schema}".schema_version') == [
        (newer,)
    ]
    assert await sql(url, f'SELECT id FROM "{schema}".calendars') == [(cal.id,)]


async def test_an_older_schema_is_migrated_in_order(
    url: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with PostgresStore(url, schema=schema):
        pass
    from sqlalchemy import Column, MetaData, Table, Text

    following = SCHEMA_VERSION + 1
    colour = Table("calendars", MetaData(), Column("colour", Text)).c.colour
    step = (sqltables.AddColumn(colour),)
    monkeypatch.setitem(sqltables.UPGRADES, following, step)
    monkeypatch.setattr(sql_module, "SCHEMA_VERSION", following)
    async with PostgresStore(url, schema=schema) as store:
        assert await store.schema_version() == following
    rows = await sql(
        url,
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = 'calendars'",
        (schema,),
    )
    assert ("colour",) in rows


async def layout(url: str, schema: str) -> tuple[list[Any], list[Any]]:
    """The columns (name, type, nullable, default) and index definitions of a schema."""
    found = await sql(
        url,
        "SELECT table_name, column_name, data_type, is_nullable, column_default "
        "FROM information_schema.columns WHERE table_schema = %s "
        "ORDER BY table_name, column_name",
        (schema,),
    )
    indexes = await sql(
        url,
        "SELECT tablename, indexname, replace(indexdef, %s, '') FROM pg_indexes "
        "WHERE schemaname = %s ORDER BY indexname",
        (f"{schema}.", schema),
    )
    return found, indexes


async def test_a_version_1_schema_is_migrated_to_2_with_its_data(
    url: str, schema: str
) -> None:
    occ = occurrence("a", T0 + timedelta(hours=1))
    reminder = Notification(key=occ.key, lead=10 * MINUTE, start=occ.start)
    async with PostgresStore(url, schema=schema) as store:
        cal = await synced(store, occ)
        assert await store.add_notifications(cal.id, [reminder], T0) == 1
        before = await store.get_calendar(cal.id)
    # Take away what version 2 added: the schema a calsync on version 1 left.
    quoted = quote_ident(schema)
    for index in ("by_status", "by_start", "by_uid"):
        await sql(url, f"DROP INDEX {quoted}.notifications_{index}")
    await sql(url, f"DROP INDEX {quoted}.job_runs_by_job")
    await sql(
        url,
        f"ALTER TABLE {quoted}.calendars DROP COLUMN parsed_at, "
        "DROP COLUMN refresh_interval, DROP COLUMN url_sealed",  # and version 3
    )
    await sql(url, f"UPDATE {quoted}.schema_version SET version = 1")
    async with PostgresStore(url, schema=schema) as store:
        assert await store.schema_version() == SCHEMA_VERSION
        assert await store.get_calendar(cal.id) == before
        assert await store.list_occurrences(cal.id) == [occ]
        [record] = await store.list_notifications(uid="a")
        assert record.notification == reminder
        counts = await store.notification_counts(calendar_id=cal.id)
        assert counts[NotificationStatus.PENDING] == 1
        await store.request_sync(cal.id, T0)
        [lease] = await store.claim_due_calendars(
            T0, limit=1, worker="w", lease_ttl=TTL
        )
        parsed = SyncState(
            parsed_at=T0, refresh_interval=timedelta(hours=6), next_sync_at=T0
        )
        await store.apply_sync(lease, SyncWrite(state=parsed), T0)
        assert (await store.get_calendar(cal.id)).state == parsed
    fresh = fresh_schema()
    try:
        async with PostgresStore(url, schema=fresh):
            pass
        migrated_columns, migrated_indexes = await layout(url, schema)
        fresh_columns, fresh_indexes = await layout(url, fresh)
    finally:
        await drop_schema(fresh)
    assert migrated_columns == fresh_columns
    assert migrated_indexes == fresh_indexes


@pytest.mark.parametrize("version", [2, 3])
async def test_a_schema_of_an_older_calsync_upgrades_in_place(
    url: str, schema: str, version: int
) -> None:
    from . import legacy_postgres

    name = quote_ident(schema)
    await sql(url, f"CREATE SCHEMA {name}")
    for step, statements in legacy_postgres.MIGRATIONS:
        for statement in statements if step <= version else ():
            await sql(url, statement.replace("{s}", name))
    await sql(url, f"INSERT INTO {name}.schema_version VALUES (%s)", (version,))
    await sql(
        url,
        f"""
        INSERT INTO {name}.calendars (id, owner, url, schedule, leads, window_past,
            horizon, use_alarms, paused, created_at, next_sync_at, circuit, etag)
        VALUES ('old', 'default', 'https://feeds.example/old.ics', 'every 15m',
            '[600000000]', 86400000000, 7776000000000, false, false, %(t0)s,
            %(t0)s, 'closed', '"v1"')
        """,
        {"t0": T0},
    )
    occ = occurrence("a", T0 + timedelta(hours=1))
    async with PostgresStore(url, schema=schema) as store:
        assert await store.schema_version() == SCHEMA_VERSION
        old = await store.get_calendar("old")
        assert (old.url, old.state.etag, old.leads) == (
            "https://feeds.example/old.ics",
            '"v1"',
            (10 * MINUTE,),
        )
        [lease] = await store.claim_due_calendars(
            T0, limit=1, worker="w", lease_ttl=TTL
        )
        reminder = Notification(key=occ.key, lead=10 * MINUTE, start=occ.start)
        write = SyncWrite(
            state=SyncState(etag='"v2"'),
            changes=ChangeSet(added=(occ,)),
            create=(reminder,),
        )
        assert (await store.apply_sync(lease, write, T0)).created == 1
        assert await store.list_occurrences("old") == [occ]
    fresh = fresh_schema()
    try:
        async with PostgresStore(url, schema=fresh):
            pass
        assert await layout(url, schema) == await layout(url, fresh)
    finally:
        await drop_schema(fresh)


async def test_concurrent_open_from_many_tasks_is_safe(url: str, schema: str) -> None:
    stores = [PostgresStore(url, schema=schema, max_size=1) for _ in range(6)]
    try:
        await asyncio.gather(*(store.open() for store in stores))
        versions = await asyncio.gather(*(s.schema_version() for s in stores))
        assert versions == [SCHEMA_VERSION] * 6
    finally:
        await asyncio.gather(*(store.close() for store in stores))
    rows = await sql(url, f'SELECT version FROM "{schema}".schema_version')
    assert rows == [(SCHEMA_VERSION,)]


OPEN_IN_A_CHILD = """
import asyncio, sys
from calsync.stores.postgres import PostgresStore

async def main():
    async with PostgresStore(sys.argv[1], schema=sys.argv[2]) as store:
        print(await store.schema_version())

asyncio.run(main())
"""


async def test_concurrent_open_from_many_processes_is_safe(
    url: str, schema: str
) -> None:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_IN_A_CHILD, url, schema],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [
        await asyncio.to_thread(child.communicate, None, 60) for child in children
    ]
    for child, (_out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err
    assert [out.strip() for out, _ in outputs] == [str(SCHEMA_VERSION)] * 4
    rows = await sql(url, f'SELECT version FROM "{schema}".schema_version')
    assert rows == [(SCHEMA_VERSION,)]


# -- lifecycle, configuration and secrets ----------------------------------


def test_repr_shows_the_server_but_never_the_password() -> None:
    uri = PostgresStore("postgresql://app:s3cr3t@db.internal:6543/cal", schema="cs")
    assert "s3cr3t" not in repr(uri)
    assert "db.internal:6543/cal" in repr(uri)
    assert "cs" in repr(uri)
    dsn = PostgresStore("host=db.internal user=app password=s3cr3t dbname=cal")
    assert "s3cr3t" not in repr(dsn)
    assert "db.internal" in repr(dsn)


async def test_connection_failure_names_the_server_but_not_the_password() -> None:
    store = PostgresStore(
        "postgresql://app:s3cr3t@127.0.0.1:1/cal?connect_timeout=5", schema="cs"
    )
    with pytest.raises(StoreError) as failed:
        await store.open()
    message = str(failed.value)
    assert "127.0.0.1:1" in message
    assert "s3cr3t" not in message
    assert "s3cr3t" not in "".join(traceback.format_exception(failed.value))
    with pytest.raises(StoreError, match="closed"):
        await store.list_calendars()


def test_missing_driver_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(StoreError, match=r"pip install 'psycopg\[binary\]"):
        PostgresStore("postgresql://localhost/cal")


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValidationError):
        PostgresStore("postgresql://localhost/cal", schema="")
    with pytest.raises(ValidationError):
        PostgresStore("postgresql://localhost/cal", min_size=3, max_size=2)


async def test_closed_store_refuses_calls_and_reopens(store: Any) -> None:
    cal = await store.add_calendar(calendar())
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await store.get_calendar(cal.id)
    await store.open()
    assert (await store.get_calendar(cal.id)).id == cal.id


async def test_times_come_back_in_utc_whatever_the_session_zone(
    url: str, schema: str
) -> None:
    separator = "&" if "?" in url else "?"
    tokyo = f"{url}{separator}options=-c%20TimeZone%3DAsia/Tokyo"
    occ = occurrence("a", T0 + timedelta(hours=1))
    async with PostgresStore(tokyo, schema=schema) as store:
        cal = await synced(store, occ)
        [stored] = await store.list_occurrences(cal.id)
        assert stored == occ
        assert stored.start.tzinfo is UTC
        assert (await store.get_calendar(cal.id)).created_at.tzinfo is UTC


# -- atomicity ---------------------------------------------------------------


async def test_a_value_postgres_refuses_rolls_the_whole_apply_back(
    store: Any,
) -> None:
    kept = occurrence("kept", T0 + timedelta(hours=1))
    cal = await synced(store, kept)
    await store.request_sync(cal.id, T0)
    [lease] = await store.claim_due_calendars(T0, limit=1, worker="w", lease_ttl=TTL)
    bad = attrs.evolve(
        occurrence("bad", T0 + timedelta(hours=2), summary="s3cret agenda"),
        sequence=2**70,  # beyond bigint
    )
    write = SyncWrite(
        state=SyncState(etag="after"),
        changes=ChangeSet(added=(bad,), removed=(kept,)),
    )
    with pytest.raises(StoreError) as refused:
        await store.apply_sync(lease, write, T0)
    assert "s3cret" not in str(refused.value)
    assert await store.list_occurrences(cal.id) == [kept]
    assert (await store.get_calendar(cal.id)).state.etag is None
    # The lease survived the rollback: the worker can still write a good outcome.
    await store.apply_sync(lease, SyncWrite(state=SyncState(etag="ok")), T0)
    assert (await store.get_calendar(cal.id)).state.etag == "ok"


# -- concurrency -------------------------------------------------------------


async def test_claimers_on_separate_pools_never_share_a_calendar(
    url: str, schema: str
) -> None:
    stores = [PostgresStore(url, schema=schema, max_size=2) for _ in range(4)]
    try:
        await asyncio.gather(*(store.open() for store in stores))
        for n in range(40):
            await stores[0].add_calendar(calendar(f"https://feeds.example/{n}.ics"))

        async def drain(store: Any, worker: str) -> list[str]:
            taken: list[str] = []
            while leases := await store.claim_due_calendars(
                T0, limit=3, worker=worker, lease_ttl=TTL
            ):
                taken += [lease.calendar_id for lease in leases]
            return taken

        results = await asyncio.gather(
            *(drain(store, f"w{i}") for i, store in enumerate(stores))
        )
    finally:
        await asyncio.gather(*(store.close() for store in stores))
    claims = Counter(cal_id for taken in results for cal_id in taken)
    assert len(claims) == 40
    assert set(claims.values()) == {1}


async def test_notification_racing_a_move_never_stays_pending_stale(
    url: str, schema: str
) -> None:
    """add_notifications for the old start, concurrent with the apply that moves it."""
    syncer = PostgresStore(url, schema=schema, max_size=2)
    checker = PostgresStore(url, schema=schema, max_size=2)
    async with syncer, checker:
        occ = occurrence("a", T0 + timedelta(hours=1))
        cal = await synced(syncer, occ)
        for step in range(1, 16):
            moved = attrs.evolve(
                occ, start=occ.start + step * MINUTE, end=occ.end + step * MINUTE
            )
            await syncer.request_sync(cal.id, T0)
            [lease] = await syncer.claim_due_calendars(
                T0, limit=1, worker="w", lease_ttl=TTL
            )
            write = SyncWrite(state=SyncState(), changes=ChangeSet(updated=(moved,)))
            stale = Notification(key=occ.key, lead=MINUTE, start=occ.start)
            await asyncio.gather(
                syncer.apply_sync(lease, write, T0),
                checker.add_notifications(cal.id, [stale], T0),
            )
            [stored] = await syncer.list_occurrences(cal.id)
            pending = await syncer.list_notifications(
                calendar_id=cal.id, status=NotificationStatus.PENDING
            )
            assert all(r.notification.start == stored.start for r in pending)
            occ = moved


# -- query plans ---------------------------------------------------------------


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from plan_nodes(child)


async def explain(url: str, statement: str, params: Any) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cursor = await conn.execute("EXPLAIN (FORMAT JSON) " + statement, params)
        row = await cursor.fetchone()
        await conn.rollback()
    assert row is not None
    document = row[0] if not isinstance(row[0], str) else json.loads(row[0])
    return list(plan_nodes(document[0]["Plan"]))


@pytest.fixture
async def crowded(store: Any, url: str, schema: str) -> Any:
    """5,000 calendars (5 requested, 5 due), 50,000 occurrences and notifications."""
    quoted = quote_ident(schema)
    await sql(
        url,
        f"""
        INSERT INTO {quoted}.calendars (id, owner, url, schedule, leads,
            window_past, horizon, use_alarms, paused, created_at, next_sync_at,
            circuit, sync_requested_at)
        SELECT 'c' || g, 'default', 'https://feeds.example/' || g || '.ics',
            'every 15m', '[600000000]', 86400000000, 7776000000000, false, false,
            %(t0)s, %(t0)s + (g - 5) * interval '1 minute', 'closed',
            CASE WHEN g %% 1000 = 0 THEN %(t0)s END
        FROM generate_series(1, 5000) AS g
        """,
        {"t0": T0},
    )
    await sql(
        url,
        f"""
        INSERT INTO {quoted}.occurrences (calendar_id, uid, recurrence_id, start_at,
            end_at, all_day, summary, location, description, status, sequence,
            alarms, content_hash)
        SELECT 'c' || (g %% 5000 + 1), 'e' || g, '', %(t0)s + g * interval '1 minute',
            %(t0)s + g * interval '1 minute', false, 'Event', '', '', '', 0, '[]', ''
        FROM generate_series(1, 50000) AS g
        """,
        {"t0": T0},
    )
    await sql(
        url,
        f"""
        INSERT INTO {quoted}.notifications (id, calendar_id, uid, recurrence_id, lead,
            start_at, fire_at, status, created_at, due_at)
        SELECT 'n' || g, 'c' || (g %% 5000 + 1), 'e' || g, '', 600000000,
            %(t0)s + g * interval '1 minute', %(t0)s + (g - 10) * interval '1 minute',
            'pending', %(t0)s, %(t0)s + (g - 10) * interval '1 minute'
        FROM generate_series(1, 50000) AS g
        """,
        {"t0": T0},
    )
    await sql(
        url,
        f"""
        INSERT INTO {quoted}.job_runs (job, started_at, finished_at, outcome, counts)
        SELECT CASE WHEN g %% 1000 = 0 THEN 'cleanup' ELSE 'dispatch_notifications'
            END, %(t0)s + g * interval '10 seconds',
            %(t0)s + g * interval '10 seconds', 'ok', '{{}}'
        FROM generate_series(1, 50000) AS g
        """,
        {"t0": T0},
    )
    await sql(url, f"ANALYZE {quoted}.job_runs")
    await sql(url, f"ANALYZE {quoted}.calendars")
    await sql(url, f"ANALYZE {quoted}.occurrences")
    await sql(url, f"ANALYZE {quoted}.notifications")
    return store


SQL = statements()
CLAIM_PARAMS = {
    "now": T0,
    "limit": 10,
    "worker": "w",
    "expires": T0 + TTL,
    "due_at": T0 + TTL,
}
HOT_QUERIES = {
    "claim-requested": ({"calendars_requested"}, SQL.claim_requested, CLAIM_PARAMS),
    "claim-periodic": ({"calendars_due"}, SQL.claim_periodic, CLAIM_PARAMS),
    "claim-notifications": (
        {"notifications_due"},
        SQL.claim_notifications,
        CLAIM_PARAMS,
    ),
    "occurrences-starting": (
        {"occurrences_live_by_start"},
        SQL.occurrences_starting,
        {"start": T0, "end": T0 + TTL},
    ),
    "list-occurrences": (
        {"occurrences_by_calendar_start", "occurrences_pkey"},
        SQL.list_occurrences(expired=False, window=False),
        {"b_calendar": "c7"},
    ),
}


async def test_hot_queries_are_index_lookups(
    crowded: Any, url: str, schema: str
) -> None:
    problems = {}
    for name, (indexes, statement, params) in HOT_QUERIES.items():
        nodes = await explain(url, *compiled(statement, schema, params))
        used = {node.get("Index Name") for node in nodes}
        scanned = {
            node.get("Relation Name")
            for node in nodes
            if node["Node Type"] == "Seq Scan"
        }
        if not used & indexes or scanned & {
            "calendars",
            "occurrences",
            "notifications",
        }:
            problems[name] = (sorted(map(str, used)), sorted(map(str, scanned)))
    assert problems == {}, "(indexes used, tables scanned) per query"


DAY = Window(T0, T0 + timedelta(days=1))
SCHEMA_2_QUERIES = {
    "claim-one": (
        {"calendars_pkey"},
        (SQL.claim_one, {"b_id": "c7"}),
    ),
    "counts-of-a-calendar": (
        {"notifications_by_status"},
        SQL.notification_counts("c7"),
    ),
    "counts-of-an-owner": (
        {"notifications_by_status"},
        SQL.notification_counts(None, "alice"),
    ),
    "list-by-uid": (
        {"notifications_by_uid"},
        SQL.list_notifications(uid="e77"),
    ),
    "list-by-start": (
        {"notifications_by_start"},
        SQL.list_notifications(starts=DAY),
    ),
    "list-by-calendar-and-start": (
        {
            "notifications_by_start",
            "notifications_calendar_id_uid_recurrence_id_lead_start_at_key",
        },
        SQL.list_notifications(calendar_id="c7", starts=DAY),
    ),
    "list-missed": (
        {"notifications_by_status"},
        SQL.list_notifications(status=NotificationStatus.MISSED),
    ),
    "prune": (
        {"notifications_by_start"},
        (SQL.prune_notifications, {"before": T0}),
    ),
    "recent-runs-of-a-job": (
        {"job_runs_by_job"},
        (SQL.recent_runs_of_job, {"job": "cleanup", "limit": 100}),
    ),
}


@pytest.mark.parametrize("name", sorted(SCHEMA_2_QUERIES))
async def test_schema_2_queries_are_index_lookups(
    crowded: Any, url: str, schema: str, name: str
) -> None:
    indexes, (statement, params) = SCHEMA_2_QUERIES[name]
    nodes = await explain(url, *compiled(statement, schema, params))
    used = {node.get("Index Name") for node in nodes}
    scanned = [node for node in nodes if node["Node Type"] == "Seq Scan"]
    assert used & indexes, used
    assert scanned == []


async def test_counting_every_notification_reads_only_the_status_index(
    crowded: Any, url: str, schema: str
) -> None:
    # It reads every row either way; with the visibility map current (as
    # autovacuum keeps it), it reads the index alone, never the table.
    await sql(url, f"VACUUM (ANALYZE) {quote_ident(schema)}.notifications")
    statement, params = SQL.notification_counts(None)
    nodes = await explain(url, *compiled(statement, schema, params))
    assert [
        node.get("Index Name") for node in nodes if "Scan" in node["Node Type"]
    ] == ["notifications_by_status"]


async def test_claims_on_a_crowded_store_return_the_due_ones(crowded: Any) -> None:
    leases = await crowded.claim_due_calendars(T0, limit=20, worker="w", lease_ttl=TTL)
    requested = [f"c{n}" for n in (1000, 2000, 3000, 4000, 5000)]
    periodic = [f"c{n}" for n in (1, 2, 3, 4, 5)]
    assert [lease.calendar_id for lease in leases] == requested + periodic
    claims = await crowded.claim_notifications(T0, limit=20, worker="d", lease_ttl=TTL)
    assert [claim.id for claim in claims] == [f"n{n}" for n in range(1, 11)]
