"""The one schema of the SQL stores, for SQLite, PostgreSQL and MariaDB.

Every table and index is declared once here; `create_all` builds a new
database, and `UPGRADES` bring an older one up to `SCHEMA_VERSION` in place.
Column types differ per database only where this module says so: instants are
integer microseconds since the epoch except on PostgreSQL (timestamptz), and
MariaDB keys are bounded VARCHARs (it cannot index unbounded text).
"""

from __future__ import annotations

from typing import Any

import attrs
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateIndex, ExecutableDDLElement
from sqlalchemy.sql.compiler import DDLCompiler
from sqlalchemy.types import TypeEngine

from calsync.stores.store import SCHEMA_VERSION

__all__ = [
    "UPGRADES",
    "AddColumn",
    "DropIndexOf",
    "OnlyOn",
    "calendars",
    "job_runs",
    "metadata",
    "notifications",
    "occurrences",
    "schema_version",
]

_MYSQL = ("mysql", "mariadb")

INT: TypeEngine[int] = Integer()
BIGINT: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")
TEXT: TypeEngine[str] = Text()
FLAG: TypeEngine[Any] = Boolean().with_variant(Integer(), "sqlite")
INSTANT: TypeEngine[Any] = BIGINT.with_variant(
    postgresql.TIMESTAMP(timezone=True), "postgresql"
)
"""An instant: integer microseconds since the epoch, timestamptz on PostgreSQL."""
JSON_TEXT: TypeEngine[Any] = Text().with_variant(postgresql.JSONB(), "postgresql")


def key(length: int) -> TypeEngine[str]:
    """Text that is part of a key: unbounded, but ``length`` characters on MariaDB."""
    return Text().with_variant(String(length), *_MYSQL)


_TABLE_OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",  # compares and sorts by code point, as elsewhere
}

metadata = MetaData()


def _occurrence_key() -> tuple[Column[str], ...]:
    """Return the columns naming an occurrence: its calendar, UID and RECURRENCE-ID."""
    return (
        Column(
            "calendar_id",
            key(191),
            ForeignKey("calendars.id", ondelete="CASCADE"),
            nullable=False,
        ),
        Column("uid", key(500), nullable=False),
        Column("recurrence_id", key(64), nullable=False),
    )


schema_version = Table(
    "schema_version", metadata, Column("version", INT, nullable=False), **_TABLE_OPTIONS
)

calendars = Table(
    "calendars",
    metadata,
    Column("id", key(191), nullable=False),
    Column("owner", key(191), nullable=False),
    Column("url", key(512), nullable=False),
    Column("name", TEXT),
    Column("schedule", TEXT, nullable=False),
    Column("leads", TEXT, nullable=False),
    Column("tz", TEXT),
    Column("window_past", BIGINT, nullable=False),
    Column("horizon", BIGINT, nullable=False),
    Column("use_alarms", FLAG, nullable=False),
    Column("auth", TEXT),
    Column("paused", FLAG, nullable=False),
    Column("created_at", INSTANT, nullable=False),
    Column("etag", TEXT),
    Column("last_modified", TEXT),
    Column("body_hash", TEXT),
    Column("last_attempt_at", INSTANT),
    Column("last_success_at", INSTANT),
    Column("last_error", TEXT),
    Column("consecutive_failures", INT, nullable=False, server_default=text("0")),
    Column("next_sync_at", INSTANT, nullable=False),
    Column("circuit", TEXT, nullable=False),
    Column("held_removals", INT, nullable=False, server_default=text("0")),
    Column("held_removals_hash", TEXT),
    Column("sync_requested_at", INSTANT),
    Column("lease_worker", TEXT),
    Column("lease_token", BIGINT, nullable=False, server_default=text("0")),
    Column("lease_expires_at", INSTANT),
    Column("lease_claimed_at", INSTANT),
    Column("parsed_at", INSTANT),  # version 2
    Column("refresh_interval", BIGINT),  # version 2
    Column("url_sealed", TEXT),  # version 3
    PrimaryKeyConstraint("id"),
    UniqueConstraint("owner", "url"),
    **_TABLE_OPTIONS,
)
Index(
    "calendars_due",
    calendars.c.next_sync_at,
    sqlite_where=~calendars.c.paused,
    postgresql_where=~calendars.c.paused,
)
Index(
    "calendars_requested",
    calendars.c.sync_requested_at,
    sqlite_where=calendars.c.sync_requested_at.is_not(None),
    postgresql_where=calendars.c.sync_requested_at.is_not(None),
)

occurrences = Table(
    "occurrences",
    metadata,
    *_occurrence_key(),
    Column("start_at", INSTANT, nullable=False),
    Column("end_at", INSTANT, nullable=False),
    Column("all_day", FLAG, nullable=False),
    Column("summary", TEXT, nullable=False),
    Column("location", TEXT, nullable=False),
    Column("description", TEXT, nullable=False),
    Column("status", TEXT, nullable=False),
    Column("sequence", BIGINT, nullable=False),
    Column("tzid", TEXT),
    Column("start_date", TEXT),
    Column("end_date", TEXT),
    Column("alarms", TEXT, nullable=False),
    Column("content_hash", TEXT, nullable=False),
    Column("expired", FLAG, nullable=False, server_default=false()),
    PrimaryKeyConstraint("calendar_id", "uid", "recurrence_id"),
    **_TABLE_OPTIONS,
)
Index(
    "occurrences_by_calendar_start",
    occurrences.c.calendar_id,
    occurrences.c.start_at,
)
Index(
    "occurrences_live_by_start",
    occurrences.c.start_at,
    sqlite_where=~occurrences.c.expired,
    postgresql_where=~occurrences.c.expired,
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", key(64), nullable=False),
    *_occurrence_key(),
    Column("lead", BIGINT, nullable=False),
    Column("start_at", INSTANT, nullable=False),
    Column("fire_at", INSTANT, nullable=False),
    Column("status", key(16), nullable=False),
    Column("created_at", INSTANT, nullable=False),
    Column("due_at", INSTANT, nullable=False),
    Column("attempts", INT, nullable=False, server_default=text("0")),
    Column("last_error", TEXT),
    Column("delivered_at", INSTANT),
    Column("claim_worker", TEXT),
    Column("claim_token", BIGINT, nullable=False, server_default=text("0")),
    PrimaryKeyConstraint("id"),
    UniqueConstraint("calendar_id", "uid", "recurrence_id", "lead", "start_at"),
    **_TABLE_OPTIONS,
)
_PENDING = notifications.c.status == "pending"
_FAILED = notifications.c.status == "failed"
# The claim's WHERE status = 'pending' AND due_at <= now ORDER BY due_at, id:
# partial where the database has partial indexes, else led by status (InnoDB
# appends the primary key, so the order is read from the index too).
Index(
    "notifications_due",
    notifications.c.due_at,
    sqlite_where=_PENDING,
    postgresql_where=_PENDING,
).ddl_if(dialect=("sqlite", "postgresql"))  # type: ignore[arg-type]  # tuples work
Index(
    "notifications_due",
    notifications.c.status,
    notifications.c.due_at,
).ddl_if(dialect=_MYSQL)  # type: ignore[arg-type]
Index(
    "notifications_failed",
    notifications.c.fire_at,
    sqlite_where=_FAILED,
    postgresql_where=_FAILED,
)
Index(
    "notifications_by_status",
    notifications.c.status,
    notifications.c.calendar_id,
)
Index("notifications_by_start", notifications.c.start_at)
Index("notifications_by_uid", notifications.c.uid)

job_runs = Table(
    "job_runs",
    metadata,
    Column("id", BIGINT, Identity(always=True), primary_key=True),
    Column("job", key(64), nullable=False),
    Column("started_at", INSTANT, nullable=False),
    Column("finished_at", INSTANT, nullable=False),
    Column("outcome", TEXT, nullable=False),
    Column("counts", JSON_TEXT, nullable=False),
    Column("error", TEXT),
    sqlite_autoincrement=True,
    **_TABLE_OPTIONS,
)
Index("job_runs_by_finish", job_runs.c.finished_at)
Index("job_runs_by_job", job_runs.c.job, job_runs.c.finished_at, job_runs.c.id)


class AddColumn(ExecutableDDLElement):
    """``ALTER TABLE ... ADD COLUMN``, spelled from the column declared above."""

    def __init__(self, column: Column[Any]) -> None:
        self.column = column


@compiles(AddColumn)
def _add_column(element: AddColumn, compiler: DDLCompiler, **kw: Any) -> str:
    table = compiler.preparer.format_table(element.column.table)
    spec = compiler.get_column_specification(element.column)
    return f"ALTER TABLE {table} ADD COLUMN {spec}"


def _index(name: str, dialect: str = "sqlite") -> CreateIndex:
    [index] = [
        index
        for table in metadata.tables.values()
        for index in table.indexes
        if index.name == name and _made_on(index, dialect)
    ]
    return CreateIndex(index)


def _made_on(index: Index, dialect: str) -> bool:
    """Say whether ``metadata.create_all`` makes ``index`` on ``dialect``."""
    condition = index._ddl_if
    if condition is None or condition.dialect is None:
        return True
    names = condition.dialect
    return dialect in ((names,) if isinstance(names, str) else names)


class DropIndexOf(ExecutableDDLElement):
    """``DROP INDEX name ON table`` (MariaDB's spelling), by the index's name."""

    def __init__(self, table: Table, name: str) -> None:
        self.table = table
        self.name = name


@compiles(DropIndexOf)
def _drop_index_of(element: DropIndexOf, compiler: DDLCompiler, **kw: Any) -> str:
    table = compiler.preparer.format_table(element.table)
    return f"DROP INDEX {compiler.preparer.quote(element.name)} ON {table}"


@attrs.frozen
class OnlyOn:
    """An upgrade step run only on the named dialects."""

    dialects: tuple[str, ...]
    step: ExecutableDDLElement


UPGRADES: dict[int, tuple[ExecutableDDLElement | OnlyOn, ...]] = {
    # Sync state keeps when the body was parsed and the feed's REFRESH-INTERVAL;
    # notifications are counted by status and found by start and UID; job runs
    # are found by job.
    2: (
        AddColumn(calendars.c.parsed_at),
        AddColumn(calendars.c.refresh_interval),
        _index("notifications_by_status"),
        _index("notifications_by_start"),
        _index("notifications_by_uid"),
        _index("job_runs_by_job"),
    ),
    # A URL that carries a secret is kept sealed (encrypted), the url column
    # holding its look-up form; credentials are sealed in the auth column.
    3: (AddColumn(calendars.c.url_sealed),),
    # MariaDB claims notifications through (status, due_at), not due_at alone
    # (which made it read every pending row and sort them).
    4: (
        OnlyOn(_MYSQL, DropIndexOf(notifications, "notifications_due")),
        OnlyOn(_MYSQL, _index("notifications_due", "mysql")),
    ),
}
"""The statements that bring a database from version N - 1 to N, by N.

A new database is created whole at `SCHEMA_VERSION` by `metadata.create_all`.
"""

assert max(UPGRADES) == SCHEMA_VERSION, "one upgrade per schema version"
