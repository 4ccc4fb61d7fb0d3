"""What only `SQLiteStore` promises: its file, its schema versions, its thread."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from calsync import Notification, StoreError, Window
from calsync.core import CalendarExists, ChangeSet, SchemaVersionError, StoreUnavailable
from calsync.stores import NotificationStatus, SyncState, SyncWrite, sqltables
from calsync.stores import sql as sql_module
from calsync.stores._rows import epoch_micros
from calsync.stores.dialects import SQLiteBackend
from calsync.stores.sqlite import SQLiteStore
from calsync.stores.store import SCHEMA_VERSION

from .conftest import MINUTE, T0, calendar, occurrence

TTL = timedelta(minutes=5)

TABLES = {"schema_version", "calendars", "occurrences", "notifications", "job_runs"}
INDEXES = {
    "calendars_due",
    "calendars_requested",
    "occurrences_by_calendar_start",
    "occurrences_live_by_start",
    "notifications_due",
    "notifications_failed",
    "notifications_by_status",
    "notifications_by_start",
    "notifications_by_uid",
    "job_runs_by_finish",
    "job_runs_by_job",
}


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to the file, as another program would open it."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        yield conn


def names(conn: sqlite3.Connection, kind: str) -> set[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = ? AND name NOT LIKE 'sqlite_%'",
        (kind,),
    )
    return {name for (name,) in rows}


async def make_file(path: Path) -> None:
    async with SQLiteStore(path) as store:
        await store.add_calendar(calendar())


def connection_threads_stop() -> bool:
    """Wait briefly for every store thread to end; True if none is left."""
    for thread in threading.enumerate():
        if thread.name.startswith("calsync-sqlite"):
            thread.join(timeout=5)
    return not any(
        thread.name.startswith("calsync-sqlite") for thread in threading.enumerate()
    )


def columns(conn: sqlite3.Connection, table: str) -> list[tuple[object, ...]]:
    """Name, type, NOT NULL, default and key position of each column, in order."""
    return [row[1:] for row in conn.execute(f"PRAGMA table_info({table})")]


def set_version(path: Path, version: int) -> None:
    with raw(path) as conn:
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("UPDATE schema_version SET version = ?", (version,))


# -- the file ----------------------------------------------------------------


async def test_a_new_file_gets_every_table_index_and_the_version(
    tmp_path: Path,
) -> None:
    path = tmp_path / "new.db"
    async with SQLiteStore(path) as store:
        assert await store.schema_version() == SCHEMA_VERSION
    with raw(path) as conn:
        assert names(conn, "table") >= TABLES
        assert names(conn, "index") == INDEXES
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [
            (SCHEMA_VERSION,)
        ]


async def test_the_file_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    async with SQLiteStore(path):
        pass
    with raw(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_the_connection_syncs_fully_and_enforces_foreign_keys(
    tmp_path: Path,
) -> None:
    async with SQLiteStore(tmp_path / "pragmas.db") as store:
        settings = await store._read(
            lambda conn: (
                conn.exec_driver_sql("PRAGMA synchronous").scalar(),
                conn.exec_driver_sql("PRAGMA foreign_keys").scalar(),
            )
        )
    full = 2
    assert settings == (full, 1)


async def test_instants_are_integer_microseconds_since_the_epoch(
    tmp_path: Path,
) -> None:
    path = tmp_path / "instants.db"
    async with SQLiteStore(path) as store:
        cal = await store.add_calendar(calendar())
    with raw(path) as conn:
        row = conn.execute(
            "SELECT created_at, next_sync_at, paused FROM calendars WHERE id = ?",
            (cal.id,),
        ).fetchone()
    assert row == (epoch_micros(T0), epoch_micros(T0), 0)


# -- schema versions -----------------------------------------------------------


async def test_a_newer_schema_is_refused_and_the_file_left_untouched(
    tmp_path: Path,
) -> None:
    path = tmp_path / "future.db"
    await make_file(path)
    set_version(path, SCHEMA_VERSION + 1)
    before = path.read_bytes()
    store = SQLiteStore(path)
    with pytest.raises(SchemaVersionError) as refused:
        await store.open()
    message = str(refused.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert f"version {SCHEMA_VERSION}" in message
    assert "upgrade calsync" in message
    assert path.read_bytes() == before
    with pytest.raises(StoreError, match="closed"):
        await store.schema_version()


async def test_an_older_schema_is_migrated_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    await make_file(path)
    v2 = ("CREATE TABLE added_in_v2 (note TEXT)",)
    v3 = ("INSERT INTO added_in_v2 VALUES ('v3 ran after v2')",)
    monkeypatch.setitem(sqltables.UPGRADES, SCHEMA_VERSION + 1, v2)
    monkeypatch.setitem(sqltables.UPGRADES, SCHEMA_VERSION + 2, v3)
    monkeypatch.setattr(sql_module, "SCHEMA_VERSION", SCHEMA_VERSION + 2)
    async with SQLiteStore(path) as store:
        assert await store.schema_version() == SCHEMA_VERSION + 2
        assert len(await store.list_calendars()) == 1
    with raw(path) as conn:
        assert conn.execute("SELECT note FROM added_in_v2").fetchall() == [
            ("v3 ran after v2",)
        ]


async def test_a_version_1_file_is_migrated_to_2_with_its_data(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v1.db"
    occ = occurrence("a", T0 + timedelta(hours=1))
    reminder = Notification(key=occ.key, lead=10 * MINUTE, start=occ.start)
    state = SyncState(etag='"v1"', body_hash="abc", next_sync_at=T0 + MINUTE)
    async with SQLiteStore(path) as store:
        cal = await store.add_calendar(calendar(name="Team"))
        [lease] = await store.claim_due_calendars(
            T0, limit=1, worker="w", lease_ttl=TTL
        )
        write = SyncWrite(
            state=state, changes=ChangeSet(added=(occ,)), create=(reminder,)
        )
        await store.apply_sync(lease, write, T0)
    # Take away what version 2 added: the file a calsync on schema 1 left behind.
    with raw(path) as conn:
        for index in ("by_status", "by_start", "by_uid"):
            conn.execute(f"DROP INDEX notifications_{index}")
        conn.execute("DROP INDEX job_runs_by_job")
        conn.execute("ALTER TABLE calendars DROP COLUMN parsed_at")
        conn.execute("ALTER TABLE calendars DROP COLUMN refresh_interval")
        conn.execute("ALTER TABLE calendars DROP COLUMN url_sealed")  # version 3
        conn.execute("UPDATE schema_version SET version = 1")
    async with SQLiteStore(path) as store:
        assert await store.schema_version() == SCHEMA_VERSION
        migrated = await store.get_calendar(cal.id)
        assert migrated.state == state
        assert await store.list_occurrences(cal.id) == [occ]
        [record] = await store.list_notifications()
        assert (record.status, record.notification) == (
            NotificationStatus.PENDING,
            reminder,
        )
        assert (await store.notification_counts())[NotificationStatus.PENDING] == 1
        [lease] = await store.claim_due_calendars(
            T0 + MINUTE, limit=1, worker="w", lease_ttl=TTL
        )
        parsed = SyncState(parsed_at=T0, refresh_interval=timedelta(hours=6))
        await store.apply_sync(lease, SyncWrite(state=parsed), T0 + MINUTE)
        assert (await store.get_calendar(cal.id)).state.parsed_at == T0
    fresh = tmp_path / "fresh.db"
    async with SQLiteStore(fresh):
        pass
    with raw(path) as old, raw(fresh) as new:
        assert names(old, "index") == names(new, "index") == INDEXES
        for table in TABLES:
            assert columns(old, table) == columns(new, table), table


async def test_a_failing_migration_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "broken.db"
    await make_file(path)
    broken = ("CREATE TABLE half_done (x)", "THIS IS NOT SQL")
    monkeypatch.setitem(sqltables.UPGRADES, SCHEMA_VERSION + 1, broken)
    monkeypatch.setattr(sql_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(StoreError):
        await SQLiteStore(path).open()
    with raw(path) as conn:
        assert "half_done" not in names(conn, "table")
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (
            SCHEMA_VERSION,
        )


async def test_a_file_that_is_not_a_database_is_a_store_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just some text, long enough to have a header " * 20)
    with pytest.raises(StoreError, match=r"notes\.txt"):
        await SQLiteStore(path).open()


async def test_processes_opening_a_new_file_at_once_all_succeed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "race.db"
    # Each child imports, says it is ready, and opens the store on "go".
    script = (
        "import asyncio, sys\n"
        "from calsync.stores.sqlite import SQLiteStore\n"
        "async def main():\n"
        "    print('ready', flush=True)\n"
        "    sys.stdin.readline()\n"
        "    async with SQLiteStore(sys.argv[1]) as store:\n"
        "        print(await store.schema_version())\n"
        "asyncio.run(main())\n"
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for child in children:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    outputs = [child.communicate(timeout=60) for child in children]
    assert [child.returncode for child in children] == [0] * 4, outputs
    assert [out.strip() for out, _ in outputs] == [str(SCHEMA_VERSION)] * 4
    with raw(path) as conn:
        assert conn.execute("SELECT count(*) FROM schema_version").fetchone() == (1,)


# -- lifecycle -------------------------------------------------------------------


async def test_a_store_that_is_not_open_raises_a_store_error(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "closed.db")
    with pytest.raises(StoreError, match="open"):
        await store.list_calendars()
    async with store:
        pass
    with pytest.raises(StoreError, match="closed"):
        await store.add_calendar(calendar())


async def test_close_stops_the_connection_thread(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "thread.db") as store:
        await store.list_calendars()
    assert connection_threads_stop()


async def test_a_failed_open_leaves_no_thread_behind(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"\x00not sqlite\x00" * 100)
    with pytest.raises(StoreError):
        await SQLiteStore(path).open()
    assert connection_threads_stop()


async def test_a_closed_store_opens_again_with_its_data(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "again.db")
    async with store:
        cal = await store.add_calendar(calendar())
    async with store:
        assert await store.get_calendar(cal.id) == cal


async def test_two_stores_on_one_file_see_each_others_writes(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    async with SQLiteStore(path) as first, SQLiteStore(path) as second:
        cal = await first.add_calendar(calendar())
        assert await second.get_calendar(cal.id) == cal
        [lease] = await second.claim_due_calendars(
            T0, limit=5, worker="second", lease_ttl=TTL
        )
        assert (
            await first.claim_due_calendars(T0, limit=5, worker="first", lease_ttl=TTL)
            == []
        )
        await second.apply_sync(lease, SyncWrite(state=SyncState(etag="x")), T0)
        assert (await first.get_calendar(cal.id)).state.etag == "x"


async def test_concurrent_calls_on_one_store_each_run_whole(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "gather.db") as store:
        for n in range(20):
            await store.add_calendar(calendar(f"https://feeds.example/{n}.ics"))
        batches = await asyncio.gather(
            *(
                store.claim_due_calendars(T0, limit=3, worker=f"w{n}", lease_ttl=TTL)
                for n in range(10)
            )
        )
    claimed = [lease.calendar_id for batch in batches for lease in batch]
    assert len(claimed) == len(set(claimed)) == 20


# -- failures ----------------------------------------------------------------------


async def test_a_write_waits_for_another_writer_then_gives_up(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    async with SQLiteStore(path, busy_timeout=timedelta(milliseconds=100)) as store:
        with raw(path) as other:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreUnavailable, match="busy_timeout"):
                await store.add_calendar(calendar())
            other.execute("ROLLBACK")
        cal = await store.add_calendar(calendar())
        assert await store.list_calendars() == [cal]


async def test_a_statement_failing_mid_apply_rolls_everything_back(
    tmp_path: Path,
) -> None:
    occ = occurrence("a", T0 + timedelta(hours=1))
    async with SQLiteStore(tmp_path / "rollback.db") as store:
        cal = await store.add_calendar(calendar())
        [lease] = await store.claim_due_calendars(
            T0, limit=1, worker="w", lease_ttl=TTL
        )
        # The occurrence is written first; the unbindable ETag fails afterwards.
        unbindable = SyncState(etag=object())  # type: ignore[arg-type]
        bad = SyncWrite(state=unbindable, changes=ChangeSet(added=(occ,)))
        with pytest.raises(StoreError):
            await store.apply_sync(lease, bad, T0)
        assert await store.list_occurrences(cal.id) == []
        good = SyncWrite(state=SyncState(etag="ok"), changes=ChangeSet(added=(occ,)))
        await store.apply_sync(lease, good, T0)
        assert await store.list_occurrences(cal.id) == [occ]


async def test_a_taken_url_is_not_shown_in_the_error(tmp_path: Path) -> None:
    url = "https://example.com/cal.ics?token=hunter2secret"
    async with SQLiteStore(tmp_path / "secret.db") as store:
        await store.add_calendar(calendar(url, name=None))
        with pytest.raises(CalendarExists) as refused:
            await store.add_calendar(calendar(url))
    assert "hunter2secret" not in str(refused.value)


# -- query plans -----------------------------------------------------------------


SQL = sql_module.Statements(SQLiteBackend("plans.db", timedelta(seconds=1)))
WEEK = Window(T0, T0 + timedelta(days=7))
STORE_DIALECT = SQLiteBackend("plans.db", timedelta(seconds=1)).engine().dialect


def compiled(statement: object, params: dict[str, object]) -> tuple[str, object]:
    """The SQL text the store sends for ``statement``, and its named parameters."""
    from sqlalchemy.dialects import sqlite

    dialect = sqlite.dialect(paramstyle="named")
    dialect.statement_compiler = STORE_DIALECT.statement_compiler
    done = statement.compile(  # type: ignore[attr-defined]
        dialect=dialect,
        compile_kwargs={"render_postcompile": True},
    )
    return str(done), done.construct_params(params)


@pytest.mark.parametrize(
    ("statement", "params"),
    [
        pytest.param(SQL.claim_requested, {"now": 0, "limit": 1}, id="claim-requested"),
        pytest.param(SQL.claim_periodic, {"now": 0, "limit": 1}, id="claim-periodic"),
        pytest.param(
            SQL.claim_notifications, {"now": 0, "limit": 1}, id="claim-notifications"
        ),
        pytest.param(
            SQL.occurrences_starting, {"start": 0, "end": 1}, id="occurrences-starting"
        ),
        pytest.param(
            SQL.cancel_stale,
            {"b_calendar": "c", "b_uid": "u", "b_rid": ""},
            id="cancel-stale",
        ),
        pytest.param(SQL.claim_one, {"b_id": "c"}, id="claim-one"),
        pytest.param(
            SQL.recent_runs_of_job,
            {"job": "cleanup", "limit": 1},
            id="recent-runs-of-a-job",
        ),
        pytest.param(*SQL.notification_counts(None), id="counts"),
        pytest.param(*SQL.notification_counts("c"), id="counts-calendar"),
        pytest.param(*SQL.notification_counts(None, "alice"), id="counts-owner"),
        pytest.param(*SQL.list_notifications(uid="u"), id="list-by-uid"),
        pytest.param(*SQL.list_notifications(starts=WEEK), id="list-by-start"),
        pytest.param(
            *SQL.list_notifications(calendar_id="c", uid="u", starts=WEEK),
            id="list-by-calendar-uid-start",
        ),
        pytest.param(
            *SQL.list_notifications(status=NotificationStatus.MISSED),
            id="list-by-status",
        ),
        pytest.param(
            SQL.insert_notification,
            dict.fromkeys(
                ("b_id", "b_lead", "b_fire", "b_now", "b_start", "b_calendar", "b_uid"),
                0,
            )
            | {"b_rid": "", "b_status": "pending"},
            id="insert-notification",
        ),
    ],
)
async def test_hot_statements_are_index_lookups(
    tmp_path: Path, statement: object, params: dict[str, object]
) -> None:
    path = tmp_path / "plans.db"
    async with SQLiteStore(path):
        pass
    with raw(path) as conn:
        plan = [
            row[3]
            for row in conn.execute(
                "EXPLAIN QUERY PLAN {}".format(*compiled(statement, params)[:1]),
                compiled(statement, params)[1],
            )
        ]
    assert plan
    assert not [step for step in plan if step.startswith("SCAN")], plan


async def test_claiming_notifications_reads_only_the_pending_ones(
    tmp_path: Path,
) -> None:
    # SQLite, without statistics, preferred the full status index: a claim then
    # read every pending row, and grew with the table.
    path = tmp_path / "plans.db"
    async with SQLiteStore(path):
        pass
    text, params = compiled(SQL.claim_notifications, {"now": 0, "limit": 1})
    with raw(path) as conn:
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {text}", params)]
    assert any(
        step.startswith("SEARCH notifications USING INDEX notifications_due ")
        for step in plan
    ), plan


async def test_a_stored_lead_past_todays_range_is_read_clamped_not_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # An older calsync accepted any lead; its rows must still load for everyone.
    path = tmp_path / "calsync.db"
    async with SQLiteStore(path) as store:
        kept = await store.add_calendar(calendar("https://example.com/a.ics"))
        odd = await store.add_calendar(calendar("https://example.com/b.ics"))
    with closing(sqlite3.connect(path)) as connection:
        huge = int(timedelta(days=3_650_000).total_seconds() * 1_000_000)
        connection.execute(
            "UPDATE calendars SET leads = ? WHERE id = ?", (f"[{huge}]", odd.id)
        )
        connection.commit()
    async with SQLiteStore(path) as store:
        listed = {c.id: c for c in await store.list_calendars()}
    assert set(listed) == {kept.id, odd.id}
    assert listed[odd.id].leads == (timedelta(days=366),)
    assert f"calendar {odd.id}: its stored lead 3650000d" in caplog.text


# -- files an older calsync wrote (tests/store/fixtures, make_legacy_sqlite.py) --

FIXTURES = Path(__file__).with_name("fixtures")


def layout(path: Path) -> tuple[dict[str, list[tuple[object, ...]]], set[str]]:
    """Each table's columns (name, type, key position) and the indexes."""
    with raw(path) as conn:
        tables = {
            table: [(n, t, pk) for n, t, _null, _default, pk in columns(conn, table)]
            for table in TABLES
        }
        return tables, names(conn, "index")


@pytest.mark.parametrize("version", [2, 3])
async def test_a_file_of_an_older_calsync_upgrades_in_place(
    tmp_path: Path, version: int
) -> None:
    path = tmp_path / "legacy.db"
    path.write_bytes((FIXTURES / f"schema{version}.db").read_bytes())
    async with SQLiteStore(path) as store:
        assert await store.schema_version() == SCHEMA_VERSION
        team = await store.get_calendar("team")
        assert (team.name, team.url) == (
            "Team",
            "https://feeds.example/team.ics?token=legacy-S3CRET",
        )
        assert team.state.etag == '"v1"'
        assert team.state.parsed_at == T0
        assert [o.key.uid for o in await store.list_occurrences("team")] == [
            "standup",
            "review",
            "gone",
        ]
        counts = await store.notification_counts()
        assert counts[NotificationStatus.DELIVERED] == 1
        assert counts[NotificationStatus.PENDING] == 2
        [run] = await store.recent_job_runs()
        assert (run.job, dict(run.counts)) == ("sync_due", {"synced": 1})
        # It keeps working: a claim, a write, a new calendar.
        [lease] = await store.claim_due_calendars(
            T0 + timedelta(hours=1), limit=1, worker="w", lease_ttl=TTL
        )
        await store.apply_sync(lease, SyncWrite(state=SyncState(etag="new")), T0)
        await store.add_calendar(calendar("https://feeds.example/new.ics"))
        assert len(await store.list_calendars()) == 3
    fresh = tmp_path / "fresh.db"
    async with SQLiteStore(fresh):
        pass
    assert layout(path) == layout(fresh)
