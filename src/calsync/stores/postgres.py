"""`PostgresStore`: the Store contract on PostgreSQL, shared by many workers and hosts.

Leases and claims are row locks taken with ``FOR UPDATE SKIP LOCKED`` and fenced
by a token; every method is one transaction. Tables live in their own schema
(default ``calsync``). Needs the ``postgres`` extra (psycopg 3 and psycopg-pool):
``pip install -e '.[postgres]'`` in a clone.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeAlias, TypeVar
from urllib.parse import quote

import attrs

from calsync.core.errors import (
    CalendarExists,
    SchemaVersionError,
    StoreError,
    StoreUnavailable,
    ValidationError,
)
from calsync.core.model import ChangeSet, Notification, Occurrence, Window, as_aware_utc
from calsync.core.redact import scrub_secrets
from calsync.stores._rows import (
    CALENDAR_COLUMNS,
    NOTIFICATION_COLUMNS,
    OCCURRENCE_COLUMNS,
    SETTINGS_COLUMNS,
    STATE_COLUMNS,
    Codec,
    column_list,
    lease_params,
    micros,
    reseal_rows,
)
from calsync.stores.records import (
    AppliedSync,
    Calendar,
    JobRun,
    Lease,
    NotificationClaim,
    NotificationRecord,
    NotificationStatus,
    PruneCounts,
    SyncState,
    SyncWrite,
    notification_id,
)
from calsync.stores.sealing import SecretBox, clear_secrets, warn_clear_secrets
from calsync.stores.store import (
    SCHEMA_VERSION,
    calendar_not_found,
    check_claim,
    check_limit,
    check_new_status,
    lease_lost,
)

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg.rows import DictRow
    from psycopg_pool import AsyncConnectionPool

    _Connection: TypeAlias = AsyncConnection[DictRow]
    _Pool: TypeAlias = AsyncConnectionPool[AsyncConnection[DictRow]]

__all__ = ["PostgresStore"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_INSTALL_HINT = (
    "install the PostgreSQL driver: pip install 'psycopg[binary]>=3.2' "
    "'psycopg-pool>=3.2' (the postgres extra of calsync)"
)
_ATTEMPTS = 3
"""How often a transaction runs when PostgreSQL aborts it for a deadlock."""


def _from_timestamptz(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _to_timestamptz(value: datetime) -> datetime:
    return value


_CODEC = Codec(_to_timestamptz, _from_timestamptz)
# -- schema ----------------------------------------------------------------
# Statements use {s} for the quoted schema name; `PostgresStore._q` fills it in.

_V1 = (
    """
    CREATE TABLE {s}.schema_version (version integer NOT NULL)
    """,
    """
    CREATE TABLE {s}.calendars (
        id text PRIMARY KEY,
        owner text NOT NULL,
        url text NOT NULL,
        name text,
        schedule text NOT NULL,
        leads text NOT NULL,
        tz text,
        window_past bigint NOT NULL,
        horizon bigint NOT NULL,
        use_alarms boolean NOT NULL,
        auth text,
        paused boolean NOT NULL,
        created_at timestamptz NOT NULL,
        etag text,
        last_modified text,
        body_hash text,
        last_attempt_at timestamptz,
        last_success_at timestamptz,
        last_error text,
        consecutive_failures integer NOT NULL DEFAULT 0,
        next_sync_at timestamptz NOT NULL,
        circuit text NOT NULL,
        held_removals integer NOT NULL DEFAULT 0,
        held_removals_hash text,
        sync_requested_at timestamptz,
        lease_worker text,
        lease_token bigint NOT NULL DEFAULT 0,
        lease_expires_at timestamptz,
        lease_claimed_at timestamptz,
        UNIQUE (owner, url)
    )
    """,
    """
    CREATE INDEX calendars_due ON {s}.calendars (next_sync_at) WHERE NOT paused
    """,
    """
    CREATE INDEX calendars_requested ON {s}.calendars (sync_requested_at)
        WHERE sync_requested_at IS NOT NULL
    """,
    """
    CREATE TABLE {s}.occurrences (
        calendar_id text NOT NULL REFERENCES {s}.calendars (id) ON DELETE CASCADE,
        uid text NOT NULL,
        recurrence_id text NOT NULL,
        start_at timestamptz NOT NULL,
        end_at timestamptz NOT NULL,
        all_day boolean NOT NULL,
        summary text NOT NULL,
        location text NOT NULL,
        description text NOT NULL,
        status text NOT NULL,
        sequence bigint NOT NULL,
        tzid text,
        start_date text,
        end_date text,
        alarms text NOT NULL,
        content_hash text NOT NULL,
        expired boolean NOT NULL DEFAULT false,
        PRIMARY KEY (calendar_id, uid, recurrence_id)
    )
    """,
    """
    CREATE INDEX occurrences_by_calendar_start
        ON {s}.occurrences (calendar_id, start_at)
    """,
    """
    CREATE INDEX occurrences_live_by_start ON {s}.occurrences (start_at)
        WHERE NOT expired
    """,
    """
    CREATE TABLE {s}.notifications (
        id text PRIMARY KEY,
        calendar_id text NOT NULL REFERENCES {s}.calendars (id) ON DELETE CASCADE,
        uid text NOT NULL,
        recurrence_id text NOT NULL,
        lead bigint NOT NULL,
        start_at timestamptz NOT NULL,
        fire_at timestamptz NOT NULL,
        status text NOT NULL,
        created_at timestamptz NOT NULL,
        due_at timestamptz NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        last_error text,
        delivered_at timestamptz,
        claim_worker text,
        claim_token bigint NOT NULL DEFAULT 0,
        UNIQUE (calendar_id, uid, recurrence_id, lead, start_at)
    )
    """,
    """
    CREATE INDEX notifications_due ON {s}.notifications (due_at)
        WHERE status = 'pending'
    """,
    """
    CREATE INDEX notifications_failed ON {s}.notifications (fire_at)
        WHERE status = 'failed'
    """,
    """
    CREATE TABLE {s}.job_runs (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        job text NOT NULL,
        started_at timestamptz NOT NULL,
        finished_at timestamptz NOT NULL,
        outcome text NOT NULL,
        counts jsonb NOT NULL,
        error text
    )
    """,
    """
    CREATE INDEX job_runs_by_finish ON {s}.job_runs (finished_at)
    """,
)

# Version 2: sync state keeps when the body was parsed and the feed's
# REFRESH-INTERVAL; notifications are counted by status and found by start and UID.
_V2 = (
    """
    ALTER TABLE {s}.calendars
        ADD COLUMN parsed_at timestamptz,
        ADD COLUMN refresh_interval bigint
    """,
    """
    CREATE INDEX notifications_by_status
        ON {s}.notifications (status, calendar_id)
    """,
    """
    CREATE INDEX notifications_by_start ON {s}.notifications (start_at)
    """,
    """
    CREATE INDEX notifications_by_uid ON {s}.notifications (uid)
    """,
    """
    CREATE INDEX job_runs_by_job ON {s}.job_runs (job, finished_at, id)
    """,
)

# Version 3: a URL that carries a secret is kept sealed (encrypted), the url
# column holding its look-up form; credentials are sealed in the auth column.
_V3 = (
    """
    ALTER TABLE {s}.calendars ADD COLUMN url_sealed text
    """,
)

MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (1, _V1),
    (2, _V2),
    (3, _V3),
)
"""Each schema version with the statements that reach it from the one before."""

# -- statements ------------------------------------------------------------

_LOCK_SCHEMA = "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))"
_SCHEMA_EXISTS = "SELECT 1 FROM pg_namespace WHERE nspname = %s"
_CREATE_SCHEMA = "CREATE SCHEMA {s}"
_HAS_VERSION_TABLE = "SELECT to_regclass(%s) IS NOT NULL AS present"
_READ_VERSION = "SELECT max(version) AS version FROM {s}.schema_version"
_CLEAR_VERSION = "DELETE FROM {s}.schema_version"
_WRITE_VERSION = "INSERT INTO {s}.schema_version (version) VALUES (%s)"

_CALENDAR = f"{column_list(CALENDAR_COLUMNS)}, lease_token"

_INSERT_CALENDAR = f"""
    INSERT INTO {{s}}.calendars ({column_list(CALENDAR_COLUMNS)})
    VALUES ({", ".join(["%s"] * len(CALENDAR_COLUMNS))})
    ON CONFLICT DO NOTHING
    RETURNING {_CALENDAR}
"""
_CALENDAR_BY_ID = f"SELECT {_CALENDAR} FROM {{s}}.calendars WHERE id = %s"
_CALENDAR_OF_OWNER = f"""
    SELECT {_CALENDAR} FROM {{s}}.calendars
    WHERE owner = %s AND url = ANY(%s::text[])
"""
_CALENDAR_BY_URL = f"""
    SELECT {_CALENDAR} FROM {{s}}.calendars
    WHERE owner = %s AND url = ANY(%s::text[]) AND id <> %s
"""
_SECRET_COLUMNS = "SELECT id, url, url_sealed, auth FROM {s}.calendars"
_RESEAL = """
    UPDATE {s}.calendars SET url = %(url)s, url_sealed = %(url_sealed)s,
        auth = %(auth)s
    WHERE id = %(id)s
"""
_LIST_CALENDARS = f"""
    SELECT {_CALENDAR} FROM {{s}}.calendars
    WHERE %(owner)s::text IS NULL OR owner = %(owner)s
    ORDER BY created_at, id COLLATE "C"
"""
_UPDATE_CALENDAR = f"""
    UPDATE {{s}}.calendars SET
        {", ".join(f"{column} = %({column})s" for column in SETTINGS_COLUMNS)},
        etag = CASE WHEN url = %(url)s THEN etag END,
        last_modified = CASE WHEN url = %(url)s THEN last_modified END,
        body_hash = CASE WHEN url = %(url)s THEN body_hash END
    WHERE id = %(id)s
    RETURNING {_CALENDAR}
"""
_DELETE_CALENDAR = """
    DELETE FROM {s}.calendars WHERE id = %(id)s
        AND (%(owner)s::text IS NULL OR owner = %(owner)s)
"""
# An open request keeps its place, unless the running sync already serves it:
# then the new one is kept for the sync after.
_REQUEST_SYNC = """
    UPDATE {s}.calendars SET sync_requested_at = CASE
        WHEN sync_requested_at IS NULL OR sync_requested_at <= lease_claimed_at
        THEN %s ELSE sync_requested_at
    END
    WHERE id = %s
"""

# A claim locks the chosen rows with SKIP LOCKED, so concurrent claimers pass
# each other by; the re-check under the lock drops rows another claim just took.
_CLAIM_CALENDARS = f"""
    WITH due AS MATERIALIZED (
        SELECT id FROM {{s}}.calendars
        WHERE {{due}}
          AND (lease_expires_at IS NULL OR lease_expires_at <= %(now)s)
        ORDER BY {{order}}, id COLLATE "C"
        LIMIT %(limit)s
        FOR NO KEY UPDATE SKIP LOCKED
    )
    UPDATE {{s}}.calendars AS c SET
        lease_worker = %(worker)s,
        lease_token = c.lease_token + 1,
        lease_expires_at = %(expires)s,
        lease_claimed_at = %(now)s
    FROM due WHERE c.id = due.id
    RETURNING {column_list(CALENDAR_COLUMNS, "c.")}, c.lease_token, c.sync_requested_at
"""
_CLAIM_REQUESTED = _CLAIM_CALENDARS.replace(
    "{due}", "sync_requested_at IS NOT NULL"
).replace("{order}", "sync_requested_at")
_CLAIM_PERIODIC = _CLAIM_CALENDARS.replace(
    "{due}",
    "NOT paused AND next_sync_at <= %(now)s AND sync_requested_at IS NULL",
).replace("{order}", "next_sync_at")

# One calendar, due or not; a concurrent claim of it waits for this row lock and
# then finds the lease taken.
_CLAIM_ONE = f"""
    UPDATE {{s}}.calendars AS c SET
        lease_worker = %(worker)s,
        lease_token = c.lease_token + 1,
        lease_expires_at = %(expires)s,
        lease_claimed_at = %(now)s
    WHERE c.id = %(id)s
      AND (c.lease_expires_at IS NULL OR c.lease_expires_at <= %(now)s)
    RETURNING {column_list(CALENDAR_COLUMNS, "c.")}, c.lease_token
"""
_CALENDAR_EXISTS = "SELECT 1 FROM {s}.calendars WHERE id = %s"

_HOLDS_LEASE = "id = %(id)s AND lease_token = %(token)s AND lease_worker = %(worker)s"
_RENEW_LEASE = f"""
    UPDATE {{s}}.calendars SET lease_expires_at = %(expires)s
    WHERE {_HOLDS_LEASE}
    RETURNING {_CALENDAR}
"""
_RELEASE_LEASE = f"""
    UPDATE {{s}}.calendars
    SET lease_worker = NULL, lease_expires_at = NULL, lease_claimed_at = NULL
    WHERE {_HOLDS_LEASE}
"""
_LOCK_LEASED = """
    SELECT lease_token, lease_worker FROM {s}.calendars WHERE id = %s FOR UPDATE
"""
_WRITE_STATE = f"""
    UPDATE {{s}}.calendars SET
        {", ".join(f"{column} = %s" for column in STATE_COLUMNS)},
        sync_requested_at = CASE
            WHEN sync_requested_at <= lease_claimed_at THEN NULL
            ELSE sync_requested_at
        END,
        lease_worker = NULL,
        lease_expires_at = NULL,
        lease_claimed_at = NULL
    WHERE id = %s
"""

_OCCURRENCE_TYPES = (
    "text",
    "text",
    "text",
    "timestamptz",
    "timestamptz",
    "boolean",
    "text",
    "text",
    "text",
    "text",
    "bigint",
    "text",
    "text",
    "text",
    "text",
    "text",
)
_UPSERT_OCCURRENCES = f"""
    INSERT INTO {{s}}.occurrences ({column_list(OCCURRENCE_COLUMNS)}, expired)
    SELECT *, false FROM unnest(
        {", ".join(f"%s::{kind}[]" for kind in _OCCURRENCE_TYPES)}
    )
    ON CONFLICT (calendar_id, uid, recurrence_id) DO UPDATE SET
        {", ".join(f"{c} = excluded.{c}" for c in OCCURRENCE_COLUMNS[3:])},
        expired = false
"""
_KEYS = "(uid, recurrence_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
_DELETE_OCCURRENCES = (
    f"DELETE FROM {{s}}.occurrences WHERE calendar_id = %s AND {_KEYS}"
)
_EXPIRE_OCCURRENCES = (
    f"UPDATE {{s}}.occurrences SET expired = true WHERE calendar_id = %s AND {_KEYS}"
)
# Pending notifications whose occurrence went or moved, or that were asked for.
# Pending notifications of the occurrences this sync touched that went or moved.
_CANCEL_STALE = """
    UPDATE {s}.notifications AS n SET status = 'cancelled'
    WHERE n.calendar_id = %s AND n.status = 'pending'
      AND (n.uid, n.recurrence_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
      AND NOT EXISTS (
        SELECT 1 FROM {s}.occurrences AS o
        WHERE o.calendar_id = n.calendar_id AND o.uid = n.uid
          AND o.recurrence_id = n.recurrence_id AND o.start_at = n.start_at
      )
"""
_CANCEL_ASKED = """
    UPDATE {s}.notifications SET status = 'cancelled'
    WHERE calendar_id = %s AND status = 'pending'
      AND (uid, recurrence_id, lead, start_at) IN (
        SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::timestamptz[])
      )
"""
_LOCK_CALENDAR_KEY = "SELECT 1 FROM {s}.calendars WHERE id = %s FOR KEY SHARE"
# The wanted notifications of occurrences stored, live and at that start; FOR
# SHARE keeps an apply from moving or deleting them until this write commits.
_WANTED_NOTIFICATIONS = """
    SELECT w.id, o.calendar_id, w.uid, w.recurrence_id, w.lead, w.start_at,
        w.fire_at
    FROM unnest(
        %(ids)s::text[], %(uids)s::text[], %(recurrence_ids)s::text[],
        %(leads)s::bigint[], %(starts)s::timestamptz[], %(fires)s::timestamptz[]
    ) AS w (id, uid, recurrence_id, lead, start_at, fire_at)
    JOIN {s}.occurrences AS o
        ON o.calendar_id = %(calendar_id)s AND o.uid = w.uid
        AND o.recurrence_id = w.recurrence_id
    WHERE NOT o.expired AND o.start_at = w.start_at
    ORDER BY w.id
    FOR SHARE OF o
"""
# A pending insert revives a cancelled row; an unfinished claim keeps its due_at.
_REVIVE_NOTIFICATIONS = f"""
    WITH wanted AS ({_WANTED_NOTIFICATIONS})
    UPDATE {{s}}.notifications AS n SET
        status = 'pending', due_at = greatest(n.due_at, wanted.fire_at)
    FROM wanted
    WHERE n.id = wanted.id AND n.status = 'cancelled'
"""
# No conflict target: every unique index is an arbiter, so a racing insert of
# the same notification waits for the first and then does nothing. With a
# target, the other unique index raised UniqueViolation in that race.
_INSERT_NOTIFICATIONS = f"""
    INSERT INTO {{s}}.notifications (
        id, calendar_id, uid, recurrence_id, lead, start_at, fire_at,
        status, created_at, due_at, attempts
    )
    SELECT id, calendar_id, uid, recurrence_id, lead, start_at, fire_at,
        %(status)s, %(now)s, fire_at, 0
    FROM ({_WANTED_NOTIFICATIONS}) AS wanted
    ON CONFLICT DO NOTHING
"""

_LIST_OCCURRENCES = f"""
    SELECT {column_list(OCCURRENCE_COLUMNS)} FROM {{s}}.occurrences
    WHERE calendar_id = %(calendar_id)s
      AND (%(expired)s OR NOT expired)
      AND (%(end)s::timestamptz IS NULL OR start_at < %(end)s)
      AND (
        %(start)s::timestamptz IS NULL OR end_at > %(start)s
        OR (end_at = start_at AND start_at >= %(start)s)
      )
    ORDER BY start_at, uid COLLATE "C", recurrence_id COLLATE "C"
"""
_OCCURRENCES_STARTING = f"""
    SELECT {column_list(OCCURRENCE_COLUMNS, "o.")}
    FROM {{s}}.occurrences AS o JOIN {{s}}.calendars AS c ON c.id = o.calendar_id
    WHERE NOT o.expired AND o.start_at >= %s AND o.start_at < %s AND NOT c.paused
    ORDER BY o.start_at, o.calendar_id COLLATE "C", o.uid COLLATE "C",
        o.recurrence_id COLLATE "C"
"""

_LIST_NOTIFICATIONS = f"""
    SELECT {column_list(NOTIFICATION_COLUMNS)} FROM {{s}}.notifications
    WHERE {{where}}
    ORDER BY fire_at, id COLLATE "C"
    LIMIT %(limit)s
"""
_NOTIFICATION_FILTERS = {
    "calendar_id": "calendar_id = %(calendar_id)s",
    "status": "status = %(status)s",
    "uid": "uid = %(uid)s",
    "starts": "start_at >= %(starts_from)s AND start_at < %(starts_until)s",
}
# Naming every status lets the count read notifications_by_status by range.
_COUNT_NOTIFICATIONS = """
    SELECT status, count(*) AS n FROM {s}.notifications
    WHERE status = ANY(%(statuses)s::text[]) {and_calendar}
    GROUP BY status
"""
_CLAIM_NOTIFICATIONS = f"""
    WITH due AS MATERIALIZED (
        SELECT id, due_at FROM {{s}}.notifications
        WHERE status = 'pending' AND due_at <= %(now)s
        ORDER BY due_at, id COLLATE "C"
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE {{s}}.notifications AS n SET
            claim_worker = %(worker)s,
            claim_token = n.claim_token + 1,
            due_at = %(expires)s,
            attempts = n.attempts + 1
        FROM due WHERE n.id = due.id
        RETURNING {column_list(NOTIFICATION_COLUMNS, "n.")}, n.claim_token,
            due.due_at AS was_due
    )
    SELECT claimed.*, {", ".join(f"o.{c} AS o_{c}" for c in OCCURRENCE_COLUMNS)}
    FROM claimed LEFT JOIN {{s}}.occurrences AS o
        ON o.calendar_id = claimed.calendar_id AND o.uid = claimed.uid
        AND o.recurrence_id = claimed.recurrence_id
    ORDER BY claimed.was_due, claimed.id COLLATE "C"
"""
_MARK_DELIVERED = """
    UPDATE {s}.notifications SET status = 'delivered', delivered_at = %s
    WHERE id = %s AND status <> 'delivered'
"""
_MARK_FAILED = """
    UPDATE {s}.notifications SET
        last_error = %(error)s,
        status = CASE WHEN %(retry_at)s::timestamptz IS NULL
            THEN 'failed' ELSE 'pending' END,
        due_at = coalesce(%(retry_at)s, due_at)
    WHERE id = %(id)s AND claim_token = %(token)s AND status = 'pending'
"""
_RELEASE_CLAIM = """
    UPDATE {s}.notifications SET
        due_at = %(now)s, attempts = attempts - 1, claim_token = claim_token + 1
    WHERE id = %(id)s AND claim_token = %(token)s AND status = 'pending'
"""
_REQUEUE = """
    UPDATE {s}.notifications SET status = 'pending', due_at = %s, attempts = 0
    WHERE id = ANY(%s::text[]) AND status = 'failed'
"""

_INSERT_JOB_RUN = """
    INSERT INTO {s}.job_runs (job, started_at, finished_at, outcome, counts, error)
    VALUES (%s, %s, %s, %s, %s, %s)
"""
_RECENT_JOB_RUNS = """
    SELECT job, started_at, finished_at, outcome, counts, error FROM {s}.job_runs
    ORDER BY finished_at DESC, id DESC
    LIMIT %(limit)s
"""
# A rare job (cleanup runs daily) must not scan a month of frequent ones.
_RECENT_RUNS_OF_JOB = """
    SELECT job, started_at, finished_at, outcome, counts, error FROM {s}.job_runs
    WHERE job = %(job)s
    ORDER BY finished_at DESC, id DESC
    LIMIT %(limit)s
"""
_PRUNE_OCCURRENCES = "DELETE FROM {s}.occurrences WHERE expired AND end_at < %s"
_PRUNE_NOTIFICATIONS = """
    DELETE FROM {s}.notifications
    WHERE status IN ('delivered', 'cancelled', 'missed') AND start_at < %s
"""
_PRUNE_JOB_RUNS = "DELETE FROM {s}.job_runs WHERE finished_at < %s"


class PostgresStore:
    """A `Store` in PostgreSQL: one database shared by any number of workers.

    ``url`` is a libpq connection string or URI; its password never appears in
    `repr`, errors or logs. ``schema`` names the PostgreSQL schema that holds
    the tables; ``min_size``/``max_size`` bound the connection pool.
    ``secret_keys`` (Fernet keys, newest first) encrypt feed secrets at rest;
    see `reseal_secrets` to rotate them.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = "calsync",
        min_size: int = 1,
        max_size: int = 10,
        secret_keys: Sequence[str] = (),
    ) -> None:
        _require_driver()
        if not isinstance(schema, str) or not schema or "\x00" in schema:
            raise ValidationError("schema must name a PostgreSQL schema, e.g. calsync")
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValidationError(
                f"need 0 <= min_size <= max_size and max_size >= 1, got "
                f"min_size={min_size}, max_size={max_size}"
            )
        self._codec = attrs.evolve(_CODEC, secrets=SecretBox(secret_keys))
        self._url = url
        self._shown_url = _redacted_conninfo(url)
        self._schema = schema
        self._quoted = _quote(schema)
        self._min_size = min_size
        self._max_size = max_size
        self._pool: _Pool | None = None

    def __repr__(self) -> str:
        return f"PostgresStore({self._shown_url!r}, schema={self._schema!r})"

    @property
    def schema(self) -> str:
        """The PostgreSQL schema that holds this store's tables."""
        return self._schema

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        """Connect, create or migrate the schema, then start the connection pool.

        Raises `SchemaVersionError` if the database holds a newer schema, and
        `StoreError` if PostgreSQL cannot be reached.
        """
        if self._pool is not None:
            return
        await self._migrate()
        self._pool = await self._start_pool()
        log.debug(
            "PostgresStore opened",
            extra={"url": self._shown_url, "schema": self._schema},
        )
        rows = await self._all(_SECRET_COLUMNS, ())
        warn_clear_secrets(clear_secrets(rows), self._codec.secrets, repr(self))

    async def close(self) -> None:
        """Close the pool; the store can be opened again."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _drop_schema(self) -> None:
        """Close the store and drop its schema with everything in it (for tests)."""
        import psycopg

        await self.close()
        try:
            conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
        except psycopg.Error as exc:
            raise self._connect_error(exc) from None
        async with conn:
            await conn.execute(f"DROP SCHEMA IF EXISTS {self._quoted} CASCADE")

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def schema_version(self) -> int:
        """Return the schema version stored in the database."""
        row = await self._one(_READ_VERSION, ())
        return int(row["version"]) if row else 0

    # -- calendars ---------------------------------------------------------

    async def add_calendar(self, calendar: Calendar) -> Calendar:
        """Store a new calendar; raises `CalendarExists` for a taken id or URL."""
        return await self._run(lambda conn: self._add_calendar(conn, calendar))

    async def ensure_calendar(self, calendar: Calendar) -> tuple[Calendar, bool]:
        """Store a calendar unless its owner has its URL; say whether it was added.

        The insert does nothing on a conflict (it waits for a racing insert to
        commit); the look-up after it then reads the winner's row.
        """
        return await self._run(lambda conn: self._ensure_calendar(conn, calendar))

    async def reseal_secrets(self) -> int:
        """Seal every calendar's feed secrets with the first key; count the calendars.

        Run it after putting a new key first in ``secret_keys`` (then drop the
        old key), or after setting keys for a store that kept secrets in clear.
        Raises `ValidationError` without keys, `StoreError` for a key that fits not.
        """
        return await self._run(self._reseal_secrets)

    async def _reseal_secrets(self, conn: _Connection) -> int:
        rows = await _fetch_all(conn, self._q(f"{_SECRET_COLUMNS} FOR UPDATE"), ())
        changed = reseal_rows(self._codec, rows)
        if changed:
            async with conn.cursor() as cursor:
                await cursor.executemany(self._q(_RESEAL), changed)
        return len(changed)

    async def get_calendar(
        self, calendar_id: str, *, owner: str | None = None
    ) -> Calendar:
        """Return one calendar (of ``owner`` if given); raises `CalendarNotFound`."""
        row = await self._one(_CALENDAR_BY_ID, (calendar_id,))
        if row is None or (owner is not None and row["owner"] != owner):
            raise calendar_not_found(calendar_id)
        return self._codec.calendar(row)

    async def list_calendars(self, *, owner: str | None = None) -> list[Calendar]:
        """Return the calendars of ``owner`` (all if None), oldest first."""
        rows = await self._all(_LIST_CALENDARS, {"owner": owner})
        return [self._codec.calendar(row) for row in rows]

    async def update_calendar(self, calendar: Calendar) -> Calendar:
        """Replace a calendar's settings; a new URL forgets ETag and body hash."""
        return await self._run(lambda conn: self._update_calendar(conn, calendar))

    async def remove_calendar(
        self, calendar_id: str, *, owner: str | None = None
    ) -> None:
        """Delete a calendar; its occurrences and notifications go with it."""
        count = await self._count(_DELETE_CALENDAR, {"id": calendar_id, "owner": owner})
        if count == 0:
            raise calendar_not_found(calendar_id)

    async def request_sync(self, calendar_id: str, now: datetime) -> None:
        """Ask for a manual sync; one made during a sync is kept for the next."""
        now = as_aware_utc(now)
        if await self._count(_REQUEST_SYNC, (now, calendar_id)) == 0:
            raise calendar_not_found(calendar_id)

    # -- syncing -----------------------------------------------------------

    async def claim_calendar(
        self, calendar_id: str, now: datetime, *, worker: str, lease_ttl: timedelta
    ) -> Lease | None:
        """Lease one calendar now, due or not; None while another lease holds it.

        Raises `CalendarNotFound`.
        """
        now = as_aware_utc(now)
        check_claim(1, worker, lease_ttl)
        params = {
            "id": calendar_id,
            "now": now,
            "worker": worker,
            "expires": now + lease_ttl,
        }
        return await self._run(lambda conn: self._claim_one(conn, params))

    async def claim_due_calendars(
        self, now: datetime, *, limit: int, worker: str, lease_ttl: timedelta
    ) -> list[Lease]:
        """Lease due calendars: requested ones first, then by ``next_sync_at``."""
        now = as_aware_utc(now)
        check_claim(limit, worker, lease_ttl)
        params = {
            "now": now,
            "limit": limit,
            "worker": worker,
            "expires": now + lease_ttl,
        }
        return await self._run(lambda conn: self._claim_calendars(conn, params))

    async def renew_lease(self, lease: Lease, now: datetime, ttl: timedelta) -> Lease:
        """Extend a held lease to ``now + ttl``; raises `LeaseLost` otherwise."""
        now = as_aware_utc(now)
        params = {**lease_params(lease), "expires": now + ttl}
        row = await self._one(_RENEW_LEASE, params)
        if row is None:
            raise lease_lost(lease)
        return attrs.evolve(
            lease, calendar=self._codec.calendar(row), expires_at=now + ttl
        )

    async def release_lease(self, lease: Lease) -> None:
        """Give a lease back; a lost one is ignored."""
        await self._count(_RELEASE_LEASE, lease_params(lease))

    async def apply_sync(
        self, lease: Lease, write: SyncWrite, now: datetime
    ) -> AppliedSync:
        """Write one sync's outcome in one transaction and release the lease."""
        now = as_aware_utc(now)
        return await self._run(lambda conn: self._apply(conn, lease, write, now))

    async def list_occurrences(
        self,
        calendar_id: str,
        window: Window | None = None,
        *,
        include_expired: bool = False,
    ) -> list[Occurrence]:
        """Return a calendar's occurrences overlapping ``window``, by start."""
        params = {
            "calendar_id": calendar_id,
            "expired": include_expired,
            "start": None if window is None else window.start,
            "end": None if window is None else window.end,
        }
        rows = await self._run(
            lambda conn: self._occurrences_of(conn, calendar_id, params)
        )
        return [_CODEC.occurrence(row) for row in rows]

    async def occurrences_starting(
        self, start: datetime, end: datetime
    ) -> list[tuple[str, Occurrence]]:
        """Return live occurrences of unpaused calendars starting in [start, end)."""
        start, end = as_aware_utc(start), as_aware_utc(end)
        rows = await self._all(_OCCURRENCES_STARTING, (start, end))
        return [(row["calendar_id"], _CODEC.occurrence(row)) for row in rows]

    # -- notifications -----------------------------------------------------

    async def add_notifications(
        self,
        calendar_id: str,
        notifications: Iterable[Notification],
        now: datetime,
        *,
        status: NotificationStatus = NotificationStatus.PENDING,
    ) -> int:
        """Insert notifications of stored occurrences as ``status``; count new ones.

        A pending insert revives a cancelled notification. Raises
        `CalendarNotFound`, and `ValidationError` unless pending or missed.
        """
        now = as_aware_utc(now)
        status = check_new_status(status)
        wanted = tuple(notifications)
        return await self._run(
            lambda conn: self._add_notifications(conn, calendar_id, wanted, now, status)
        )

    async def list_notifications(
        self,
        *,
        calendar_id: str | None = None,
        status: NotificationStatus | None = None,
        uid: str | None = None,
        starts: Window | None = None,
        limit: int = 1000,
    ) -> list[NotificationRecord]:
        """Return notifications, filtered, earliest fire time first."""
        check_limit(limit)
        statement, params = list_notifications_statement(
            calendar_id=calendar_id, status=status, uid=uid, starts=starts, limit=limit
        )
        rows = await self._all(statement, params)
        return [_CODEC.notification(row) for row in rows]

    async def notification_counts(
        self, *, calendar_id: str | None = None, owner: str | None = None
    ) -> dict[NotificationStatus, int]:
        """Count notifications by status (every status a key), from an index."""
        statement, params = notification_counts_statement(calendar_id, owner)
        rows = await self._all(statement, params)
        counts = dict.fromkeys(NotificationStatus, 0)
        counts.update((NotificationStatus(row["status"]), row["n"]) for row in rows)
        return counts

    async def claim_notifications(
        self, now: datetime, *, limit: int, worker: str, lease_ttl: timedelta
    ) -> list[NotificationClaim]:
        """Claim pending notifications due at ``now`` until ``now + lease_ttl``."""
        now = as_aware_utc(now)
        check_claim(limit, worker, lease_ttl)
        expires = now + lease_ttl
        params = {"now": now, "limit": limit, "worker": worker, "expires": expires}
        rows = await self._all(_CLAIM_NOTIFICATIONS, params)
        return [
            NotificationClaim(
                record=_CODEC.notification(row),
                occurrence=_CODEC.joined_occurrence(row),
                worker=worker,
                token=row["claim_token"],
                expires_at=expires,
            )
            for row in rows
        ]

    async def mark_delivered(self, claim: NotificationClaim, now: datetime) -> None:
        """Record a delivery, whoever holds the claim now."""
        now = as_aware_utc(now)
        await self._count(_MARK_DELIVERED, (now, claim.id))

    async def mark_failed(
        self,
        claim: NotificationClaim,
        now: datetime,
        *,
        error: str,
        retry_at: datetime | None,
    ) -> bool:
        """Record a failed attempt; retry at ``retry_at`` or dead-letter it."""
        as_aware_utc(now)
        params = {
            "error": error,
            "retry_at": None if retry_at is None else as_aware_utc(retry_at),
            "id": claim.id,
            "token": claim.token,
        }
        return await self._count(_MARK_FAILED, params) == 1

    async def release_claim(self, claim: NotificationClaim, now: datetime) -> bool:
        """Hand back a claim never attempted: due ``now``, its attempt uncounted."""
        params = {"id": claim.id, "token": claim.token, "now": as_aware_utc(now)}
        return await self._count(_RELEASE_CLAIM, params) == 1

    async def requeue(self, notification_ids: Iterable[str], now: datetime) -> int:
        """Make dead-letter notifications pending again, due now."""
        now = as_aware_utc(now)
        ids = sorted(set(notification_ids))
        if not ids:
            return 0
        return await self._count(_REQUEUE, (now, ids))

    # -- history and housekeeping -----------------------------------------

    async def record_job_run(self, run: JobRun) -> None:
        """Append one job run to the history."""
        from psycopg.types.json import Jsonb

        values = (
            run.job,
            run.started_at,
            run.finished_at,
            str(run.outcome),
            Jsonb(dict(run.counts)),
            run.error,
        )
        await self._count(_INSERT_JOB_RUN, values)

    async def recent_job_runs(
        self, *, job: str | None = None, limit: int = 100
    ) -> list[JobRun]:
        """Return the latest job runs, newest first."""
        check_limit(limit)
        statement = _RECENT_JOB_RUNS if job is None else _RECENT_RUNS_OF_JOB
        rows = await self._all(statement, {"job": job, "limit": limit})
        return [_CODEC.job_run(row) for row in rows]

    async def prune(
        self,
        *,
        occurrences_before: datetime,
        notifications_before: datetime,
        job_runs_before: datetime,
    ) -> PruneCounts:
        """Delete expired occurrences, settled notifications and old job runs."""
        bounds = (
            as_aware_utc(occurrences_before),
            as_aware_utc(notifications_before),
            as_aware_utc(job_runs_before),
        )
        return await self._run(lambda conn: self._prune(conn, *bounds))

    # -- transactions ------------------------------------------------------

    def _q(self, statement: str) -> str:
        """Return ``statement`` with its tables qualified by this store's schema."""
        return statement.replace("{s}", self._quoted)

    async def _run(
        self, work: Callable[[_Connection], Awaitable[_T]], *, single: bool = False
    ) -> _T:
        """Run ``work`` in one transaction; retry it if PostgreSQL broke a deadlock.

        ``single`` work is one statement, atomic on its own: it runs without
        BEGIN and COMMIT, which saves two round trips.
        """
        from psycopg import errors

        pool = self._require_pool()
        attempt = 1
        while True:
            try:
                async with pool.connection() as conn:
                    if single:
                        return await work(conn)
                    async with conn.transaction():
                        return await work(conn)
            except (errors.DeadlockDetected, errors.SerializationFailure) as exc:
                if attempt >= _ATTEMPTS:
                    raise self._store_error(exc) from None
                log.info(
                    "PostgreSQL aborted a transaction for a deadlock; retrying",
                    extra={"schema": self._schema, "attempt": attempt},
                )
                attempt += 1
            except errors.Error as exc:
                raise self._store_error(exc) from None

    async def _one(self, statement: str, params: Any) -> DictRow | None:
        return await self._run(
            lambda conn: _fetch_one(conn, self._q(statement), params), single=True
        )

    async def _all(self, statement: str, params: Any) -> list[DictRow]:
        return await self._run(
            lambda conn: _fetch_all(conn, self._q(statement), params), single=True
        )

    async def _count(self, statement: str, params: Any) -> int:
        return await self._run(
            lambda conn: _row_count(conn, self._q(statement), params), single=True
        )

    def _require_pool(self) -> _Pool:
        if self._pool is None:
            raise StoreError(
                f"the PostgresStore on {self._shown_url} is closed: open it first "
                "(async with store: ...)"
            )
        return self._pool

    def _store_error(self, exc: Exception) -> StoreError:
        """Describe a driver error without the values it may quote (URLs, secrets).

        The server's messages about constraint and data errors quote the values
        involved, so only their class and SQLSTATE are kept.
        """
        from psycopg import errors

        sqlstate = getattr(exc, "sqlstate", None)
        quotes_values = isinstance(exc, errors.IntegrityError | errors.DataError)
        detail = "" if sqlstate and quotes_values else f": {self._reason(exc)}"
        transient = isinstance(exc, errors.OperationalError)
        return (StoreUnavailable if transient else StoreError)(
            f"PostgreSQL ({self._shown_url}, schema {self._schema!r}) failed with "
            f"{type(exc).__name__} [{sqlstate or 'no SQLSTATE'}]{detail}"
        )

    def _reason(self, exc: Exception) -> str:
        """Return the first line of a driver message, with any password masked."""
        lines = str(exc).strip().splitlines()
        return _scrub(lines[0] if lines else type(exc).__name__, self._url)

    # -- opening -----------------------------------------------------------

    async def _migrate(self) -> None:
        """Create or migrate the schema under an advisory lock, in one transaction."""
        import psycopg

        try:
            conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
        except psycopg.Error as exc:
            raise self._connect_error(exc) from None
        try:
            async with conn, conn.transaction():
                await conn.execute(_LOCK_SCHEMA, (f"calsync schema {self._schema}",))
                await self._create_schema(conn)
                current = await self._stored_version(conn)
                self._check_version(current)
                await self._run_migrations(conn, current)
        except psycopg.Error as exc:
            raise self._store_error(exc) from None

    async def _create_schema(self, conn: AsyncConnection[Any]) -> None:
        cursor = await conn.execute(_SCHEMA_EXISTS, (self._schema,))
        if await cursor.fetchone() is None:
            await conn.execute(self._q(_CREATE_SCHEMA))

    async def _stored_version(self, conn: AsyncConnection[Any]) -> int:
        cursor = await conn.execute(
            _HAS_VERSION_TABLE, (f"{self._quoted}.schema_version",)
        )
        present = await cursor.fetchone()
        if not present or not present[0]:
            return 0
        cursor = await conn.execute(self._q(_READ_VERSION))
        row = await cursor.fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def _check_version(self, current: int) -> None:
        if current > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"schema {self._schema!r} on {self._shown_url} is at version "
                f"{current}, newer than version {SCHEMA_VERSION} that this calsync "
                "knows: upgrade calsync to use this database"
            )

    async def _run_migrations(self, conn: AsyncConnection[Any], current: int) -> None:
        for version, statements in MIGRATIONS:
            if version <= current:
                continue
            for statement in statements:
                await conn.execute(self._q(statement))
            log.info(
                "migrated the calsync schema",
                extra={"schema": self._schema, "version": version},
            )
        if current < SCHEMA_VERSION:
            await conn.execute(self._q(_CLEAR_VERSION))
            await conn.execute(self._q(_WRITE_VERSION), (SCHEMA_VERSION,))

    async def _start_pool(self) -> _Pool:
        from psycopg import AsyncConnection, Error
        from psycopg.rows import DictRow, dict_row
        from psycopg_pool import AsyncConnectionPool

        pool: _Pool = AsyncConnectionPool(
            self._url,
            connection_class=AsyncConnection[DictRow],
            kwargs={"autocommit": True, "row_factory": dict_row},
            min_size=self._min_size,
            max_size=self._max_size,
            name=f"calsync-{self._schema}",
            open=False,
        )
        try:
            await pool.open(wait=True)
        except Error as exc:
            await pool.close()
            raise self._connect_error(exc) from None
        return pool

    def _connect_error(self, exc: Exception) -> StoreError:
        return StoreUnavailable(
            f"cannot connect to PostgreSQL at {self._shown_url}: {self._reason(exc)}; "
            "check that the server runs and the connection string is right"
        )

    # -- work inside one transaction ------------------------------------------

    async def _add_calendar(self, conn: _Connection, calendar: Calendar) -> Calendar:
        if self._codec.secrets.sealing:  # taken under another key's look-up form?
            await self._check_url_free(conn, calendar)
        row = await _fetch_one(
            conn, self._q(_INSERT_CALENDAR), self._codec.calendar_row(calendar)
        )
        if row is not None:
            return self._codec.calendar(row)
        if await _fetch_one(conn, self._q(_CALENDAR_BY_ID), (calendar.id,)):
            raise CalendarExists(f"calendar {calendar.id} already exists")
        await self._check_url_free(conn, calendar)
        raise CalendarExists(f"calendar {calendar.label} already exists")

    async def _ensure_calendar(
        self, conn: _Connection, calendar: Calendar
    ) -> tuple[Calendar, bool]:
        params = (calendar.owner, self._codec.url_forms(calendar.url))
        row = await _fetch_one(conn, self._q(_CALENDAR_OF_OWNER), params)
        if row is not None:  # perhaps under the look-up form of an older key
            return self._codec.calendar(row), False
        row = await _fetch_one(
            conn, self._q(_INSERT_CALENDAR), self._codec.calendar_row(calendar)
        )
        if row is not None:
            return self._codec.calendar(row), True
        # Read committed: this statement sees the row the insert conflicted with.
        params = (calendar.owner, self._codec.url_forms(calendar.url))
        row = await _fetch_one(conn, self._q(_CALENDAR_OF_OWNER), params)
        if row is not None:
            return self._codec.calendar(row), False
        raise CalendarExists(
            f"calendar id {calendar.id!r} is taken: calendar {calendar.label} "
            "was not added"
        )

    async def _check_url_free(self, conn: _Connection, calendar: Calendar) -> None:
        forms = self._codec.url_forms(calendar.url)
        params = (calendar.owner, forms, calendar.id)
        row = await _fetch_one(conn, self._q(_CALENDAR_BY_URL), params)
        if row is not None:
            raise CalendarExists(
                f"owner {calendar.owner!r} already has this URL as calendar "
                f"{self._codec.calendar(row).label}"
            )

    async def _update_calendar(self, conn: _Connection, calendar: Calendar) -> Calendar:
        from psycopg import errors

        old = await _fetch_one(conn, self._q(_CALENDAR_BY_ID), (calendar.id,))
        if old is None:
            raise calendar_not_found(calendar.id)
        await self._check_url_free(conn, attrs.evolve(calendar, owner=old["owner"]))
        values = dict(
            zip(CALENDAR_COLUMNS, self._codec.calendar_row(calendar), strict=True)
        )
        try:
            row = await _fetch_one(conn, self._q(_UPDATE_CALENDAR), values)
        except errors.UniqueViolation:
            raise CalendarExists(
                f"another calendar of owner {old['owner']!r} took this URL while "
                f"{calendar.label} was being updated"
            ) from None
        if row is None:
            raise calendar_not_found(calendar.id)
        return self._codec.calendar(row)

    async def _claim_calendars(
        self, conn: _Connection, params: dict[str, Any]
    ) -> list[Lease]:
        requested = await _fetch_all(conn, self._q(_CLAIM_REQUESTED), params)
        requested.sort(key=lambda row: (row["sync_requested_at"], row["id"]))
        rows = list(requested)
        left = params["limit"] - len(rows)
        if left > 0:
            periodic_params = {**params, "limit": left}
            periodic = await _fetch_all(conn, self._q(_CLAIM_PERIODIC), periodic_params)
            periodic.sort(key=lambda row: (row["next_sync_at"], row["id"]))
            rows.extend(periodic)
        return [
            Lease(
                calendar=self._codec.calendar(row),
                worker=params["worker"],
                token=row["lease_token"],
                expires_at=params["expires"],
            )
            for row in rows
        ]

    async def _claim_one(
        self, conn: _Connection, params: dict[str, Any]
    ) -> Lease | None:
        row = await _fetch_one(conn, self._q(_CLAIM_ONE), params)
        if row is not None:
            return Lease(
                calendar=self._codec.calendar(row),
                worker=params["worker"],
                token=row["lease_token"],
                expires_at=params["expires"],
            )
        if await _fetch_one(conn, self._q(_CALENDAR_EXISTS), (params["id"],)) is None:
            raise calendar_not_found(params["id"])
        return None

    async def _apply(
        self, conn: _Connection, lease: Lease, write: SyncWrite, now: datetime
    ) -> AppliedSync:
        row = await _fetch_one(conn, self._q(_LOCK_LEASED), (lease.calendar_id,))
        if (
            row is None
            or row["lease_token"] != lease.token
            or row["lease_worker"] != lease.worker
        ):
            raise lease_lost(lease)
        cancelled = 0
        if write.changes is not None:
            await self._write_changes(conn, lease.calendar_id, write.changes)
            cancelled += await self._cancel_stale(
                conn, lease.calendar_id, write.changes
            )
        if write.cancel:
            cancelled += await self._cancel_asked(conn, lease.calendar_id, write.cancel)
        created = await self._insert_notifications(
            conn, lease.calendar_id, write.create, now
        )
        await self._write_state(conn, lease.calendar_id, write.state, now)
        return AppliedSync(created=created, cancelled=cancelled)

    async def _write_changes(
        self, conn: _Connection, calendar_id: str, changes: ChangeSet
    ) -> None:
        upserts = {o.key: o for o in (*changes.added, *changes.updated)}
        if upserts:
            rows = [_CODEC.occurrence_row(calendar_id, o) for o in upserts.values()]
            columns = [list(column) for column in zip(*rows, strict=True)]
            await conn.execute(self._q(_UPSERT_OCCURRENCES), columns)
        if changes.removed:
            await conn.execute(
                self._q(_DELETE_OCCURRENCES), (calendar_id, *_keys(changes.removed))
            )
        if changes.expired:
            await conn.execute(
                self._q(_EXPIRE_OCCURRENCES), (calendar_id, *_keys(changes.expired))
            )

    async def _cancel_stale(
        self, conn: _Connection, calendar_id: str, changes: ChangeSet
    ) -> int:
        """Cancel pending notifications of touched occurrences that went or moved."""
        touched = (*changes.added, *changes.updated, *changes.removed)
        if not touched:
            return 0
        params = (calendar_id, *_keys(touched))
        return await _row_count(conn, self._q(_CANCEL_STALE), params)

    async def _cancel_asked(
        self, conn: _Connection, calendar_id: str, cancel: Sequence[Notification]
    ) -> int:
        identities = (
            [n.key.uid for n in cancel],
            [n.key.recurrence_id for n in cancel],
            [micros(n.lead) for n in cancel],
            [n.start for n in cancel],
        )
        return await _row_count(
            conn, self._q(_CANCEL_ASKED), (calendar_id, *identities)
        )

    async def _write_state(
        self, conn: _Connection, calendar_id: str, state: SyncState, now: datetime
    ) -> None:
        if state.next_sync_at is None:
            state = attrs.evolve(state, next_sync_at=now)
        values = (*_CODEC.state_values(state), calendar_id)
        await conn.execute(self._q(_WRITE_STATE), values)

    async def _add_notifications(
        self,
        conn: _Connection,
        calendar_id: str,
        notifications: Sequence[Notification],
        now: datetime,
        status: NotificationStatus,
    ) -> int:
        # A key-share lock on the calendar waits out an apply_sync in progress
        # (which holds it FOR UPDATE), so the insert sees its occurrences.
        locked = await _fetch_one(conn, self._q(_LOCK_CALENDAR_KEY), (calendar_id,))
        if locked is None:
            raise calendar_not_found(calendar_id)
        return await self._insert_notifications(
            conn, calendar_id, notifications, now, status
        )

    async def _insert_notifications(
        self,
        conn: _Connection,
        calendar_id: str,
        notifications: Sequence[Notification],
        now: datetime,
        status: NotificationStatus = NotificationStatus.PENDING,
    ) -> int:
        unique = {notification_id(calendar_id, n): n for n in notifications}
        if not unique:
            return 0
        # Sorted by id: concurrent inserts take their locks in one order.
        ids = sorted(unique)
        chosen = [unique[key] for key in ids]
        params = {
            "now": now,
            "status": str(status),
            "calendar_id": calendar_id,
            "ids": ids,
            "uids": [n.key.uid for n in chosen],
            "recurrence_ids": [n.key.recurrence_id for n in chosen],
            "leads": [micros(n.lead) for n in chosen],
            "starts": [n.start for n in chosen],
            "fires": [n.fire_at for n in chosen],
        }
        revived = 0
        if status is NotificationStatus.PENDING:
            revived = await _row_count(conn, self._q(_REVIVE_NOTIFICATIONS), params)
        inserted = await _row_count(conn, self._q(_INSERT_NOTIFICATIONS), params)
        return revived + inserted

    async def _occurrences_of(
        self, conn: _Connection, calendar_id: str, params: dict[str, Any]
    ) -> list[DictRow]:
        if await _fetch_one(conn, self._q(_CALENDAR_BY_ID), (calendar_id,)) is None:
            raise calendar_not_found(calendar_id)
        return await _fetch_all(conn, self._q(_LIST_OCCURRENCES), params)

    async def _prune(
        self,
        conn: _Connection,
        occurrences_before: datetime,
        notifications_before: datetime,
        job_runs_before: datetime,
    ) -> PruneCounts:
        occurrences = await _row_count(
            conn, self._q(_PRUNE_OCCURRENCES), (occurrences_before,)
        )
        notifications = await _row_count(
            conn, self._q(_PRUNE_NOTIFICATIONS), (notifications_before,)
        )
        job_runs = await _row_count(conn, self._q(_PRUNE_JOB_RUNS), (job_runs_before,))
        return PruneCounts(
            occurrences=occurrences, notifications=notifications, job_runs=job_runs
        )


# -- helpers ---------------------------------------------------------------


def list_notifications_statement(
    *,
    calendar_id: str | None = None,
    status: NotificationStatus | None = None,
    uid: str | None = None,
    starts: Window | None = None,
    limit: int = 1000,
) -> tuple[str, dict[str, Any]]:
    """Return the SELECT (with ``{s}``) for `PostgresStore.list_notifications`.

    Only the filters asked for are in it, so each combination gets a plan of
    its own that uses its index, never a generic one that scans.
    """
    params: dict[str, Any] = {
        "calendar_id": calendar_id,
        "status": None if status is None else str(NotificationStatus(status)),
        "uid": uid,
        "starts_from": None if starts is None else starts.start,
        "starts_until": None if starts is None else starts.end,
        "limit": limit,
    }
    asked = {"calendar_id": calendar_id, "status": status, "uid": uid, "starts": starts}
    conditions = [
        _NOTIFICATION_FILTERS[name]
        for name, value in asked.items()
        if value is not None
    ]
    where = " AND ".join(conditions) or "true"
    return _LIST_NOTIFICATIONS.replace("{where}", where), params


def notification_counts_statement(
    calendar_id: str | None, owner: str | None = None
) -> tuple[str, dict[str, Any]]:
    """Return the SELECT (with ``{s}``) for `PostgresStore.notification_counts`."""
    and_calendar = "" if calendar_id is None else "AND calendar_id = %(calendar_id)s"
    if owner is not None:
        and_calendar += (
            " AND calendar_id IN (SELECT id FROM {s}.calendars WHERE owner = %(owner)s)"
        )
    params = {
        "statuses": [str(status) for status in NotificationStatus],
        "calendar_id": calendar_id,
        "owner": owner,
    }
    return _COUNT_NOTIFICATIONS.replace("{and_calendar}", and_calendar), params


def _require_driver() -> None:
    """Fail early, and helpfully, when the optional driver is not installed."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        raise StoreError(f"PostgresStore needs psycopg 3: {_INSTALL_HINT}") from exc


def _quote(name: str) -> str:
    """Return ``name`` as a safely quoted SQL identifier."""
    from psycopg import sql

    return sql.Identifier(name).as_string()


async def _fetch_one(conn: _Connection, statement: str, params: Any) -> DictRow | None:
    cursor = await conn.execute(statement, params)
    return await cursor.fetchone()


async def _fetch_all(conn: _Connection, statement: str, params: Any) -> list[DictRow]:
    cursor = await conn.execute(statement, params)
    return await cursor.fetchall()


async def _row_count(conn: _Connection, statement: str, params: Any) -> int:
    cursor = await conn.execute(statement, params)
    return max(cursor.rowcount, 0)


def _keys(occurrences: Iterable[Occurrence]) -> tuple[list[str], list[str]]:
    keys = [occurrence.key for occurrence in occurrences]
    return [key.uid for key in keys], [key.recurrence_id for key in keys]


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


def _scrub(text: str, url: str) -> str:
    """Mask the connection string's password should a driver message quote it."""
    return scrub_secrets(text, url)
