"""Feed secrets at rest: what a copy of the database alone reveals, per SQL store."""

from __future__ import annotations

import asyncio
import logging
import shutil
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from calsync import BasicAuth, BearerAuth, Calendar, Store, StoreError, ValidationError
from calsync.config import load_config, open_store
from calsync.core import CalendarExists
from calsync.stores import sqlite as sqlite_module
from calsync.stores.store import SCHEMA_VERSION

from . import legacy_postgres
from .conftest import (
    POSTGRES_URL,
    SQL_BACKENDS,
    T0,
    calendar,
    mariadb_sql,
    needs_postgres,
    sql_store,
    sql_target,
)

FIXTURES = Path(__file__).with_name("fixtures")

TOKEN = "t0ken-S3CRET-in-the-query"
BEARER = "b3arer-S3CRET-header"
PASSWORD = "pa55-S3CRET-word"
USERINFO = "hunter2-S3CRET"
SECRETS = (TOKEN, BEARER, PASSWORD, USERINFO)
TOKEN_URL = f"https://feeds.example/team.ics?token={TOKEN}"
USERINFO_URL = f"https://bob:{USERINFO}@feeds.example/bob.ics"
PLAIN_URL = "https://feeds.example/public.ics"
OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()

SecretStore = Callable[[Sequence[str]], Store]


@pytest.fixture(params=SQL_BACKENDS)
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[str, str]]:
    """(backend, target): a fresh SQLite file, PostgreSQL schema or MariaDB database."""
    async with sql_target(request.param, tmp_path) as target:
        yield (request.param, target)


@pytest.fixture
def make_store(backend: tuple[str, str]) -> SecretStore:
    kind, target = backend

    def make(keys: Sequence[str]) -> Store:
        return sql_store(kind, target, secret_keys=keys)

    return make


async def raw_text(backend: tuple[str, str]) -> str:
    """Everything the database holds, as a copy of it would show: bytes or rows."""
    kind, target = backend
    if kind == "sqlite":
        files = sorted(Path(target).parent.glob(Path(target).name + "*"))
        return b"".join(path.read_bytes() for path in files).decode("latin-1")
    if kind == "mariadb":
        rows = await asyncio.to_thread(
            mariadb_sql, f"SELECT * FROM `{target}`.calendars"
        )
        return "\n".join(" ".join(map(str, row)) for row in rows)
    import psycopg

    assert POSTGRES_URL is not None
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
        cursor = await conn.execute(
            f'SELECT c::text FROM "{target}".calendars AS c'  # every column, raw
        )
        return "\n".join(row[0] for row in await cursor.fetchall())


def secret_calendars() -> list[Calendar]:
    return [
        calendar(TOKEN_URL, name="Team", auth=BearerAuth(BEARER)),
        calendar(USERINFO_URL, auth=BasicAuth("bob", PASSWORD)),
        calendar(PLAIN_URL),
    ]


async def test_with_a_key_the_database_holds_no_feed_secret(
    make_store: SecretStore, backend: tuple[str, str]
) -> None:
    async with make_store([NEW]) as store:
        added = [await store.add_calendar(cal) for cal in secret_calendars()]
        assert [await store.get_calendar(cal.id) for cal in added] == added
    raw = await raw_text(backend)
    assert [secret for secret in SECRETS if secret in raw] == []
    assert "feeds.example/team.ics?token=***" in raw  # the redacted look-up form
    assert PLAIN_URL in raw  # a URL without a secret stays as it was


async def test_without_a_key_secrets_stay_readable_and_a_warning_says_so(
    make_store: SecretStore,
    backend: tuple[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with make_store([]) as store:
        await store.add_calendar(secret_calendars()[0])
    assert TOKEN in await raw_text(backend)
    with caplog.at_level(logging.WARNING, logger="calsync"):
        async with make_store([]):
            pass
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "1 calendar(s) keep feed secrets" in warning
    assert "secret_keys" in warning
    assert TOKEN not in warning


async def test_resealing_encrypts_what_was_stored_in_clear(
    make_store: SecretStore, backend: tuple[str, str]
) -> None:
    async with make_store([]) as store:
        added = [await store.add_calendar(cal) for cal in secret_calendars()]
    async with make_store([NEW]) as store:
        assert [await store.get_calendar(cal.id) for cal in added] == added
        assert await store.reseal_secrets() == 2  # type: ignore[attr-defined]
        assert [await store.get_calendar(cal.id) for cal in added] == added
    raw = await raw_text(backend)
    assert [secret for secret in SECRETS if secret in raw] == []


async def test_a_new_key_first_reads_old_rows_and_reseal_retires_the_old_key(
    make_store: SecretStore,
) -> None:
    async with make_store([OLD]) as store:
        team = await store.add_calendar(secret_calendars()[0])
    async with make_store([NEW, OLD]) as store:
        assert await store.get_calendar(team.id) == team
        # Found under the old key's look-up form: no second calendar.
        again, added = await store.ensure_calendar(calendar(TOKEN_URL))
        assert (again.id, added) == (team.id, False)
        with pytest.raises(CalendarExists):
            await store.add_calendar(calendar(TOKEN_URL))
        assert await store.reseal_secrets() == 1  # type: ignore[attr-defined]
    async with make_store([NEW]) as store:
        assert await store.get_calendar(team.id) == team
        assert len(await store.list_calendars()) == 1


async def test_a_sealed_url_is_unique_per_owner_and_found_again(
    make_store: SecretStore,
) -> None:
    async with make_store([NEW]) as store:
        team = await store.add_calendar(calendar(TOKEN_URL))
        other = await store.add_calendar(calendar(TOKEN_URL.replace("t0ken", "x")))
        assert (await store.ensure_calendar(calendar(TOKEN_URL)))[0] == team
        with pytest.raises(CalendarExists):
            await store.add_calendar(calendar(TOKEN_URL))
        with pytest.raises(CalendarExists):
            await store.update_calendar(calendar(TOKEN_URL, id=other.id))
        mine = await store.add_calendar(calendar(TOKEN_URL, owner="alice"))
        assert mine.url == TOKEN_URL


async def test_sealed_secrets_without_a_key_are_one_clear_error(
    make_store: SecretStore,
) -> None:
    async with make_store([NEW]) as store:
        team = await store.add_calendar(secret_calendars()[0])
    async with make_store([]) as store:
        with pytest.raises(StoreError) as missing:
            await store.get_calendar(team.id)
    message = str(missing.value)
    assert "[store] secret_keys" in message
    assert team.id in message
    assert "\n" not in message
    assert TOKEN not in message


async def test_sealed_secrets_with_the_wrong_key_are_one_clear_error(
    make_store: SecretStore,
) -> None:
    async with make_store([OLD]) as store:
        team = await store.add_calendar(secret_calendars()[0])
    async with make_store([NEW]) as store:
        with pytest.raises(StoreError) as wrong:
            await store.list_calendars()
    message = str(wrong.value)
    assert "no key in [store] secret_keys" in message
    assert team.id in message
    assert NEW not in message
    assert OLD not in message


def test_a_malformed_key_is_refused_without_showing_it(tmp_path: Path) -> None:
    bad = "not-a-fernet-key-but-a-S3CRET"
    with pytest.raises(ValidationError) as refused:
        sqlite_module.SQLiteStore(tmp_path / "x.db", secret_keys=[NEW, bad])
    message = str(refused.value)
    assert "key #2" in message
    assert "[store] secret_keys" in message
    assert bad not in message


async def test_the_environment_sets_the_keys_of_the_configured_store(
    tmp_path: Path,
) -> None:
    path = tmp_path / "env.db"
    config = load_config(
        None,
        env={
            "CALSYNC_STORE_URL": f"sqlite:///{path}",
            "CALSYNC_STORE_SECRET_KEYS": f"{NEW},{OLD}",
        },
    )
    assert NEW not in repr(config)
    async with open_store(config) as store:
        await store.add_calendar(secret_calendars()[0])
    assert TOKEN not in await raw_text(("sqlite", str(path)))


# -- schema 2, as written by the calsync before secrets were sealed ------------

V2_CALENDAR = {
    "id": "v2cal",
    "owner": "default",
    "url": TOKEN_URL,
    "name": "Team",
    "schedule": "every 15m",
    "leads": "[600000000]",
    "tz": None,
    "window_past": 86_400_000_000,
    "horizon": 7_776_000_000_000,
    "use_alarms": False,
    "auth": f'{{"kind": "bearer", "token": "{BEARER}"}}',
    "paused": False,
    "created_at": T0,
    "consecutive_failures": 0,
    "next_sync_at": T0,
    "circuit": "closed",
    "held_removals": 0,
}


async def write_schema_2(backend: tuple[str, str]) -> None:
    """Create a schema-2 database as the calsync of that time did, with one calendar.

    SQLite: the schema-2 file an older calsync wrote (tests/store/fixtures);
    PostgreSQL: the schema built by that calsync's DDL (legacy_postgres).
    """
    kind, target = backend
    columns = ", ".join(V2_CALENDAR)
    if kind == "sqlite":
        values = {
            **V2_CALENDAR,
            "created_at": 1_772_366_400_000_000,
            "next_sync_at": 1_772_366_400_000_000,
        }
        shutil.copy(FIXTURES / "schema2.db", target)
        conn = sqlite3.connect(target)
        with conn:
            marks = ", ".join(f":{name}" for name in V2_CALENDAR)
            conn.execute(f"INSERT INTO calendars ({columns}) VALUES ({marks})", values)
        conn.close()
        return
    import psycopg

    assert POSTGRES_URL is not None
    quoted = f'"{target}"'
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
        await conn.execute(f"CREATE SCHEMA {quoted}")
        for version, statements in legacy_postgres.MIGRATIONS:
            if version > 2:
                break
            for statement in statements:
                await conn.execute(statement.replace("{s}", quoted))
        await conn.execute(f"INSERT INTO {quoted}.schema_version VALUES (2)")
        marks = ", ".join(f"%({name})s" for name in V2_CALENDAR)
        await conn.execute(
            f"INSERT INTO {quoted}.calendars ({columns}) VALUES ({marks})",
            V2_CALENDAR,
        )


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=needs_postgres),
    ],
    indirect=True,
)
async def test_a_schema_2_database_upgrades_in_place_and_seals_on_reseal(
    make_store: SecretStore, backend: tuple[str, str]
) -> None:
    await write_schema_2(backend)
    async with make_store([NEW]) as store:
        assert await store.schema_version() == SCHEMA_VERSION >= 3
        team = await store.get_calendar("v2cal")
        assert (team.url, team.auth, team.name) == (
            TOKEN_URL,
            BearerAuth(BEARER),
            "Team",
        )
        # The SQLite file holds a calendar with secrets of its own ("team").
        expected = 2 if backend[0] == "sqlite" else 1
        assert await store.reseal_secrets() == expected  # type: ignore[attr-defined]
        assert await store.get_calendar("v2cal") == team
    raw = await raw_text(backend)
    assert "legacy-S3CRET" not in raw
    assert [secret for secret in SECRETS if secret in raw] == []
