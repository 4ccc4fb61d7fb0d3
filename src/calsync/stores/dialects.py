"""What differs between the SQL stores' databases, and nothing else.

`SQLStore` writes every statement once; a `Backend` says how to connect, how a
transaction starts (SQLite serializes writers with ``BEGIN IMMEDIATE``, the
servers lock rows with ``FOR UPDATE SKIP LOCKED``), how instants are stored,
how an upsert and an insert-or-ignore are spelled, how a driver error reads to
the user, and whether the hot statements run on the driver with SQL compiled
once (SQLite, PostgreSQL) rather than through SQLAlchemy's execution.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import attrs
from sqlalchemy import (
    Connection,
    Engine,
    Select,
    Table,
    create_engine,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.dialects.sqlite.base import SQLiteCompiler
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    IntegrityError,
    OperationalError,
)
from sqlalchemy.pool import StaticPool
from sqlalchemy.schema import CreateSchema
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.dml import Insert
from typing_extensions import override

from calsync.core.errors import StoreError, StoreUnavailable, ValidationError
from calsync.core.redact import scrub_secrets
from calsync.stores._rows import epoch_micros, from_epoch_micros

__all__ = ["Backend", "MariaDBBackend", "PostgresBackend", "SQLiteBackend"]

log = logging.getLogger("calsync.store")

MIN_SQLITE = (3, 24, 0)
"""The oldest SQLite with upserts (``ON CONFLICT ... DO``), which the store needs."""


class Backend:
    """One database kind: connecting, transactions, instants, errors."""

    kind = "SQL"
    """The database's name in messages."""
    locks_rows = True
    """Claims lock rows ``FOR UPDATE SKIP LOCKED`` (else writers are serialized)."""
    schema: str | None = None
    """The schema (MariaDB: database) that holds the tables; None for the default."""
    workers = 1
    """Threads (and connections) the store runs transactions on."""
    claims_at_once = False
    """A claim is one ``UPDATE ... RETURNING`` of the rows a CTE locked."""
    autocommits = False
    """A method of one statement runs without BEGIN and COMMIT (two round trips)."""
    attempts = 3
    """How often a transaction runs when the database aborts it for a deadlock."""
    driver_errors: tuple[type[Exception], ...] = ()
    """Driver errors raised past SQLAlchemy (statements run on the raw connection)."""
    _driver_sql: dict[tuple[int, tuple[str, ...]], tuple[Any, _Plain | None]]
    """Driver SQL by statement id (the statement is kept, so the id stays its own)."""

    def engine(self) -> Engine:
        """Return a new engine for this database."""
        raise NotImplementedError

    def target(self) -> str:
        """Say where the store is, without secrets, for reprs and messages."""
        raise NotImplementedError

    # -- values --------------------------------------------------------------

    def instant(self, value: datetime) -> Any:
        """Store an aware datetime: integer microseconds since the epoch."""
        return epoch_micros(value)

    def from_instant(self, value: Any) -> datetime:
        """Read a stored instant back as an aware UTC datetime."""
        return from_epoch_micros(value)

    def json(self, value: dict[str, Any]) -> Any:
        """Store a JSON document (job run counts)."""
        import json

        return json.dumps(value)

    def bytewise(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        """Order text by code point, as the memory store does."""
        return column

    # -- statements ------------------------------------------------------------

    def execute_many(
        self, conn: Connection, statement: Any, rows: Sequence[dict[str, Any]]
    ) -> int:
        """Run ``statement`` once per row; return how many rows it changed."""
        plain = self._plain(statement, tuple(rows[0]))
        if plain is None or plain.expanding:
            return max(conn.execute(statement, list(rows)).rowcount, 0)
        cursor = self._cursor(conn)
        rows = [plain.params(row) for row in rows]
        self._run(conn, cursor, cursor.executemany, plain.sql, rows)
        return max(int(cursor.rowcount), 0)

    def fetch_all(
        self, conn: Connection, statement: Any, params: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """`fetch_rows`, for a statement the store built once (a hot one)."""
        plain = self._plain(statement, ())
        if plain is None:
            return fetch_rows(conn, statement, params)
        cursor = self._execute(conn, plain, params)
        keys = [column[0] for column in cursor.description]
        return [dict(zip(keys, row, strict=True)) for row in cursor.fetchall()]

    def fetch_values(
        self, conn: Connection, statement: Any, params: dict[str, Any]
    ) -> list[Sequence[Any]]:
        """Return the rows of a statement built once, as tuples in column order."""
        plain = self._plain(statement, ())
        if plain is None:
            return list(conn.execute(statement, params).all())
        return self._execute(conn, plain, params).fetchall()  # type: ignore[no-any-return]

    def execute(self, conn: Connection, statement: Any, params: dict[str, Any]) -> int:
        """Run a statement built once; return how many rows it changed."""
        plain = self._plain(statement, ())
        if plain is None:
            return max(conn.execute(statement, params).rowcount, 0)
        return max(int(self._execute(conn, plain, params).rowcount), 0)

    def driver_dialect(self) -> Dialect | None:
        """Return the dialect that compiles SQL for the driver, once per statement.

        None: SQLAlchemy runs every statement (its per-call parameter and
        result handling costs more than a short statement's work).
        """
        return None

    def _cursor(self, conn: Connection) -> Any:
        """Return a new cursor of the driver connection under ``conn``."""
        return conn.connection.driver_connection.cursor()  # type: ignore[union-attr]

    def _run(
        self,
        conn: Connection,
        cursor: Any,
        method: Callable[..., Any],
        sql: str,
        params: Any,
    ) -> None:
        """Call a driver cursor's execute or executemany."""
        method(sql, params)

    def _execute(self, conn: Connection, plain: _Plain, params: dict[str, Any]) -> Any:
        cursor = self._cursor(conn)
        sql = plain.sql
        if plain.expanding:
            sql, params = plain.expand(params)
        self._run(conn, cursor, cursor.execute, sql, plain.params(params))
        return cursor

    def _plain(self, statement: Any, keys: tuple[str, ...]) -> _Plain | None:
        """Return ``statement`` (built once) as driver SQL, compiled once.

        None if it needs SQLAlchemy's result handling, or the backend has no
        driver path.
        """
        cached = self._driver_sql.get((id(statement), keys))
        if cached is None:
            dialect = self.driver_dialect()
            if dialect is None or len(self._driver_sql) >= _PLAIN_STATEMENTS:
                return None  # not a statement built once: SQLAlchemy caches it
            cached = self._driver_sql[id(statement), keys] = (
                statement,
                _Plain.of(statement, keys, dialect, self.schema),
            )
        return cached[1]

    def using_index(self, statement: Select[Any], table: Table, index: str) -> Any:
        """Return ``statement`` reading ``table`` through ``index``.

        Only where the planner would pick a worse one: SQLite, without table
        statistics, prefers a full index on ``status`` to a partial one.
        """
        return statement

    def upsert(
        self,
        table: Table,
        keys: Sequence[str],
        new: Sequence[str],
        set_: dict[str, Any],
    ) -> Insert:
        """Return an INSERT of rows of ``table`` that updates an existing one.

        On a conflict on ``keys`` the row takes the inserted values of the
        ``new`` columns, and the values of ``set_``.
        """
        statement = self._insert(table)
        return statement.on_conflict_do_update(  # type: ignore[no-any-return]
            index_elements=list(keys),
            set_={**{name: statement.excluded[name] for name in new}, **set_},
        )

    def insert_ignore(
        self, table: Table, names: Sequence[str], rows: Select[Any]
    ) -> Insert:
        """Return INSERT ... SELECT that skips a row any unique key already holds."""
        # No conflict target: every unique index is an arbiter, so a racing
        # insert of the same row waits for the first and then does nothing.
        statement = self._insert(table).from_select(list(names), rows)
        return statement.on_conflict_do_nothing()  # type: ignore[no-any-return]

    def _insert(self, table: Table) -> Any:
        raise NotImplementedError

    # -- transactions ----------------------------------------------------------

    def begin(self, conn: Connection, write: bool) -> None:
        """Start a transaction (the servers begin on the first statement)."""

    def commit(self, conn: Connection) -> None:
        """Commit the transaction `begin` started."""
        conn.commit()

    def rollback(self, conn: Connection) -> None:
        """Roll the transaction back; a failure to do so is logged, not raised."""
        try:
            conn.rollback()
        except DBAPIError:
            log.exception("rolling back a failed %s transaction failed", self.kind)

    def prepare(self, conn: Connection) -> None:
        """Make ready for the schema check: create the schema, take the open lock."""

    def finish_open(self, conn: Connection) -> None:
        """Release what `prepare` took once the schema is current."""

    def has_version_table(self, conn: Connection) -> bool:
        """Say whether the schema_version table exists."""
        from sqlalchemy import inspect

        return inspect(conn).has_table("schema_version", schema=self.schema)

    # -- errors ----------------------------------------------------------------

    def retryable(self, exc: DBAPIError) -> bool:
        """Say whether the database aborted the transaction for a deadlock."""
        return False

    def error(self, exc: BaseException) -> StoreError:
        """Describe a driver error for the user, without the values it may quote."""
        return StoreError(f"the {self.kind} store at {self.target()} failed: {exc}")

    def connect_error(self, exc: BaseException) -> StoreError:
        """Describe a failure to connect."""
        return self.error(exc)


# -- SQLite ----------------------------------------------------------------------


class SQLiteBackend(Backend):
    """One file; writers serialize on ``BEGIN IMMEDIATE``, readers never wait (WAL)."""

    kind = "SQLite"
    locks_rows = False
    driver_errors = (sqlite3.Error,)

    def __init__(self, path: str | os.PathLike[str], busy_timeout: timedelta) -> None:
        if busy_timeout < timedelta(0):
            raise ValidationError(f"busy_timeout must be >= 0, got {busy_timeout!r}")
        self.path = os.fspath(path)
        self.busy_timeout = busy_timeout
        self._driver_sql = {}

    @override
    def target(self) -> str:
        return self.path

    @override
    def engine(self) -> Engine:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StoreError(
                f"SQLite {sqlite3.sqlite_version} is too old for calsync: it needs "
                f"{'.'.join(map(str, MIN_SQLITE))} or newer"
            )
        engine = create_engine(
            URL.create("sqlite+pysqlite", database=self.path),
            poolclass=StaticPool,
            connect_args={
                "timeout": self.busy_timeout.total_seconds(),
                "isolation_level": None,  # transactions are begun by `begin`
                "check_same_thread": False,
            },
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        engine.dialect.statement_compiler = _SQLiteCompiler
        return engine

    def _insert(self, table: Table) -> Any:
        return sqlite.insert(table)

    @override
    def driver_dialect(self) -> Dialect | None:
        # Straight to sqlite3, with the SQL compiled once: SQLAlchemy's per-row
        # parameter handling cost more than SQLite's work on a 1 % change.
        dialect = sqlite.dialect(paramstyle="named")
        dialect.statement_compiler = _SQLiteCompiler
        return dialect

    @override
    def using_index(self, statement: Select[Any], table: Table, index: str) -> Any:
        return statement.with_hint(table, f"INDEXED BY {index}", "sqlite")

    @override
    def begin(self, conn: Connection, write: bool) -> None:
        # On the driver's connection: SQLAlchemy sees one statement less.
        _sqlite(conn).execute("BEGIN IMMEDIATE" if write else "BEGIN")

    @override
    def commit(self, conn: Connection) -> None:
        _sqlite(conn).execute("COMMIT")

    @override
    def rollback(self, conn: Connection) -> None:
        raw = _sqlite(conn)
        if raw.in_transaction:  # else SQLite rolled back by itself (disk full)
            try:
                raw.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("rolling back a failed SQLite transaction failed")
        conn.rollback()

    def use_wal(self, conn: Connection) -> None:
        """Switch to WAL: readers never block the writer, and a commit is one append."""
        mode = conn.exec_driver_sql("PRAGMA journal_mode = WAL").scalar()
        if mode != "wal" and self.path != ":memory:":
            log.warning(
                "SQLite store cannot use WAL here; it falls back to a rollback journal",
                extra={"path": self.path, "journal_mode": mode},
            )

    def busy(self, exc: BaseException) -> bool:
        """Say whether SQLite refused for a lock held by another connection."""
        text = str(getattr(exc, "orig", exc))
        return isinstance(getattr(exc, "orig", exc), sqlite3.OperationalError) and (
            "locked" in text or "busy" in text
        )

    @override
    def error(self, exc: BaseException) -> StoreError:
        orig = getattr(exc, "orig", exc)
        if isinstance(orig, sqlite3.OperationalError) and "locked" in str(orig):
            return StoreUnavailable(
                f"the SQLite store at {self.path} stayed locked by another "
                f"connection for longer than busy_timeout ({self.busy_timeout}); "
                "nothing was written, try again"
            )
        return StoreError(
            f"the SQLite store at {self.path} failed: {orig}; the transaction "
            "was rolled back"
        )


def fetch_rows(
    conn: Connection, statement: Any, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """Return the rows as dicts: the codec reads each row by name many times."""
    result = conn.execute(statement, params)
    keys = list(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result.all()]


_PLAIN_STATEMENTS = 200
"""More statements than the store builds once: the rest go through SQLAlchemy."""


@attrs.frozen
class _Plain:
    """A statement compiled once for the driver: its SQL and how to fill it in."""

    sql: str
    fixed: dict[str, Any]
    """Values SQLAlchemy fills in itself (an OFFSET 0, a literal's parameter)."""
    processors: dict[str, Callable[[Any], Any]]
    """Conversions of parameter values (booleans on PostgreSQL), by name."""
    compiled: Any
    """The compiled statement, to expand list parameters (``IN``) per length."""
    expanding: tuple[str, ...]
    """The parameters that are lists, expanded to one placeholder per item."""
    _expanded: dict[tuple[int, ...], tuple[str, dict[str, list[str]]]] = attrs.field(
        factory=dict
    )

    @classmethod
    def of(
        cls, statement: Any, keys: Sequence[str], dialect: Dialect, schema: str | None
    ) -> _Plain | None:
        """Compile ``statement`` for the driver; None if it converts a result."""
        compiled = statement.compile(
            dialect=dialect,
            column_keys=list(keys),
            schema_translate_map={None: schema} if schema else None,
            render_schema_translate=bool(schema),
        )
        params = compiled.binds.values()
        if any(param.callable is not None for param in params) or any(
            column[3]._cached_result_processor(dialect, None) is not None
            for column in compiled._result_columns
        ):
            return None
        fixed = {
            compiled.bind_names[param]: param.value
            for param in params
            if not param.required
        }
        expanding = tuple(
            compiled.bind_names[param] for param in params if param.expanding
        )
        processors = dict(compiled._bind_processors)
        if any(name in processors for name in expanding):
            return None
        return cls(str(compiled), fixed, processors, compiled, expanding)

    def params(self, given: dict[str, Any]) -> dict[str, Any]:
        """Return the driver's parameters for the caller's values."""
        values = {**self.fixed, **given} if self.fixed else given
        if self.processors:
            values = dict(values)
            for name, process in self.processors.items():
                if name in values:
                    values[name] = process(values[name])
        return values

    def expand(self, given: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Return the SQL with one placeholder per item of each list parameter."""
        lengths = tuple(len(given[name]) for name in self.expanding)
        expanded = self._expanded.get(lengths)
        if expanded is None:
            state = self.compiled.construct_expanded_state({**self.fixed, **given})
            expanded = self._expanded[lengths] = (
                state.statement,
                dict(state.parameter_expansion),
            )
        sql, names = expanded
        values = {key: value for key, value in given.items() if key not in names}
        for name, items in names.items():
            values.update(zip(items, given[name], strict=True))
        return sql, values


class _SQLiteCompiler(SQLiteCompiler):
    """SQLAlchemy's SQLite compiler, rendering table hints (``INDEXED BY``)."""

    def get_from_hint_text(self, table: Any, text: str | None) -> str | None:
        return text


def _sqlite(conn: Connection) -> sqlite3.Connection:
    """Return the sqlite3 connection under ``conn``."""
    raw: sqlite3.Connection = conn.connection.driver_connection  # type: ignore[assignment]
    return raw


def _sqlite_pragmas(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA foreign_keys = ON")
    dbapi_connection.execute("PRAGMA synchronous = FULL")


# -- the servers ------------------------------------------------------------------


class _ServerBackend(Backend):
    """A database server: a pool of connections, row locks, deadlock retries."""

    def __init__(self, min_size: int, max_size: int) -> None:
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValidationError(
                f"need 0 <= min_size <= max_size and max_size >= 1, got "
                f"min_size={min_size}, max_size={max_size}"
            )
        self.min_size = min_size
        self.workers = max_size
        self._driver_sql = {}

    def _pooled(self, url: str | URL, **options: Any) -> Engine:
        engine = create_engine(
            url, pool_size=self.workers, max_overflow=0, pool_pre_ping=False, **options
        )
        if self.schema is not None:
            engine = engine.execution_options(schema_translate_map={None: self.schema})
        return engine

    def _insert(self, table: Table) -> Any:
        return postgresql.insert(table)

    url = ""
    """The connection URL as given; its password is masked in every message."""
    shown = ""
    """Where the server is: the URL without secrets."""

    @override
    def error(self, exc: BaseException) -> StoreError:
        """Name the driver error and its code; quote no values it may carry.

        The server's messages about constraint and data errors quote the
        values involved (URLs, secrets), so only their class and code are kept.
        """
        orig = getattr(exc, "orig", exc)
        code, _text = self._code_and_text(orig)
        quotes_values = isinstance(exc, IntegrityError | DataError)
        detail = "" if code and quotes_values else f": {self._reason(orig)}"
        transient = isinstance(exc, OperationalError)
        return (StoreUnavailable if transient else StoreError)(
            f"{self.kind} ({self.target()}) failed with {type(orig).__name__} "
            f"[{code or 'no error code'}]{detail}"
        )

    @override
    def connect_error(self, exc: BaseException) -> StoreError:
        return StoreUnavailable(
            f"cannot connect to {self.kind} at {self.shown}: "
            f"{self._reason(getattr(exc, 'orig', exc))}; "
            "check that the server runs and the connection string is right"
        )

    def _code_and_text(self, orig: BaseException) -> tuple[object, str]:
        """Return the error code of a driver error and its message."""
        raise NotImplementedError

    def _reason(self, orig: BaseException) -> str:
        """Return the first line of a driver message, with any password masked."""
        lines = self._code_and_text(orig)[1].strip().splitlines()
        return scrub_secrets(lines[0] if lines else type(orig).__name__, self.url)


class PostgresBackend(_ServerBackend):
    """PostgreSQL through psycopg 3; tables in a schema of their own."""

    kind = "PostgreSQL"
    claims_at_once = True
    autocommits = True

    def __init__(self, url: str, schema: str, min_size: int, max_size: int) -> None:
        _require("psycopg", hint=POSTGRES_HINT, store="PostgresStore")
        if not isinstance(schema, str) or not schema or "\x00" in schema:
            raise ValidationError("schema must name a PostgreSQL schema, e.g. calsync")
        super().__init__(min_size, max_size)
        self.url = url
        self.schema = self.name = schema
        self.shown = _redacted_conninfo(url)
        self._dialect: Dialect | None = None

    @override
    def target(self) -> str:
        return f"{self.shown}, schema {self.schema!r}"

    @override
    def engine(self) -> Engine:
        import psycopg

        def connect() -> Any:
            return psycopg.connect(self.url)

        engine = self._pooled("postgresql+psycopg://", creator=connect)
        self._dialect = engine.dialect
        return engine

    @override
    def driver_dialect(self) -> Dialect | None:
        # Straight to psycopg, with the SQL compiled once (schema included):
        # SQLAlchemy's per-call work cost more CPU than a claim's round trip.
        return self._dialect

    @override
    def begin(self, conn: Connection, write: bool) -> None:
        # No round trip (psycopg sends BEGIN with the first statement), but
        # SQLAlchemy must know, to commit what runs on the driver connection.
        conn.begin()

    @override
    def _run(
        self,
        conn: Connection,
        cursor: Any,
        method: Callable[..., Any],
        sql: str,
        params: Any,
    ) -> None:
        import psycopg

        try:
            method(sql, params)
        except psycopg.Error as exc:
            # As SQLAlchemy would raise it: the store's retries and messages
            # read its classes, and a lost connection must leave the pool.
            dialect: Any = self._dialect
            gone = dialect.is_disconnect(exc, conn.connection.driver_connection, cursor)
            if gone:
                conn.invalidate(exc)
            raise DBAPIError.instance(
                None,
                None,
                exc,
                psycopg.Error,
                hide_parameters=True,
                connection_invalidated=gone,
                dialect=dialect,
            ) from exc

    @override
    def instant(self, value: datetime) -> Any:
        return value

    @override
    def from_instant(self, value: Any) -> datetime:
        return value.astimezone(UTC)  # type: ignore[no-any-return]

    @override
    def json(self, value: dict[str, Any]) -> Any:
        return value

    @override
    def bytewise(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        return column.collate("C")

    @override
    def prepare(self, conn: Connection) -> None:
        conn.execute(
            select(
                func.pg_advisory_xact_lock(
                    func.hashtextextended(f"calsync schema {self.schema}", 0)
                )
            )
        )
        conn.execute(CreateSchema(self.name, if_not_exists=True))

    @override
    def retryable(self, exc: DBAPIError) -> bool:
        from psycopg import errors

        return isinstance(
            exc.orig, errors.DeadlockDetected | errors.SerializationFailure
        )

    @override
    def _code_and_text(self, orig: BaseException) -> tuple[object, str]:
        return getattr(orig, "sqlstate", None), str(orig)


class MariaDBBackend(_ServerBackend):
    """MariaDB (or MySQL 8) through PyMySQL; tables in the URL's database."""

    kind = "MariaDB"

    def __init__(
        self, url: str, schema: str | None, min_size: int, max_size: int
    ) -> None:
        _require("pymysql", hint=MARIADB_HINT, store="MariaDBStore")
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise ValidationError(
                "the MariaDB URL must look like mysql://user:password@host:3306/database"
            ) from None
        if parsed.get_backend_name() not in ("mysql", "mariadb"):
            raise ValidationError(
                "the MariaDB URL must start with mysql:// or mariadb://"
            )
        if schema is not None and (not schema or "\x00" in schema):
            raise ValidationError("schema must name a MariaDB database, e.g. calsync")
        if schema is None and not parsed.database:
            raise ValidationError(
                "the MariaDB URL names no database: add /database to it, or pass schema"
            )
        super().__init__(min_size, max_size)
        self.url = url
        self.engine_url = parsed.set(drivername="mariadb+pymysql").update_query_dict(
            {"charset": "utf8mb4"}
        )
        self.schema = schema
        self.shown = (
            f"mysql://{quote(parsed.username or '', safe='')}"
            f"{'@' if parsed.username else ''}{parsed.host or 'localhost'}"
            f"{f':{parsed.port}' if parsed.port else ''}/{parsed.database or ''}"
        )

    @override
    def target(self) -> str:
        return (
            self.shown
            if self.schema is None
            else f"{self.shown}, schema {self.schema!r}"
        )

    @override
    def engine(self) -> Engine:
        return self._pooled(
            self.engine_url, isolation_level="READ COMMITTED", pool_recycle=3600
        )

    @override
    def upsert(
        self,
        table: Table,
        keys: Sequence[str],
        new: Sequence[str],
        set_: dict[str, Any],
    ) -> Insert:
        statement = mysql.insert(table)  # the conflict is on the primary key
        return statement.on_duplicate_key_update(
            {**{name: statement.inserted[name] for name in new}, **set_}
        )

    @override
    def insert_ignore(
        self, table: Table, names: Sequence[str], rows: Select[Any]
    ) -> Insert:
        return insert(table).prefix_with("IGNORE").from_select(list(names), rows)

    @override
    def prepare(self, conn: Connection) -> None:
        got = conn.execute(select(func.get_lock(self._lock_name(), 60))).scalar()
        if got != 1:
            raise StoreUnavailable(
                f"MariaDB ({self.target()}): another process kept the schema lock "
                "for a minute while it opened the store; try again"
            )
        if self.schema is not None:
            conn.execute(CreateSchema(self.schema, if_not_exists=True))

    @override
    def finish_open(self, conn: Connection) -> None:
        conn.execute(select(func.release_lock(self._lock_name())))

    def _lock_name(self) -> str:
        return f"calsync schema {self.schema or ''}"[:64]

    @override
    def retryable(self, exc: DBAPIError) -> bool:
        code = self._code_and_text(exc.orig or exc)[0]
        return code in (1205, 1213)  # lock wait timeout, deadlock

    @override
    def _code_and_text(self, orig: BaseException) -> tuple[object, str]:
        args: tuple[Any, ...] = getattr(orig, "args", ())
        if len(args) > 1 and isinstance(args[0], int):
            return args[0], str(args[1])
        return None, str(orig)


# -- helpers --------------------------------------------------------------------

POSTGRES_HINT = (
    "install the PostgreSQL driver: pip install 'psycopg[binary]>=3.2' "
    "(the postgres extra of calsync)"
)
MARIADB_HINT = (
    "install the MariaDB driver: pip install 'pymysql>=1.1' "
    "(the mariadb extra of calsync)"
)


def _require(*modules: str, hint: str, store: str) -> None:
    """Fail early, and helpfully, when an optional driver is not installed."""
    import importlib

    try:
        for module in modules:
            importlib.import_module(module)
    except ImportError as exc:
        raise StoreError(f"{store} needs its driver: {hint}") from exc


def _redacted_conninfo(url: str) -> str:
    """Show where a connection string points (user, host, port, database), no secret."""
    from psycopg import Error
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url)
    except Error:  # not a connection string: show nothing of it
        return "postgresql://***"
    user = f"{params['user']}@" if params.get("user") else ""
    host = quote(str(params.get("host") or "localhost"), safe=",")
    port = f":{params['port']}" if params.get("port") else ""
    database = str(params.get("dbname") or "")
    return f"postgresql://{user}{host}{port}/{database}"
