"""`SQLiteStore`: the embedded default, one file, safe for several processes.

Each store owns one connection that lives on one dedicated thread. Every Store
method runs its whole transaction as one function on that thread, so a method
costs one thread hop however many statements it runs. Write transactions start
with ``BEGIN IMMEDIATE``: claims are serialized across processes on one host.
Instants are stored as integer microseconds since the epoch, booleans as 0/1.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

import attrs

from calsync.core.errors import (
    CalendarExists,
    SchemaVersionError,
    StoreError,
    StoreUnavailable,
    ValidationError,
)
from calsync.core.model import ChangeSet, Notification, Occurrence, Window, as_aware_utc
from calsync.stores._rows import (
    CALENDAR_COLUMNS,
    NOTIFICATION_COLUMNS,
    OCCURRENCE_COLUMNS,
    SETTINGS_COLUMNS,
    STATE_COLUMNS,
    Codec,
    column_list,
    epoch_micros,
    from_epoch_micros,
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

__all__ = ["SQLiteStore"]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

CODEC = Codec(epoch_micros, from_epoch_micros)

MIN_SQLITE = (3, 24, 0)
"""The oldest SQLite with upserts (``ON CONFLICT ... DO``), which the store needs."""

_BEGIN_READ = "BEGIN"
_BEGIN_WRITE = "BEGIN IMMEDIATE"

# -- schema ------------------------------------------------------------------

_SCHEMA_V1 = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    """
    CREATE TABLE calendars (
        id TEXT NOT NULL PRIMARY KEY,
        owner TEXT NOT NULL,
        url TEXT NOT NULL,
        name TEXT,
        schedule TEXT NOT NULL,
        leads TEXT NOT NULL,
        tz TEXT,
        window_past INTEGER NOT NULL,
        horizon INTEGER NOT NULL,
        use_alarms INTEGER NOT NULL,
        auth TEXT,
        paused INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        etag TEXT,
        last_modified TEXT,
        body_hash TEXT,
        last_attempt_at INTEGER,
        last_success_at INTEGER,
        last_error TEXT,
        consecutive_failures INTEGER NOT NULL,
        next_sync_at INTEGER NOT NULL,
        circuit TEXT NOT NULL,
        held_removals INTEGER NOT NULL,
        held_removals_hash TEXT,
        sync_requested_at INTEGER,
        lease_worker TEXT,
        lease_token INTEGER NOT NULL DEFAULT 0,
        lease_expires_at INTEGER,
        lease_claimed_at INTEGER,
        UNIQUE (owner, url)
    )
    """,
    "CREATE INDEX calendars_due ON calendars (next_sync_at) WHERE NOT paused",
    """
    CREATE INDEX calendars_requested ON calendars (sync_requested_at)
    WHERE sync_requested_at IS NOT NULL
    """,
    """
    CREATE TABLE occurrences (
        calendar_id TEXT NOT NULL REFERENCES calendars (id) ON DELETE CASCADE,
        uid TEXT NOT NULL,
        recurrence_id TEXT NOT NULL,
        start_at INTEGER NOT NULL,
        end_at INTEGER NOT NULL,
        all_day INTEGER NOT NULL,
        summary TEXT NOT NULL,
        location TEXT NOT NULL,
        description TEXT NOT NULL,
        status TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        tzid TEXT,
        start_date TEXT,
        end_date TEXT,
        alarms TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        expired INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (calendar_id, uid, recurrence_id)
    )
    """,
    """
    CREATE INDEX occurrences_by_calendar_start
    ON occurrences (calendar_id, start_at)
    """,
    """
    CREATE INDEX occurrences_live_by_start ON occurrences (start_at)
    WHERE NOT expired
    """,
    """
    CREATE TABLE notifications (
        id TEXT NOT NULL PRIMARY KEY,
        calendar_id TEXT NOT NULL REFERENCES calendars (id) ON DELETE CASCADE,
        uid TEXT NOT NULL,
        recurrence_id TEXT NOT NULL,
        lead INTEGER NOT NULL,
        start_at INTEGER NOT NULL,
        fire_at INTEGER NOT NULL,
        status TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        due_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        delivered_at INTEGER,
        claim_worker TEXT,
        claim_token INTEGER NOT NULL DEFAULT 0,
        UNIQUE (calendar_id, uid, recurrence_id, lead, start_at)
    )
    """,
    """
    CREATE INDEX notifications_due ON notifications (due_at)
    WHERE status = 'pending'
    """,
    """
    CREATE INDEX notifications_failed ON notifications (fire_at)
    WHERE status = 'failed'
    """,
    """
    CREATE TABLE job_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        finished_at INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        counts TEXT NOT NULL,
        error TEXT
    )
    """,
    "CREATE INDEX job_runs_by_finish ON job_runs (finished_at)",
)

# Version 2: sync state keeps when the body was parsed and the feed's
# REFRESH-INTERVAL; notifications are counted by status and found by start and UID;
# job runs are found by job.
_SCHEMA_V2 = (
    "ALTER TABLE calendars ADD COLUMN parsed_at INTEGER",
    "ALTER TABLE calendars ADD COLUMN refresh_interval INTEGER",
    "CREATE INDEX notifications_by_status ON notifications (status, calendar_id)",
    "CREATE INDEX notifications_by_start ON notifications (start_at)",
    "CREATE INDEX notifications_by_uid ON notifications (uid)",
    "CREATE INDEX job_runs_by_job ON job_runs (job, finished_at, id)",
)

# Version 3: a URL that carries a secret is kept sealed (encrypted), the url
# column holding its look-up form; credentials are sealed in the auth column.
_SCHEMA_V3 = ("ALTER TABLE calendars ADD COLUMN url_sealed TEXT",)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_SCHEMA_V1, _SCHEMA_V2, _SCHEMA_V3)
"""The statements that bring the schema from version N to N + 1, at index N."""

assert len(MIGRATIONS) == SCHEMA_VERSION, "one migration per schema version"

# -- statements ----------------------------------------------------------------

_SELECT_CALENDARS = f"SELECT {column_list(CALENDAR_COLUMNS)} FROM calendars"
_INSERT_CALENDAR = (
    f"INSERT INTO calendars ({column_list(CALENDAR_COLUMNS)}) "
    f"VALUES ({', '.join(':' + column for column in CALENDAR_COLUMNS)})"
)
# Every right-hand side sees the row before the update: ``url`` is the old URL.
_UPDATE_SETTINGS = (
    "UPDATE calendars SET "
    + ", ".join(f"{column} = :{column}" for column in SETTINGS_COLUMNS)
    + ", etag = CASE WHEN url = :url THEN etag END"
    + ", last_modified = CASE WHEN url = :url THEN last_modified END"
    + ", body_hash = CASE WHEN url = :url THEN body_hash END"
    + " WHERE id = :id"
)
_CLAIM_ONE = f"""
    {_SELECT_CALENDARS.replace("SELECT ", "SELECT lease_token, lease_expires_at, ", 1)}
    WHERE id = :id
"""
_CLAIM_REQUESTED = f"""
    {_SELECT_CALENDARS.replace("SELECT ", "SELECT lease_token, ", 1)}
    WHERE sync_requested_at IS NOT NULL
      AND (lease_expires_at IS NULL OR lease_expires_at <= :now)
    ORDER BY sync_requested_at, id
    LIMIT :limit
"""
_CLAIM_PERIODIC = f"""
    {_SELECT_CALENDARS.replace("SELECT ", "SELECT lease_token, ", 1)}
    WHERE NOT paused AND next_sync_at <= :now
      AND sync_requested_at IS NULL
      AND (lease_expires_at IS NULL OR lease_expires_at <= :now)
    ORDER BY next_sync_at, id
    LIMIT :limit
"""
_TAKE_LEASE = """
    UPDATE calendars
    SET lease_worker = :worker, lease_token = lease_token + 1,
        lease_expires_at = :expires_at, lease_claimed_at = :now
    WHERE id = :id
"""
_HOLDS_LEASE = "id = :id AND lease_token = :token AND lease_worker = :worker"
# A request made after the claim survives the apply: that sync may predate it.
_FINISH_SYNC = (
    "UPDATE calendars SET "
    + ", ".join(f"{column} = :{column}" for column in STATE_COLUMNS)
    + """,
        sync_requested_at = CASE WHEN sync_requested_at <= lease_claimed_at
                            THEN NULL ELSE sync_requested_at END,
        lease_worker = NULL, lease_expires_at = NULL, lease_claimed_at = NULL
    WHERE id = :id
    """
)
_UPSERT_OCCURRENCE = (
    f"INSERT INTO occurrences ({column_list(OCCURRENCE_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in OCCURRENCE_COLUMNS)}) "
    "ON CONFLICT (calendar_id, uid, recurrence_id) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in OCCURRENCE_COLUMNS[3:])
    + ", expired = 0"
)
_OCCURRENCE_KEY = "calendar_id = ? AND uid = ? AND recurrence_id = ?"
_CANCEL_STALE = """
    UPDATE notifications SET status = 'cancelled'
    WHERE calendar_id = ? AND uid = ? AND recurrence_id = ? AND status = 'pending'
      AND NOT EXISTS (
        SELECT 1 FROM occurrences AS o
        WHERE o.calendar_id = notifications.calendar_id
          AND o.uid = notifications.uid
          AND o.recurrence_id = notifications.recurrence_id
          AND o.start_at = notifications.start_at
      )
"""
_CANCEL_ASKED = """
    UPDATE notifications SET status = 'cancelled'
    WHERE calendar_id = ? AND uid = ? AND recurrence_id = ? AND lead = ?
      AND start_at = ? AND status = 'pending'
"""
# A pending insert revives a cancelled row; an unfinished claim keeps its due_at.
_REVIVE_NOTIFICATION = """
    UPDATE notifications SET status = 'pending', due_at = max(due_at, :fire_at)
    WHERE id = :id AND status = 'cancelled' AND :status = 'pending'
      AND EXISTS (
        SELECT 1 FROM occurrences
        WHERE calendar_id = :calendar_id AND uid = :uid
          AND recurrence_id = :recurrence_id AND start_at = :start_at
          AND NOT expired
      )
"""
# No conflict target: a notification taken by any unique key is left alone.
# The WHERE before ON CONFLICT is required: it ends the SELECT unambiguously.
_INSERT_NOTIFICATION = """
    INSERT INTO notifications (
        id, calendar_id, uid, recurrence_id, lead, start_at, fire_at,
        status, created_at, due_at, attempts
    )
    SELECT :id, calendar_id, uid, recurrence_id, :lead, start_at, :fire_at,
           :status, :now, :fire_at, 0
    FROM occurrences
    WHERE calendar_id = :calendar_id AND uid = :uid
      AND recurrence_id = :recurrence_id AND start_at = :start_at AND NOT expired
    ON CONFLICT DO NOTHING
"""
_NOTIFICATION_SELECT = column_list(NOTIFICATION_COLUMNS, "n.")
_CLAIMED_OCCURRENCE_SELECT = ", ".join(
    f"o.{column} AS o_{column}" for column in OCCURRENCE_COLUMNS
)
_CLAIM_NOTIFICATIONS = f"""
    SELECT {_NOTIFICATION_SELECT}, n.claim_token, {_CLAIMED_OCCURRENCE_SELECT}
    FROM notifications AS n
    LEFT JOIN occurrences AS o
      ON o.calendar_id = n.calendar_id AND o.uid = n.uid
     AND o.recurrence_id = n.recurrence_id
    WHERE n.status = 'pending' AND n.due_at <= :now
    ORDER BY n.due_at, n.id
    LIMIT :limit
"""
_TAKE_CLAIM = """
    UPDATE notifications
    SET claim_worker = :worker, claim_token = claim_token + 1, due_at = :due_at,
        attempts = attempts + 1
    WHERE id = :id
"""
_MARK_DELIVERED = """
    UPDATE notifications SET status = 'delivered', delivered_at = :now
    WHERE id = :id AND status <> 'delivered'
"""
_MARK_FAILED = """
    UPDATE notifications
    SET last_error = :error,
        due_at = COALESCE(:retry_at, due_at),
        status = CASE WHEN :retry_at IS NULL THEN 'failed' ELSE 'pending' END
    WHERE id = :id AND claim_token = :token AND status = 'pending'
"""
_RELEASE_CLAIM = """
    UPDATE notifications
    SET due_at = :now, attempts = attempts - 1, claim_token = claim_token + 1
    WHERE id = :id AND claim_token = :token AND status = 'pending'
"""
_REQUEUE = """
    UPDATE notifications SET status = 'pending', due_at = ?, attempts = 0
    WHERE id = ? AND status = 'failed'
"""
_OCCURRENCES_STARTING = f"""
    SELECT {column_list(OCCURRENCE_COLUMNS, "o.")}
    FROM occurrences AS o JOIN calendars AS c ON c.id = o.calendar_id
    WHERE NOT o.expired AND o.start_at >= :start AND o.start_at < :end
      AND NOT c.paused
    ORDER BY o.start_at, o.calendar_id, o.uid, o.recurrence_id
"""


class SQLiteStore:
    """A `Store` in one SQLite file: the embedded default.

    Several processes on one host may share the file; each store object holds
    one connection on its own thread. ``busy_timeout`` is how long a write
    waits for another connection's write to finish before it fails.
    ``secret_keys`` (Fernet keys, newest first) encrypt feed secrets at rest;
    see `reseal_secrets` to rotate them.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: timedelta = timedelta(seconds=30),
        secret_keys: Sequence[str] = (),
    ) -> None:
        if busy_timeout < timedelta(0):
            raise ValidationError(f"busy_timeout must be >= 0, got {busy_timeout!r}")
        self._codec = attrs.evolve(CODEC, secrets=SecretBox(secret_keys))
        self._path = os.fspath(path)
        self._busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._connection: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        state = "open" if self._executor is not None else "closed"
        return f"SQLiteStore({self._path!r}, {state})"

    # -- lifecycle -----------------------------------------------------------

    async def open(self) -> None:
        """Connect, then create the schema or migrate it to `SCHEMA_VERSION`.

        Raises `SchemaVersionError`, leaving the file untouched, if it holds a
        newer schema. Opening an open store does nothing.
        """
        if self._executor is not None:
            return
        executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="calsync-sqlite"
        )
        self._executor = executor
        loop = asyncio.get_running_loop()
        try:
            version = await loop.run_in_executor(executor, self._connect)
        except BaseException as exc:
            self._executor = None
            executor.submit(self._disconnect)
            executor.shutdown(wait=False)
            if isinstance(exc, sqlite3.Error):
                raise self._store_error(exc) from exc
            raise
        logger.debug(
            "opened SQLite store",
            extra={"path": self._path, "schema_version": version},
        )
        rows = await self._read(_fetch_all, _SECRET_COLUMNS, {})
        warn_clear_secrets(clear_secrets(rows), self._codec.secrets, repr(self))

    async def close(self) -> None:
        """Close the connection and stop its thread; the store can be reopened."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        loop = asyncio.get_running_loop()
        closed = loop.run_in_executor(executor, self._disconnect)
        executor.shutdown(wait=False)
        await closed

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
        """Return the schema version stored in the file."""
        return await self._read(_stored_version)

    # -- calendars -----------------------------------------------------------

    async def add_calendar(self, calendar: Calendar) -> Calendar:
        """Store a new calendar, due at once unless its state names a time.

        Raises `CalendarExists` if the id, or the URL for that owner, is taken.
        """
        next_sync_at = calendar.state.next_sync_at or calendar.created_at
        stored = attrs.evolve(
            calendar, state=attrs.evolve(calendar.state, next_sync_at=next_sync_at)
        )
        await self._write(_add_calendar, self._codec, stored)
        return stored

    async def ensure_calendar(self, calendar: Calendar) -> tuple[Calendar, bool]:
        """Store a calendar unless its owner has its URL; say whether it was added.

        The look-up and the insert share one write transaction, so concurrent
        callers serialize on the write lock and store one calendar.
        """
        next_sync_at = calendar.state.next_sync_at or calendar.created_at
        stored = attrs.evolve(
            calendar, state=attrs.evolve(calendar.state, next_sync_at=next_sync_at)
        )
        return await self._write(_ensure_calendar, self._codec, stored)

    async def reseal_secrets(self) -> int:
        """Seal every calendar's feed secrets with the first key; count the calendars.

        Run it after putting a new key first in ``secret_keys`` (then drop the
        old key), or after setting keys for a store that kept secrets in clear.
        Raises `ValidationError` without keys, `StoreError` for a key that fits not.
        """
        return await self._write(_reseal_secrets, self._codec)

    async def get_calendar(
        self, calendar_id: str, *, owner: str | None = None
    ) -> Calendar:
        """Return one calendar; with ``owner``, only if it is theirs.

        Raises `CalendarNotFound`.
        """
        return await self._read(_calendar, self._codec, calendar_id, owner)

    async def list_calendars(self, *, owner: str | None = None) -> list[Calendar]:
        """Return the calendars of ``owner`` (all if None), oldest first."""
        return await self._read(_list_calendars, self._codec, owner)

    async def update_calendar(self, calendar: Calendar) -> Calendar:
        """Replace a calendar's settings, keeping its id, owner and sync state.

        A new URL forgets ETag, Last-Modified and body hash. Raises
        `CalendarNotFound`, or `CalendarExists` if the URL is taken for the owner.
        """
        return await self._write(_update_calendar, self._codec, calendar)

    async def remove_calendar(
        self, calendar_id: str, *, owner: str | None = None
    ) -> None:
        """Delete a calendar with its occurrences and notifications.

        Raises `CalendarNotFound`.
        """
        await self._write(_remove_calendar, calendar_id, owner)

    async def request_sync(self, calendar_id: str, now: datetime) -> None:
        """Ask for a manual sync that the next claim takes first, paused or not.

        Raises `CalendarNotFound`.
        """
        now = as_aware_utc(now)
        await self._write(_request_sync, calendar_id, now)

    # -- syncing -------------------------------------------------------------

    async def claim_calendar(
        self, calendar_id: str, now: datetime, *, worker: str, lease_ttl: timedelta
    ) -> Lease | None:
        """Lease one calendar now, due or not; None while another lease holds it.

        Raises `CalendarNotFound`.
        """
        now = as_aware_utc(now)
        check_claim(1, worker, lease_ttl)
        return await self._write(
            _claim_calendar, self._codec, calendar_id, now, worker, lease_ttl
        )

    async def claim_due_calendars(
        self, now: datetime, *, limit: int, worker: str, lease_ttl: timedelta
    ) -> list[Lease]:
        """Lease up to ``limit`` due calendars: requested ones first, then by time."""
        now = as_aware_utc(now)
        check_claim(limit, worker, lease_ttl)
        return await self._write(
            _claim_calendars, self._codec, now, limit, worker, lease_ttl
        )

    async def renew_lease(self, lease: Lease, now: datetime, ttl: timedelta) -> Lease:
        """Extend a lease that is still held; raises `LeaseLost` otherwise."""
        now = as_aware_utc(now)
        return await self._write(_renew_lease, self._codec, lease, now + ttl)

    async def release_lease(self, lease: Lease) -> None:
        """Give a lease back without writing; a lost lease is ignored."""
        await self._write(_release_lease, lease)

    async def apply_sync(
        self, lease: Lease, write: SyncWrite, now: datetime
    ) -> AppliedSync:
        """Write one sync's outcome in one transaction and release the lease.

        Raises `LeaseLost`, writing nothing, if the lease is not held any more.
        """
        now = as_aware_utc(now)
        return await self._write(_apply_sync, lease, write, now)

    async def list_occurrences(
        self,
        calendar_id: str,
        window: Window | None = None,
        *,
        include_expired: bool = False,
    ) -> list[Occurrence]:
        """Return a calendar's occurrences overlapping ``window``, by start.

        Raises `CalendarNotFound`.
        """
        return await self._read(_list_occurrences, calendar_id, window, include_expired)

    async def occurrences_starting(
        self, start: datetime, end: datetime
    ) -> list[tuple[str, Occurrence]]:
        """Return live occurrences of unpaused calendars starting in [start, end)."""
        start, end = as_aware_utc(start), as_aware_utc(end)
        return await self._read(_occurrences_starting, start, end)

    # -- notifications -------------------------------------------------------

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
        return await self._write(_add_notifications, calendar_id, wanted, now, status)

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
        rows = await self._read(_fetch_all, statement, params)
        return [CODEC.notification(row) for row in rows]

    async def notification_counts(
        self, *, calendar_id: str | None = None, owner: str | None = None
    ) -> dict[NotificationStatus, int]:
        """Count notifications by status (every status a key), from an index."""
        statement, params = notification_counts_statement(calendar_id, owner)
        rows = await self._read(_fetch_all, statement, params)
        counts = dict.fromkeys(NotificationStatus, 0)
        counts.update((NotificationStatus(row["status"]), row["n"]) for row in rows)
        return counts

    async def claim_notifications(
        self, now: datetime, *, limit: int, worker: str, lease_ttl: timedelta
    ) -> list[NotificationClaim]:
        """Claim up to ``limit`` due pending notifications until ``now + lease_ttl``."""
        now = as_aware_utc(now)
        check_claim(limit, worker, lease_ttl)
        return await self._write(_claim_notifications, now, limit, worker, lease_ttl)

    async def mark_delivered(self, claim: NotificationClaim, now: datetime) -> None:
        """Record a delivery, also when the claim has since expired."""
        now = as_aware_utc(now)
        params = {"id": claim.id, "now": epoch_micros(now)}
        await self._write(_execute, _MARK_DELIVERED, params)

    async def mark_failed(
        self,
        claim: NotificationClaim,
        now: datetime,
        *,
        error: str,
        retry_at: datetime | None,
    ) -> bool:
        """Record a failed attempt: retry at ``retry_at``, or dead-letter it if None.

        Returns False, changing nothing, if the claim was taken over or the
        notification is no longer pending.
        """
        as_aware_utc(now)
        retry = None if retry_at is None else epoch_micros(as_aware_utc(retry_at))
        params = {
            "id": claim.id,
            "token": claim.token,
            "error": error,
            "retry_at": retry,
        }
        return await self._write(_execute, _MARK_FAILED, params) == 1

    async def release_claim(self, claim: NotificationClaim, now: datetime) -> bool:
        """Hand back a claim never attempted: due ``now``, its attempt uncounted."""
        params = {
            "id": claim.id,
            "token": claim.token,
            "now": epoch_micros(as_aware_utc(now)),
        }
        return await self._write(_execute, _RELEASE_CLAIM, params) == 1

    async def requeue(self, notification_ids: Iterable[str], now: datetime) -> int:
        """Make dead-letter notifications pending again, due ``now``; count them."""
        due_at = epoch_micros(as_aware_utc(now))
        rows = [(due_at, notification_id_) for notification_id_ in notification_ids]
        return await self._write(_execute_many, _REQUEUE, rows)

    # -- history and housekeeping -------------------------------------------

    async def record_job_run(self, run: JobRun) -> None:
        """Append one job run to the history."""
        await self._write(_record_job_run, run)

    async def recent_job_runs(
        self, *, job: str | None = None, limit: int = 100
    ) -> list[JobRun]:
        """Return the latest job runs, newest first."""
        check_limit(limit)
        return await self._read(_recent_job_runs, job, limit)

    async def prune(
        self,
        *,
        occurrences_before: datetime,
        notifications_before: datetime,
        job_runs_before: datetime,
    ) -> PruneCounts:
        """Delete expired occurrences, settled notifications and old job runs."""
        cutoffs = (
            epoch_micros(as_aware_utc(occurrences_before)),
            epoch_micros(as_aware_utc(notifications_before)),
            epoch_micros(as_aware_utc(job_runs_before)),
        )
        return await self._write(_prune, *cutoffs)

    # -- the connection thread ----------------------------------------------

    async def _read(
        self,
        work: Callable[Concatenate[sqlite3.Connection, P], T],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        return await self._submit(_BEGIN_READ, lambda conn: work(conn, *args, **kwargs))

    async def _write(
        self,
        work: Callable[Concatenate[sqlite3.Connection, P], T],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        return await self._submit(
            _BEGIN_WRITE, lambda conn: work(conn, *args, **kwargs)
        )

    async def _submit(self, begin: str, work: Callable[[sqlite3.Connection], T]) -> T:
        executor = self._executor
        if executor is None:
            raise StoreError(
                f"the SQLite store at {self._path} is closed: use "
                "`async with SQLiteStore(...)` or call open() first"
            )
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                executor, self._in_transaction, begin, work
            )
        except sqlite3.Error as exc:
            raise self._store_error(exc) from exc

    def _in_transaction(self, begin: str, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one transaction on the connection thread."""
        conn = self._connection
        if conn is None:
            raise StoreError(f"the SQLite store at {self._path} is not connected")
        return _transaction(conn, begin, work)

    def _connect(self) -> int:
        """Open the connection (on its thread) and bring the schema up to date.

        SQLite can refuse at once, without waiting on ``busy_timeout``, while
        another process switches a new file to WAL; such a refusal is retried
        until the timeout is spent.
        """
        deadline = time.monotonic() + self._busy_timeout.total_seconds()
        while True:
            try:
                return self._connect_once()
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or time.monotonic() >= deadline:
                    raise
            time.sleep(0.02)

    def _connect_once(self) -> int:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StoreError(
                f"SQLite {sqlite3.sqlite_version} is too old for calsync: it needs "
                f"{'.'.join(map(str, MIN_SQLITE))} or newer"
            )
        conn = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout.total_seconds(),
            isolation_level=None,
        )
        try:
            conn.row_factory = _dict_row
            conn.execute("PRAGMA foreign_keys = ON")
            _refuse_newer(conn, self._path)
            _use_wal(conn, self._path)
            conn.execute("PRAGMA synchronous = FULL")
            version = _migrate(conn, self._path)
        except BaseException:
            conn.close()
            raise
        self._connection = conn
        return version

    def _disconnect(self) -> None:
        conn, self._connection = self._connection, None
        if conn is not None:
            conn.close()

    def _store_error(self, exc: sqlite3.Error) -> StoreError:
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            return StoreUnavailable(
                f"the SQLite store at {self._path} stayed locked by another "
                f"connection for longer than busy_timeout ({self._busy_timeout}); "
                "nothing was written, try again"
            )
        return StoreError(
            f"the SQLite store at {self._path} failed: {exc}; the transaction "
            "was rolled back"
        )


# -- transactions and schema ---------------------------------------------------


def _dict_row(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> dict[str, Any]:
    names = (column[0] for column in cursor.description)
    return dict(zip(names, values, strict=True))


def _transaction(
    conn: sqlite3.Connection, begin: str, work: Callable[[sqlite3.Connection], T]
) -> T:
    conn.execute(begin)
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return result


def _rollback(conn: sqlite3.Connection) -> None:
    if not conn.in_transaction:
        return  # SQLite already rolled back (e.g. disk full)
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        logger.exception("rolling back a failed SQLite transaction failed")


def _use_wal(conn: sqlite3.Connection, path: str) -> None:
    """Switch to WAL: readers never block the writer, and a commit is one append."""
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()["journal_mode"]
    if mode != "wal" and path != ":memory:":
        logger.warning(
            "SQLite store cannot use WAL here; it falls back to a rollback journal",
            extra={"path": path, "journal_mode": mode},
        )


def _stored_version(conn: sqlite3.Connection) -> int:
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if found is None:
        return 0
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    return 0 if row is None else int(row["version"])


def _check_version(version: int, path: str) -> None:
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the SQLite store at {path} has schema version {version}, but this "
            f"calsync only knows version {SCHEMA_VERSION}: upgrade calsync"
        )


def _refuse_newer(conn: sqlite3.Connection, path: str) -> None:
    """Refuse a newer schema before anything (even the journal mode) is written."""
    version = _transaction(conn, _BEGIN_READ, _stored_version)
    _check_version(version, path)


def _migrate(conn: sqlite3.Connection, path: str) -> int:
    """Create or migrate the schema; concurrent openers serialize on the write lock."""

    def run(conn: sqlite3.Connection) -> int:
        current = _stored_version(conn)
        _check_version(current, path)
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version - 1]:
                conn.execute(statement)
        if current < SCHEMA_VERSION:
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            logger.info(
                "migrated SQLite store",
                extra={
                    "path": path,
                    "from_version": current,
                    "to_version": SCHEMA_VERSION,
                },
            )
        return SCHEMA_VERSION

    return _transaction(conn, _BEGIN_WRITE, run)


# -- work done inside one transaction ------------------------------------------


def _execute(conn: sqlite3.Connection, sql: str, params: dict[str, Any]) -> int:
    return conn.execute(sql, params).rowcount


def _execute_many(conn: sqlite3.Connection, sql: str, rows: Sequence[Any]) -> int:
    return conn.executemany(sql, rows).rowcount if rows else 0


def _calendar_row(
    conn: sqlite3.Connection, calendar_id: str, owner: str | None = None
) -> dict[str, Any]:
    row: dict[str, Any] | None = conn.execute(
        f"{_SELECT_CALENDARS} WHERE id = ?", (calendar_id,)
    ).fetchone()
    if row is None or (owner is not None and row["owner"] != owner):
        raise calendar_not_found(calendar_id)
    return row


def _require_calendar(conn: sqlite3.Connection, calendar_id: str) -> None:
    found = conn.execute(
        "SELECT 1 FROM calendars WHERE id = ?", (calendar_id,)
    ).fetchone()
    if found is None:
        raise calendar_not_found(calendar_id)


def _calendar(
    conn: sqlite3.Connection, codec: Codec, calendar_id: str, owner: str | None
) -> Calendar:
    return codec.calendar(_calendar_row(conn, calendar_id, owner))


def _list_calendars(
    conn: sqlite3.Connection, codec: Codec, owner: str | None
) -> list[Calendar]:
    if owner is None:
        rows = conn.execute(f"{_SELECT_CALENDARS} ORDER BY created_at, id")
    else:
        rows = conn.execute(
            f"{_SELECT_CALENDARS} WHERE owner = ? ORDER BY created_at, id", (owner,)
        )
    return [codec.calendar(row) for row in rows]


def _add_calendar(conn: sqlite3.Connection, codec: Codec, calendar: Calendar) -> None:
    forms = codec.url_forms(calendar.url)
    taken = conn.execute(
        "SELECT id FROM calendars WHERE id = ? "
        f"OR (owner = ? AND url IN ({_marks(forms)}))",
        (calendar.id, calendar.owner, *forms),
    ).fetchone()
    if taken is not None and taken["id"] == calendar.id:
        raise CalendarExists(
            f"calendar id {calendar.id!r} is taken: pick another id, or "
            "update the stored calendar instead"
        )
    if taken is not None:
        raise CalendarExists(
            f"owner {calendar.owner!r} already has this URL as calendar "
            f"{taken['id']!r}: calendar {calendar.label} was not added"
        )
    values = dict(zip(CALENDAR_COLUMNS, codec.calendar_row(calendar), strict=True))
    conn.execute(_INSERT_CALENDAR, values)


def _ensure_calendar(
    conn: sqlite3.Connection, codec: Codec, calendar: Calendar
) -> tuple[Calendar, bool]:
    forms = codec.url_forms(calendar.url)
    row = conn.execute(
        f"{_SELECT_CALENDARS} WHERE owner = ? AND url IN ({_marks(forms)})",
        (calendar.owner, *forms),
    ).fetchone()
    if row is not None:
        return codec.calendar(row), False
    _add_calendar(conn, codec, calendar)
    return calendar, True


_SECRET_COLUMNS = "SELECT id, url, url_sealed, auth FROM calendars"


def _reseal_secrets(conn: sqlite3.Connection, codec: Codec) -> int:
    rows = conn.execute(_SECRET_COLUMNS).fetchall()
    changed = reseal_rows(codec, rows)
    conn.executemany(
        "UPDATE calendars SET url = :url, url_sealed = :url_sealed, auth = :auth "
        "WHERE id = :id",
        changed,
    )
    return len(changed)


def _marks(values: Sequence[object]) -> str:
    """Return ``?, ?, ...``: one placeholder per value, for an IN list."""
    return ", ".join("?" for _ in values)


def _update_calendar(
    conn: sqlite3.Connection, codec: Codec, calendar: Calendar
) -> Calendar:
    old = codec.calendar(_calendar_row(conn, calendar.id))
    if calendar.url != old.url:
        forms = codec.url_forms(calendar.url)
        taken = conn.execute(
            f"SELECT id FROM calendars WHERE owner = ? AND url IN ({_marks(forms)}) "
            "AND id <> ?",
            (old.owner, *forms, calendar.id),
        ).fetchone()
        if taken is not None:
            raise CalendarExists(
                f"owner {old.owner!r} already has this URL as calendar "
                f"{taken['id']!r}: calendar {old.label} keeps its URL"
            )
    values = dict(zip(CALENDAR_COLUMNS, codec.calendar_row(calendar), strict=True))
    conn.execute(
        _UPDATE_SETTINGS,
        {column: values[column] for column in (*SETTINGS_COLUMNS, "id")},
    )
    state = old.state
    if calendar.url != old.url:
        state = attrs.evolve(state, etag=None, last_modified=None, body_hash=None)
    return attrs.evolve(
        calendar, owner=old.owner, created_at=old.created_at, state=state
    )


def _remove_calendar(
    conn: sqlite3.Connection, calendar_id: str, owner: str | None
) -> None:
    _calendar_row(conn, calendar_id, owner)
    conn.execute("DELETE FROM calendars WHERE id = ?", (calendar_id,))


def _request_sync(conn: sqlite3.Connection, calendar_id: str, now: datetime) -> None:
    changed = conn.execute(
        "UPDATE calendars SET sync_requested_at = CASE "
        "WHEN sync_requested_at IS NULL OR sync_requested_at <= lease_claimed_at "
        "THEN :now ELSE sync_requested_at END WHERE id = :id",
        {"now": epoch_micros(now), "id": calendar_id},
    ).rowcount
    if changed == 0:
        raise calendar_not_found(calendar_id)


def _claim_calendar(
    conn: sqlite3.Connection,
    codec: Codec,
    calendar_id: str,
    now: datetime,
    worker: str,
    lease_ttl: timedelta,
) -> Lease | None:
    row = conn.execute(_CLAIM_ONE, {"id": calendar_id}).fetchone()
    if row is None:
        raise calendar_not_found(calendar_id)
    held_until = row["lease_expires_at"]
    if held_until is not None and held_until > epoch_micros(now):
        return None
    expires_at = now + lease_ttl
    conn.execute(
        _TAKE_LEASE,
        {
            "worker": worker,
            "expires_at": epoch_micros(expires_at),
            "now": epoch_micros(now),
            "id": calendar_id,
        },
    )
    return Lease(codec.calendar(row), worker, row["lease_token"] + 1, expires_at)


def _claim_calendars(
    conn: sqlite3.Connection,
    codec: Codec,
    now: datetime,
    limit: int,
    worker: str,
    lease_ttl: timedelta,
) -> list[Lease]:
    params = {"now": epoch_micros(now), "limit": limit}
    rows = conn.execute(_CLAIM_REQUESTED, params).fetchall()
    if len(rows) < limit:
        params["limit"] = limit - len(rows)
        rows += conn.execute(_CLAIM_PERIODIC, params).fetchall()
    expires_at = now + lease_ttl
    take = {
        "worker": worker,
        "expires_at": epoch_micros(expires_at),
        "now": epoch_micros(now),
    }
    conn.executemany(_TAKE_LEASE, [{**take, "id": row["id"]} for row in rows])
    return [
        Lease(codec.calendar(row), worker, row["lease_token"] + 1, expires_at)
        for row in rows
    ]


def _renew_lease(
    conn: sqlite3.Connection, codec: Codec, lease: Lease, expires_at: datetime
) -> Lease:
    row = conn.execute(
        f"{_SELECT_CALENDARS} WHERE {_HOLDS_LEASE}", lease_params(lease)
    ).fetchone()
    if row is None:
        raise lease_lost(lease)
    conn.execute(
        "UPDATE calendars SET lease_expires_at = :expires_at WHERE id = :id",
        {"id": lease.calendar_id, "expires_at": epoch_micros(expires_at)},
    )
    return attrs.evolve(lease, calendar=codec.calendar(row), expires_at=expires_at)


def _release_lease(conn: sqlite3.Connection, lease: Lease) -> None:
    conn.execute(
        "UPDATE calendars SET lease_worker = NULL, lease_expires_at = NULL, "
        f"lease_claimed_at = NULL WHERE {_HOLDS_LEASE}",
        lease_params(lease),
    )


def _apply_sync(
    conn: sqlite3.Connection, lease: Lease, write: SyncWrite, now: datetime
) -> AppliedSync:
    held = conn.execute(
        f"SELECT 1 FROM calendars WHERE {_HOLDS_LEASE}", lease_params(lease)
    ).fetchone()
    if held is None:
        raise lease_lost(lease)
    calendar_id = lease.calendar_id
    cancelled = 0
    if write.changes is not None:
        cancelled += _apply_changes(conn, calendar_id, write.changes)
    cancelled += _execute_many(
        conn,
        _CANCEL_ASKED,
        [_identity(calendar_id, notification) for notification in write.cancel],
    )
    created = _insert_notifications(conn, calendar_id, write.create, now)
    _finish_sync(conn, calendar_id, write.state, now)
    return AppliedSync(created=created, cancelled=cancelled)


def _apply_changes(
    conn: sqlite3.Connection, calendar_id: str, changes: ChangeSet
) -> int:
    """Write a ChangeSet; return how many pending notifications it made stale."""
    upserts = (*changes.added, *changes.updated)
    conn.executemany(
        f"DELETE FROM occurrences WHERE {_OCCURRENCE_KEY}",
        [_key(calendar_id, occurrence) for occurrence in changes.removed],
    )
    conn.executemany(
        _UPSERT_OCCURRENCE,
        [CODEC.occurrence_row(calendar_id, occurrence) for occurrence in upserts],
    )
    conn.executemany(
        f"UPDATE occurrences SET expired = 1 WHERE {_OCCURRENCE_KEY}",
        [_key(calendar_id, occurrence) for occurrence in changes.expired],
    )
    touched = {_key(calendar_id, occurrence) for occurrence in changes.removed}
    touched.update(_key(calendar_id, occurrence) for occurrence in upserts)
    return _execute_many(conn, _CANCEL_STALE, sorted(touched))


def _finish_sync(
    conn: sqlite3.Connection, calendar_id: str, state: SyncState, now: datetime
) -> None:
    """Write the sync state, clear a request the sync served, release the lease."""
    if state.next_sync_at is None:
        state = attrs.evolve(state, next_sync_at=now)
    values = dict(zip(STATE_COLUMNS, CODEC.state_values(state), strict=True))
    conn.execute(_FINISH_SYNC, {**values, "id": calendar_id})


def _key(calendar_id: str, occurrence: Occurrence) -> tuple[str, str, str]:
    return (calendar_id, occurrence.key.uid, occurrence.key.recurrence_id)


def _identity(calendar_id: str, notification: Notification) -> tuple[Any, ...]:
    return (
        calendar_id,
        notification.key.uid,
        notification.key.recurrence_id,
        micros(notification.lead),
        epoch_micros(notification.start),
    )


def _insert_notifications(
    conn: sqlite3.Connection,
    calendar_id: str,
    notifications: Sequence[Notification],
    now: datetime,
    status: NotificationStatus = NotificationStatus.PENDING,
) -> int:
    created_at = epoch_micros(now)
    rows = [
        {
            "id": notification_id(calendar_id, notification),
            "calendar_id": calendar_id,
            "uid": notification.key.uid,
            "recurrence_id": notification.key.recurrence_id,
            "lead": micros(notification.lead),
            "start_at": epoch_micros(notification.start),
            "fire_at": epoch_micros(notification.fire_at),
            "status": str(status),
            "now": created_at,
        }
        for notification in notifications
    ]
    revived = _execute_many(conn, _REVIVE_NOTIFICATION, rows)
    return revived + _execute_many(conn, _INSERT_NOTIFICATION, rows)


def _add_notifications(
    conn: sqlite3.Connection,
    calendar_id: str,
    notifications: Sequence[Notification],
    now: datetime,
    status: NotificationStatus,
) -> int:
    _require_calendar(conn, calendar_id)
    return _insert_notifications(conn, calendar_id, notifications, now, status)


def _list_occurrences(
    conn: sqlite3.Connection,
    calendar_id: str,
    window: Window | None,
    include_expired: bool,
) -> list[Occurrence]:
    _require_calendar(conn, calendar_id)
    conditions = ["calendar_id = :calendar_id"]
    params: dict[str, Any] = {"calendar_id": calendar_id}
    if not include_expired:
        conditions.append("NOT expired")
    if window is not None:
        # Window.overlaps: a zero-length occurrence counts if it starts inside.
        conditions.append(
            "start_at < :end AND (end_at > :start "
            "OR (start_at = end_at AND start_at >= :start))"
        )
        params.update(start=epoch_micros(window.start), end=epoch_micros(window.end))
    rows = conn.execute(
        f"SELECT {column_list(OCCURRENCE_COLUMNS)} FROM occurrences "
        f"WHERE {' AND '.join(conditions)} ORDER BY start_at, uid, recurrence_id",
        params,
    )
    return [CODEC.occurrence(row) for row in rows]


def _occurrences_starting(
    conn: sqlite3.Connection, start: datetime, end: datetime
) -> list[tuple[str, Occurrence]]:
    rows = conn.execute(
        _OCCURRENCES_STARTING, {"start": epoch_micros(start), "end": epoch_micros(end)}
    )
    return [(row["calendar_id"], CODEC.occurrence(row)) for row in rows]


def list_notifications_statement(
    *,
    calendar_id: str | None = None,
    status: NotificationStatus | None = None,
    uid: str | None = None,
    starts: Window | None = None,
    limit: int = 1000,
) -> tuple[str, dict[str, Any]]:
    """Return the SELECT for `SQLiteStore.list_notifications`, only the filters asked.

    Each combination of filters is its own statement, so each gets its own plan.
    """
    conditions = ["1"]
    params: dict[str, Any] = {"limit": max(limit, 0)}
    if calendar_id is not None:
        conditions.append("calendar_id = :calendar_id")
        params["calendar_id"] = calendar_id
    if status is not None:
        conditions.append("status = :status")
        params["status"] = str(NotificationStatus(status))
    if uid is not None:
        conditions.append("uid = :uid")
        params["uid"] = uid
    if starts is not None:
        conditions.append("start_at >= :starts_from AND start_at < :starts_until")
        params["starts_from"] = epoch_micros(starts.start)
        params["starts_until"] = epoch_micros(starts.end)
    statement = (
        f"SELECT {column_list(NOTIFICATION_COLUMNS)} FROM notifications "
        f"WHERE {' AND '.join(conditions)} ORDER BY fire_at, id LIMIT :limit"
    )
    return statement, params


def notification_counts_statement(
    calendar_id: str | None, owner: str | None = None
) -> tuple[str, dict[str, Any]]:
    """Return the SELECT for `SQLiteStore.notification_counts`.

    Naming every status lets SQLite count on ``notifications_by_status``
    (status, calendar_id) by range, with or without a calendar or an owner.
    """
    statuses = ", ".join(f"'{status}'" for status in NotificationStatus)
    condition = "" if calendar_id is None else " AND calendar_id = :calendar_id"
    if owner is not None:
        condition += (
            " AND calendar_id IN (SELECT id FROM calendars WHERE owner = :owner)"
        )
    statement = (
        "SELECT status, count(*) AS n FROM notifications "
        f"WHERE status IN ({statuses}){condition} GROUP BY status"
    )
    return statement, {"calendar_id": calendar_id, "owner": owner}


def _fetch_all(
    conn: sqlite3.Connection, statement: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    return conn.execute(statement, params).fetchall()


def _claim_notifications(
    conn: sqlite3.Connection,
    now: datetime,
    limit: int,
    worker: str,
    lease_ttl: timedelta,
) -> list[NotificationClaim]:
    rows = conn.execute(
        _CLAIM_NOTIFICATIONS, {"now": epoch_micros(now), "limit": limit}
    ).fetchall()
    expires_at = now + lease_ttl
    due_at = epoch_micros(expires_at)
    conn.executemany(
        _TAKE_CLAIM,
        [{"worker": worker, "due_at": due_at, "id": row["id"]} for row in rows],
    )
    return [
        NotificationClaim(
            record=CODEC.notification(
                {**row, "due_at": due_at, "attempts": row["attempts"] + 1}
            ),
            occurrence=CODEC.joined_occurrence(row),
            worker=worker,
            token=row["claim_token"] + 1,
            expires_at=expires_at,
        )
        for row in rows
    ]


def _record_job_run(conn: sqlite3.Connection, run: JobRun) -> None:
    conn.execute(
        "INSERT INTO job_runs (job, started_at, finished_at, outcome, counts, error) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (
            run.job,
            epoch_micros(run.started_at),
            epoch_micros(run.finished_at),
            str(run.outcome),
            json.dumps(dict(run.counts)),
            run.error,
        ),
    )


_RECENT_JOB_RUNS = """
    SELECT job, started_at, finished_at, outcome, counts, error FROM job_runs
    ORDER BY finished_at DESC, id DESC LIMIT :limit
"""
# A rare job (cleanup runs daily) must not scan a month of frequent ones.
_RECENT_RUNS_OF_JOB = """
    SELECT job, started_at, finished_at, outcome, counts, error FROM job_runs
    WHERE job = :job ORDER BY finished_at DESC, id DESC LIMIT :limit
"""


def _recent_job_runs(
    conn: sqlite3.Connection, job: str | None, limit: int
) -> list[JobRun]:
    statement = _RECENT_JOB_RUNS if job is None else _RECENT_RUNS_OF_JOB
    rows = conn.execute(statement, {"job": job, "limit": limit})
    return [CODEC.job_run(row) for row in rows]


def _prune(
    conn: sqlite3.Connection,
    occurrences_before: int,
    notifications_before: int,
    job_runs_before: int,
) -> PruneCounts:
    occurrences = conn.execute(
        "DELETE FROM occurrences WHERE expired AND end_at < ?", (occurrences_before,)
    ).rowcount
    notifications = conn.execute(
        "DELETE FROM notifications "
        "WHERE status IN ('delivered', 'cancelled', 'missed') AND start_at < ?",
        (notifications_before,),
    ).rowcount
    job_runs = conn.execute(
        "DELETE FROM job_runs WHERE finished_at < ?", (job_runs_before,)
    ).rowcount
    return PruneCounts(
        occurrences=occurrences, notifications=notifications, job_runs=job_runs
    )
