"""`SQLStore`: the Store contract once, in SQLAlchemy Core, for every SQL database.

One schema (`calsync.stores.sqltables`), one set of statements and one
`apply_sync` serve SQLite, PostgreSQL and MariaDB; what differs between them
is in `calsync.stores.dialects`. Each Store method is one transaction, run as
one function on a thread of the store's own (one for SQLite, one per pooled
connection for the servers), so a method costs one thread hop however many
statements it runs. Statements are built once per store; the hot ones run on
the driver with SQL compiled once (`Backend.driver_dialect`), the rest through
SQLAlchemy's compiled cache; bulk writes go as executemany.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, TypeVar

import attrs
from sqlalchemy import (
    Connection,
    Engine,
    Select,
    bindparam,
    case,
    delete,
    exists,
    false,
    func,
    insert,
    literal_column,
    null,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.sql import ColumnElement, Executable

from calsync.core.errors import (
    CalendarExists,
    SchemaVersionError,
    StoreError,
)
from calsync.core.model import ChangeSet, Notification, Occurrence, Window, as_aware_utc
from calsync.stores import sqltables
from calsync.stores._rows import (
    CALENDAR_COLUMNS,
    NOTIFICATION_COLUMNS,
    OCCURRENCE_COLUMNS,
    SETTINGS_COLUMNS,
    STATE_COLUMNS,
    Codec,
    micros,
    reseal_rows,
)
from calsync.stores.dialects import Backend, SQLiteBackend
from calsync.stores.dialects import fetch_rows as _fetch_all
from calsync.stores.records import (
    AppliedSync,
    Calendar,
    JobRun,
    Lease,
    NotificationClaim,
    NotificationRecord,
    NotificationStatus,
    PruneCounts,
    SyncWrite,
    notification_id,
)
from calsync.stores.sealing import SecretBox, clear_secrets, warn_clear_secrets
from calsync.stores.sqltables import (
    BIGINT,
    INSTANT,
    TEXT,
    calendars,
    job_runs,
    notifications,
    occurrences,
    schema_version,
)
from calsync.stores.store import (
    SCHEMA_VERSION,
    OpensAndCloses,
    calendar_not_found,
    check_claim,
    check_limit,
    check_new_status,
    lease_lost,
)

__all__ = ["SQLStore", "Statements"]

log = logging.getLogger(__name__)

T = TypeVar("T")

C, OC, N, R = calendars.c, occurrences.c, notifications.c, job_runs.c
b = bindparam

# Written as SQL text, not parameters: the partial indexes match on them.
PENDING: ColumnElement[str] = literal_column("'pending'")
CANCELLED: ColumnElement[str] = literal_column("'cancelled'")
FAILED: ColumnElement[str] = literal_column("'failed'")
DELIVERED: ColumnElement[str] = literal_column("'delivered'")
SETTLED = ("delivered", "cancelled", "missed")

_CALENDAR = [C[name] for name in CALENDAR_COLUMNS]
_OCCURRENCE = [OC[name] for name in OCCURRENCE_COLUMNS]
_NOTIFICATION = [N[name] for name in NOTIFICATION_COLUMNS]
_JOB_RUN = [R.job, R.started_at, R.finished_at, R.outcome, R.counts, R.error]
_OCCURRENCE_KEY = ("calendar_id", "uid", "recurrence_id")
_NEW_NOTIFICATION = NOTIFICATION_COLUMNS[: NOTIFICATION_COLUMNS.index("attempts") + 1]
_LEASE_TOKEN = len(CALENDAR_COLUMNS)
"""Where a claim's row has the lease token: after the calendar's columns."""
_NEXT_SYNC = CALENDAR_COLUMNS.index("next_sync_at")


def _occurrence_of(notification: Any) -> Any:
    """Match the occurrence of a notification's columns (it may be gone)."""
    return (
        (OC.calendar_id == notification.calendar_id)
        & (OC.uid == notification.uid)
        & (OC.recurrence_id == notification.recurrence_id)
    )


def _same_occurrence(column: Any) -> Any:
    """Match the occurrence given as ``b_calendar``, ``b_uid``, ``b_rid``."""
    return (
        (column.calendar_id == b("b_calendar"))
        & (column.uid == b("b_uid"))
        & (column.recurrence_id == b("b_rid"))
    )


class Statements:
    """Every statement of the SQL store, built once for one backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        bytewise = backend.bytewise
        lease_free = or_(C.lease_expires_at.is_(None), C.lease_expires_at <= b("now"))
        claimable = [*_CALENDAR, C.lease_token]

        self.calendar = select(*_CALENDAR).where(C.id == b("b_id"))
        self.calendar_for_update = self._locked(self.calendar, key_share=False)
        self.calendar_exists = select(C.id).where(C.id == b("b_id"))
        # Waits out an apply_sync in progress, so an insert sees its occurrences.
        self.calendar_shared = self.calendar_exists.with_for_update(
            read=True, key_share=True
        )
        self.calendars = select(*_CALENDAR).order_by(C.created_at, bytewise(C.id))
        self.calendars_of = self.calendars.where(C.owner == b("owner"))
        self.taken = select(*_CALENDAR).where(
            or_(
                C.id == b("b_id"),
                (C.owner == b("owner")) & C.url.in_(b("forms", expanding=True)),
            )
        )
        self.url_taken = select(C.id).where(
            C.owner == b("owner"),
            C.url.in_(b("forms", expanding=True)),
            C.id != b("b_id"),
        )
        self.add_calendar = insert(calendars)
        self.update_calendar = update(calendars).where(C.id == b("b_id"))
        self.secrets = select(C.id, C.url, C.url_sealed, C.auth)
        self.remove_calendar = delete(calendars).where(C.id == b("b_id"))
        # An open request keeps its place, unless the running sync already
        # serves it: then the new one is kept for the sync after.
        self.request_sync = (
            update(calendars)
            .where(C.id == b("b_id"))
            .values(
                sync_requested_at=case(
                    (
                        C.sync_requested_at.is_(None)
                        | (C.sync_requested_at <= C.lease_claimed_at),
                        b("now", type_=INSTANT),
                    ),
                    else_=C.sync_requested_at,
                )
            )
        )

        # -- leases --
        self.claim_one = self._locked(
            select(*claimable, C.lease_expires_at).where(C.id == b("b_id")),
            key_share=True,
        )
        requested = (
            select(*claimable)
            .where(C.sync_requested_at.is_not(None), lease_free)
            .order_by(C.sync_requested_at, bytewise(C.id))
        )
        periodic = (
            select(*claimable)
            .where(
                ~C.paused,
                C.next_sync_at <= b("now"),
                C.sync_requested_at.is_(None),
                lease_free,
            )
            .order_by(C.next_sync_at, bytewise(C.id))
        )
        lease = {
            "lease_worker": b("worker"),
            "lease_token": C.lease_token + 1,
            "lease_expires_at": b("expires"),
            "lease_claimed_at": b("now"),
        }
        self.take_lease = (
            update(calendars)
            .where(C.id.in_(b("b_ids", expanding=True)))
            .values(**lease)
        )
        self.claim_requested: Executable = self._claiming(requested)
        self.claim_periodic: Executable = self._claiming(periodic)
        if backend.claims_at_once:
            self.claim_requested, self.claim_periodic = (
                update(calendars)
                .where(C.id == due_ids.c.id)
                .values(**lease)
                .returning(*claimable, C.sync_requested_at)
                for due_ids in (
                    self._materialized(
                        self._claiming(requested.with_only_columns(C.id))
                    ),
                    self._materialized(
                        self._claiming(periodic.with_only_columns(C.id))
                    ),
                )
            )
        holds = (
            (C.id == b("b_id"))
            & (C.lease_token == b("b_token"))
            & (C.lease_worker == b("b_worker"))
        )
        self.held = select(*_CALENDAR).where(holds)
        self.lease_of = self._locked(
            select(C.lease_token, C.lease_worker).where(C.id == b("b_id")),
            key_share=False,
        )
        self.renew_lease = update(calendars).where(holds)
        self.release_lease = (
            update(calendars)
            .where(holds)
            .values(lease_worker=None, lease_expires_at=None, lease_claimed_at=None)
        )
        # A request made after the claim survives the apply: that sync may predate it.
        self.finish_sync = (
            update(calendars)
            .where(C.id == b("b_id"))
            .values(
                **{name: b(name) for name in STATE_COLUMNS},
                sync_requested_at=case(
                    (C.sync_requested_at <= C.lease_claimed_at, null()),
                    else_=C.sync_requested_at,
                ),
                lease_worker=None,
                lease_expires_at=None,
                lease_claimed_at=None,
            )
        )
        # A group commit's lease check (rows locked in id order) and stale leads.
        self.leases_of = self._locked(
            select(C.id, C.lease_token, C.lease_worker)
            .where(C.id.in_(b("b_ids", expanding=True)))
            .order_by(C.id),
            key_share=False,
        )
        self.pending_leads = (
            select(N.calendar_id, N.lead)
            .where(N.status == PENDING, N.calendar_id.in_(b("b_ids", expanding=True)))
            .distinct()
        )
        self.cancel_lead = (
            update(notifications)
            .where(
                N.calendar_id == b("b_calendar"),
                N.status == PENDING,
                N.lead == b("b_lead"),
            )
            .values(status=CANCELLED)
        )

        # -- occurrences --
        self.upsert_occurrence = backend.upsert(
            occurrences, _OCCURRENCE_KEY, OCCURRENCE_COLUMNS[3:], {"expired": false()}
        )
        self.delete_occurrence = delete(occurrences).where(_same_occurrence(OC))
        self.expire_occurrence = (
            update(occurrences).where(_same_occurrence(OC)).values(expired=true())
        )
        self.occurrences_starting = (
            select(*_OCCURRENCE)
            .join(calendars, C.id == OC.calendar_id)
            .where(
                ~OC.expired,
                OC.start_at >= b("start"),
                OC.start_at < b("end"),
                ~C.paused,
            )
            .order_by(
                OC.start_at,
                bytewise(OC.calendar_id),
                bytewise(OC.uid),
                bytewise(OC.recurrence_id),
            )
        )

        # -- notifications --
        live = occurrences.alias("o")
        self.cancel_stale = (
            update(notifications)
            .where(
                _same_occurrence(N),
                N.status == PENDING,
                ~exists().where(
                    live.c.calendar_id == N.calendar_id,
                    live.c.uid == N.uid,
                    live.c.recurrence_id == N.recurrence_id,
                    live.c.start_at == N.start_at,
                ),
            )
            .values(status=CANCELLED)
        )
        self.cancel_asked = (
            update(notifications)
            .where(
                _same_occurrence(N),
                N.lead == b("b_lead"),
                N.start_at == b("b_start"),
                N.status == PENDING,
            )
            .values(status=CANCELLED)
        )
        stored_live = _same_occurrence(OC) & (OC.start_at == b("b_start")) & ~OC.expired
        # A pending insert revives a cancelled row; an unfinished claim keeps due_at.
        fire_at = b("b_fire", type_=INSTANT)
        self.revive = (
            update(notifications)
            .where(
                N.id == b("b_id"),
                N.status == CANCELLED,
                exists().where(stored_live),
            )
            .values(
                status=PENDING,
                due_at=case((N.due_at > fire_at, N.due_at), else_=fire_at),
            )
        )
        self.insert_notification = backend.insert_ignore(
            notifications,
            _NEW_NOTIFICATION,
            select(
                b("b_id", type_=TEXT),
                OC.calendar_id,
                OC.uid,
                OC.recurrence_id,
                b("b_lead", type_=BIGINT),
                OC.start_at,
                fire_at,
                b("b_status", type_=TEXT),
                b("b_now", type_=INSTANT),
                fire_at,
                literal_column("0"),
            ).where(stored_live),
        ).execution_options(preserve_rowcount=True)
        o_columns = [OC[name].label(f"o_{name}") for name in OCCURRENCE_COLUMNS]
        due = (
            select(N.id, N.due_at.label("was_due"))
            .where(N.status == PENDING, N.due_at <= b("now"))
            .order_by(N.due_at, bytewise(N.id))
        )
        claim = {
            "claim_worker": b("worker"),
            "claim_token": N.claim_token + 1,
            "due_at": b("due_at"),
            "attempts": N.attempts + 1,
        }
        self.take_claim = (
            update(notifications)
            .where(N.id.in_(b("b_ids", expanding=True)))
            .values(**claim)
        )
        if backend.claims_at_once:
            locked = self._materialized(self._claiming(due, of=notifications))
            claimed = (
                update(notifications)
                .where(N.id == locked.c.id)
                .values(**claim)
                .returning(*_NOTIFICATION, N.claim_token, locked.c.was_due)
                .cte("claimed")
            )
            self.claim_notifications = (
                select(claimed, *o_columns)
                .select_from(claimed.outerjoin(occurrences, _occurrence_of(claimed.c)))
                .order_by(claimed.c.was_due, bytewise(claimed.c.id))
            )
        else:
            self.claim_notifications = self._claiming(
                backend.using_index(due, notifications, "notifications_due")
                .with_only_columns(*_NOTIFICATION, N.claim_token, *o_columns)
                .outerjoin(occurrences, _occurrence_of(N)),
                of=notifications,
            )
        self.mark_delivered = (
            update(notifications)
            .where(N.id == b("b_id"), N.status != DELIVERED)
            .values(status=DELIVERED, delivered_at=b("now"))
        )
        still_claimed = (
            (N.id == b("b_id"))
            & (N.claim_token == b("b_token"))
            & (N.status == PENDING)
        )
        retry_at = b("retry_at", type_=INSTANT)
        self.mark_failed = (
            update(notifications)
            .where(still_claimed)
            .values(
                last_error=b("error"),
                due_at=func.coalesce(retry_at, N.due_at),
                status=case((retry_at.is_(None), FAILED), else_=PENDING),
            )
        )
        self.release_claim = (
            update(notifications)
            .where(still_claimed)
            .values(
                due_at=b("now"),
                attempts=N.attempts - 1,
                claim_token=N.claim_token + 1,
            )
        )
        self.requeue = (
            update(notifications)
            .where(N.id == b("b_id"), N.status == FAILED)
            .values(status=PENDING, due_at=b("now"), attempts=0)
        )

        # -- history --
        self.record_job_run = insert(job_runs)
        self.recent_job_runs = (
            select(*_JOB_RUN)
            .order_by(R.finished_at.desc(), R.id.desc())
            .limit(b("limit"))
        )
        # A rare job (cleanup runs daily) must not scan a month of frequent ones.
        self.recent_runs_of_job = (
            select(*_JOB_RUN)
            .where(R.job == b("job"))
            .order_by(R.finished_at.desc(), R.id.desc())
            .limit(b("limit"))
        )
        self.prune_occurrences = delete(occurrences).where(
            OC.expired, OC.end_at < b("before")
        )
        self.prune_notifications = delete(notifications).where(
            N.status.in_([literal_column(f"'{status}'") for status in SETTLED]),
            N.start_at < b("before"),
        )
        self.prune_job_runs = delete(job_runs).where(R.finished_at < b("before"))

    def _locked(self, statement: Select[Any], *, key_share: bool) -> Select[Any]:
        """Lock the rows read, on a server (SQLite serializes writers instead)."""
        if not self.backend.locks_rows:
            return statement
        return statement.with_for_update(key_share=key_share)

    def _claiming(self, statement: Select[Any], of: Any = None) -> Select[Any]:
        """Claim up to ``limit`` rows; concurrent claimers pass each other by.

        A claim locks the rows it chose with SKIP LOCKED; a re-check under the
        lock drops a row another claim just took.
        """
        statement = statement.limit(b("limit"))
        if not self.backend.locks_rows:
            return statement
        return statement.with_for_update(skip_locked=True, key_share=of is None, of=of)

    @staticmethod
    def _materialized(statement: Select[Any]) -> Any:
        """Return ``statement`` as a CTE run once, before the UPDATE that uses it."""
        return statement.cte("due").prefix_with("MATERIALIZED")

    def list_occurrences(self, *, expired: bool, window: bool) -> Select[Any]:
        """Return the SELECT of a calendar's occurrences, only the filters asked."""
        statement = select(*_OCCURRENCE).where(OC.calendar_id == b("b_calendar"))
        if not expired:
            statement = statement.where(~OC.expired)
        if window:
            # Window.overlaps: a zero-length occurrence counts if it starts inside.
            statement = statement.where(
                OC.start_at < b("end"),
                or_(
                    OC.end_at > b("start"),
                    (OC.start_at == OC.end_at) & (OC.start_at >= b("start")),
                ),
            )
        bytewise = self.backend.bytewise
        return statement.order_by(
            OC.start_at, bytewise(OC.uid), bytewise(OC.recurrence_id)
        )

    def list_notifications(
        self,
        *,
        calendar_id: str | None = None,
        status: NotificationStatus | None = None,
        uid: str | None = None,
        starts: Window | None = None,
        limit: int = 1000,
    ) -> tuple[Select[Any], dict[str, Any]]:
        """Return the SELECT of `SQLStore.list_notifications`, only the filters asked.

        Each combination of filters is its own statement, so each gets its own
        plan that uses its index, never a generic one that scans.
        """
        instant = self.backend.instant
        statement = select(*_NOTIFICATION)
        params: dict[str, Any] = {"limit": limit}
        if calendar_id is not None:
            statement = statement.where(N.calendar_id == b("calendar_id"))
            params["calendar_id"] = calendar_id
        if status is not None:
            statement = statement.where(N.status == b("status"))
            params["status"] = str(NotificationStatus(status))
        if uid is not None:
            statement = statement.where(N.uid == b("uid"))
            params["uid"] = uid
        if starts is not None:
            statement = statement.where(
                N.start_at >= b("starts_from"), N.start_at < b("starts_until")
            )
            params["starts_from"] = instant(as_aware_utc(starts.start))
            params["starts_until"] = instant(as_aware_utc(starts.end))
        statement = statement.order_by(N.fire_at, self.backend.bytewise(N.id))
        return statement.limit(b("limit")), params

    def notification_counts(
        self, calendar_id: str | None, owner: str | None = None
    ) -> tuple[Select[Any], dict[str, Any]]:
        """Return the SELECT of `SQLStore.notification_counts`.

        Naming every status lets the count read ``notifications_by_status``
        (status, calendar_id) by range, with or without a calendar or an owner.
        """
        statuses: list[ColumnElement[str]] = [
            literal_column(f"'{status}'") for status in NotificationStatus
        ]
        statement = select(N.status, func.count().label("n")).where(
            N.status.in_(statuses)
        )
        if calendar_id is not None:
            statement = statement.where(N.calendar_id == b("calendar_id"))
        if owner is not None:
            statement = statement.where(
                N.calendar_id.in_(select(C.id).where(C.owner == b("owner")))
            )
        params = {"calendar_id": calendar_id, "owner": owner}
        return statement.group_by(N.status), params


class SQLStore(OpensAndCloses):
    """A `Store` in a SQL database; `SQLiteStore`, `PostgresStore` and `MariaDBStore`.

    ``backend`` says which database and how to reach it; ``secret_keys``
    (Fernet keys, newest first) encrypt feed secrets at rest, see
    `reseal_secrets` to rotate them.
    """

    def __init__(self, backend: Backend, *, secret_keys: Sequence[str] = ()) -> None:
        self._backend = backend
        self._codec = Codec(
            backend.instant, backend.from_instant, secrets=SecretBox(secret_keys)
        )
        self._sql = Statements(backend)
        self._failures: tuple[type[Exception], ...] = (
            SQLAlchemyError,
            *backend.driver_errors,
        )
        """What a failing statement raises: SQLAlchemy's errors and the driver's."""
        self._engine: Engine | None = None
        self._autocommit: Engine | None = None  # the same pool, without BEGIN
        self._executor: ThreadPoolExecutor | None = None

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        """Connect, then create the schema or migrate it to `SCHEMA_VERSION`.

        Raises `SchemaVersionError`, changing nothing, if the database holds a
        newer schema. Opening an open store does nothing.
        """
        if self._executor is not None:
            return
        backend = self._backend
        executor = ThreadPoolExecutor(
            max_workers=backend.workers,
            thread_name_prefix=f"calsync-{backend.kind.lower()}",
        )
        loop = asyncio.get_running_loop()
        try:
            engine = backend.engine()
            version = await loop.run_in_executor(executor, self._migrate, engine)
        except BaseException as exc:
            executor.shutdown(wait=False)
            if isinstance(exc, self._failures):
                raise self._error(exc, connecting=True) from None
            raise
        self._engine, self._executor = engine, executor
        if backend.autocommits:
            self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        log.debug(
            "opened %s store",
            backend.kind,
            extra={"store": repr(self), "schema_version": version},
        )
        rows = await self._read(_fetch_all, self._sql.secrets, {}, single=True)
        warn_clear_secrets(clear_secrets(rows), self._codec.secrets, repr(self))

    async def close(self) -> None:
        """Close the connections and stop their threads; the store can be reopened."""
        executor, self._executor = self._executor, None
        engine, self._engine = self._engine, None
        self._autocommit = None
        if executor is None or engine is None:
            return
        loop = asyncio.get_running_loop()
        closed = loop.run_in_executor(executor, engine.dispose)
        executor.shutdown(wait=False)
        await closed

    async def schema_version(self) -> int:
        """Return the schema version stored in the database."""
        return await self._read(self._stored_version)

    # -- calendars ---------------------------------------------------------

    async def add_calendar(self, calendar: Calendar) -> Calendar:
        """Store a new calendar, due at once unless its state names a time.

        Raises `CalendarExists` if the id, or the URL for that owner, is taken.
        """
        stored = _due(calendar)
        await self._write(self._add_calendar, stored, conflicts=True)
        return stored

    async def ensure_calendar(self, calendar: Calendar) -> tuple[Calendar, bool]:
        """Store a calendar unless its owner has its URL; say whether it was added.

        A racing insert of the same URL makes this one fail on the unique key;
        the transaction then runs again and finds the winner's calendar.
        """
        return await self._write(self._ensure_calendar, _due(calendar), conflicts=True)

    async def reseal_secrets(self) -> int:
        """Seal every calendar's feed secrets with the first key; count the calendars.

        Run it after putting a new key first in ``secret_keys`` (then drop the
        old key), or after setting keys for a store that kept secrets in clear.
        Raises `ValidationError` without keys, `StoreError` for a key that fits not.
        """
        return await self._write(self._reseal_secrets)

    async def get_calendar(
        self, calendar_id: str, *, owner: str | None = None
    ) -> Calendar:
        """Return one calendar; with ``owner``, only if it is theirs.

        Raises `CalendarNotFound`.
        """
        row = await self._read(self._calendar_row, calendar_id, owner, single=True)
        return self._codec.calendar(row)

    async def list_calendars(self, *, owner: str | None = None) -> list[Calendar]:
        """Return the calendars of ``owner`` (all if None), oldest first."""
        statement = self._sql.calendars if owner is None else self._sql.calendars_of
        # Decoded on the store's thread: 10,000 calendars would hold the loop.
        return await self._read(
            self._decoded_calendars, statement, {"owner": owner}, single=True
        )

    def _decoded_calendars(
        self, conn: Connection, statement: Any, params: dict[str, Any]
    ) -> list[Calendar]:
        return [
            self._codec.calendar(row) for row in _fetch_all(conn, statement, params)
        ]

    async def update_calendar(self, calendar: Calendar) -> Calendar:
        """Replace a calendar's settings, keeping its id, owner and sync state.

        A new URL forgets ETag, Last-Modified and body hash. Raises
        `CalendarNotFound`, or `CalendarExists` if the URL is taken for the owner.
        """
        return await self._write(self._update_calendar, calendar, conflicts=True)

    async def remove_calendar(
        self, calendar_id: str, *, owner: str | None = None
    ) -> None:
        """Delete a calendar with its occurrences and notifications.

        Raises `CalendarNotFound`.
        """
        await self._write(self._remove_calendar, calendar_id, owner)

    async def request_sync(self, calendar_id: str, now: datetime) -> None:
        """Ask for a manual sync; one made during a sync is kept for the next.

        Raises `CalendarNotFound`.
        """
        params = {"b_id": calendar_id, "now": self._instant(now)}
        if (
            await self._write(_execute, self._sql.request_sync, params, single=True)
            == 0
        ):
            raise calendar_not_found(calendar_id)

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
            self._claim_calendar, calendar_id, now, worker, lease_ttl
        )

    async def claim_due_calendars(
        self, now: datetime, *, limit: int, worker: str, lease_ttl: timedelta
    ) -> list[Lease]:
        """Lease up to ``limit`` due calendars: requested ones first, then by time."""
        now = as_aware_utc(now)
        check_claim(limit, worker, lease_ttl)
        # A claim at once is two statements, each atomic alone (requested, then
        # periodic): no BEGIN and COMMIT, as for one.
        return await self._write(
            self._claim_calendars,
            now,
            limit,
            worker,
            lease_ttl,
            single=self._backend.claims_at_once,
        )

    async def renew_lease(self, lease: Lease, now: datetime, ttl: timedelta) -> Lease:
        """Extend a lease that is still held; raises `LeaseLost` otherwise."""
        expires_at = as_aware_utc(now) + ttl
        return await self._write(self._renew_lease, lease, expires_at)

    async def release_lease(self, lease: Lease) -> None:
        """Give a lease back without writing; a lost lease is ignored."""
        await self._write(_execute, self._sql.release_lease, _holds(lease), single=True)

    async def apply_sync(
        self, lease: Lease, write: SyncWrite, now: datetime
    ) -> AppliedSync:
        """Write one sync's outcome in one transaction and release the lease.

        Raises `LeaseLost`, writing nothing, if the lease is not held any more.
        """
        now = as_aware_utc(now)
        return await self._write(self._apply_sync, lease, write, now)

    async def apply_syncs(
        self, writes: Sequence[tuple[Lease, SyncWrite]], now: datetime
    ) -> list[AppliedSync | None]:
        """Write many syncs' outcomes in one transaction: one commit for the lot.

        A write whose lease is not held any more writes nothing and gets None.
        """
        now = as_aware_utc(now)
        if not writes:
            return []
        return await self._write(self._apply_syncs, list(writes), now)

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
        return await self._read(
            self._list_occurrences, calendar_id, window, include_expired
        )

    async def occurrences_starting(
        self, start: datetime, end: datetime
    ) -> list[tuple[str, Occurrence]]:
        """Return live occurrences of unpaused calendars starting in [start, end)."""
        params = {"start": self._instant(start), "end": self._instant(end)}
        rows = await self._read(
            _fetch_all, self._sql.occurrences_starting, params, single=True
        )
        return [(row["calendar_id"], self._codec.occurrence(row)) for row in rows]

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
        return await self._write(
            self._add_notifications, calendar_id, wanted, now, status
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
        statement, params = self._sql.list_notifications(
            calendar_id=calendar_id, status=status, uid=uid, starts=starts, limit=limit
        )
        rows = await self._read(_fetch_all, statement, params, single=True)
        return [self._codec.notification(row) for row in rows]

    async def notification_counts(
        self, *, calendar_id: str | None = None, owner: str | None = None
    ) -> dict[NotificationStatus, int]:
        """Count notifications by status (every status a key), from an index."""
        statement, params = self._sql.notification_counts(calendar_id, owner)
        rows = await self._read(_fetch_all, statement, params, single=True)
        counts = dict.fromkeys(NotificationStatus, 0)
        counts.update((NotificationStatus(row["status"]), row["n"]) for row in rows)
        return counts

    async def claim_notifications(
        self, now: datetime, *, limit: int, worker: str, lease_ttl: timedelta
    ) -> list[NotificationClaim]:
        """Claim up to ``limit`` due pending notifications until ``now + lease_ttl``."""
        now = as_aware_utc(now)
        check_claim(limit, worker, lease_ttl)
        return await self._write(
            self._claim_notifications,
            now,
            limit,
            worker,
            lease_ttl,
            single=self._backend.claims_at_once,
        )

    async def mark_delivered(self, claim: NotificationClaim, now: datetime) -> None:
        """Record a delivery, also when the claim has since expired."""
        params = {"b_id": claim.id, "now": self._instant(now)}
        await self._write(_execute, self._sql.mark_delivered, params, single=True)

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
        params = {
            "b_id": claim.id,
            "b_token": claim.token,
            "error": error,
            "retry_at": None if retry_at is None else self._instant(retry_at),
        }
        return (
            await self._write(_execute, self._sql.mark_failed, params, single=True) == 1
        )

    async def release_claim(self, claim: NotificationClaim, now: datetime) -> bool:
        """Hand back a claim never attempted: due ``now``, its attempt uncounted."""
        params = {"b_id": claim.id, "b_token": claim.token, "now": self._instant(now)}
        return (
            await self._write(_execute, self._sql.release_claim, params, single=True)
            == 1
        )

    async def requeue(self, notification_ids: Iterable[str], now: datetime) -> int:
        """Make dead-letter notifications pending again, due ``now``; count them."""
        due_at = self._instant(now)
        rows = [{"b_id": id_, "now": due_at} for id_ in sorted(set(notification_ids))]
        return await self._write(self._execute_many, self._sql.requeue, rows)

    # -- history and housekeeping -------------------------------------------

    async def record_job_run(self, run: JobRun) -> None:
        """Append one job run to the history."""
        values = {
            "job": run.job,
            "started_at": self._instant(run.started_at),
            "finished_at": self._instant(run.finished_at),
            "outcome": str(run.outcome),
            "counts": self._backend.json(dict(run.counts)),
            "error": run.error,
        }
        await self._write(_execute, self._sql.record_job_run, values, single=True)

    async def recent_job_runs(
        self, *, job: str | None = None, limit: int = 100
    ) -> list[JobRun]:
        """Return the latest job runs, newest first."""
        check_limit(limit)
        sql = self._sql
        statement = sql.recent_job_runs if job is None else sql.recent_runs_of_job
        rows = await self._read(
            _fetch_all, statement, {"job": job, "limit": limit}, single=True
        )
        return [self._codec.job_run(row) for row in rows]

    async def prune(
        self,
        *,
        occurrences_before: datetime,
        notifications_before: datetime,
        job_runs_before: datetime,
    ) -> PruneCounts:
        """Delete expired occurrences, settled notifications and old job runs."""
        cutoffs = (
            self._instant(occurrences_before),
            self._instant(notifications_before),
            self._instant(job_runs_before),
        )
        return await self._write(self._prune, *cutoffs)

    # -- transactions ------------------------------------------------------

    def _instant(self, value: datetime) -> Any:
        return self._backend.instant(as_aware_utc(value))

    async def _read(
        self, work: Callable[..., T], /, *args: Any, single: bool = False
    ) -> T:
        """Run ``work`` in a read transaction (none for ``single`` statement work)."""
        return await self._submit(False, False, single, lambda conn: work(conn, *args))

    async def _write(
        self,
        work: Callable[..., T],
        /,
        *args: Any,
        conflicts: bool = False,
        single: bool = False,
    ) -> T:
        """Run ``work`` in a write transaction.

        With ``conflicts``, a unique-key conflict with a racing transaction runs
        ``work`` again (it then sees the other's row). ``single`` work is one
        statement, atomic on its own: where the backend allows, it runs without
        BEGIN and COMMIT, which saves two round trips.
        """
        return await self._submit(
            True, conflicts, single, lambda conn: work(conn, *args)
        )

    async def _submit(
        self,
        write: bool,
        conflicts: bool,
        single: bool,
        work: Callable[[Connection], T],
    ) -> T:
        executor, engine = self._executor, self._engine
        if executor is None or engine is None:
            raise StoreError(
                f"the {self._backend.kind} store at {self._backend.target()} is "
                "closed: use `async with store` or call open() first"
            )
        if single and self._autocommit is not None:
            engine, write = self._autocommit, False
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                executor, self._transaction, engine, write, conflicts, work
            )
        except self._failures as exc:
            raise self._error(exc) from None

    def _transaction(
        self,
        engine: Engine,
        write: bool,
        conflicts: bool,
        work: Callable[[Connection], T],
    ) -> T:
        """Run ``work`` in one transaction; again if the database broke a deadlock."""
        backend = self._backend
        attempt = 1
        while True:
            with engine.connect() as conn:
                try:
                    backend.begin(conn, write)
                    result = work(conn)
                    backend.commit(conn)
                except DBAPIError as exc:
                    backend.rollback(conn)
                    again = backend.retryable(exc) or (
                        conflicts and isinstance(exc, IntegrityError)
                    )
                    if not again or attempt >= backend.attempts:
                        raise
                    log.info(
                        "%s aborted a transaction for a conflict; retrying",
                        backend.kind,
                        extra={"store": repr(self), "attempt": attempt},
                    )
                    attempt += 1
                    continue
                except BaseException:
                    backend.rollback(conn)
                    raise
                return result

    def _error(self, exc: BaseException, *, connecting: bool = False) -> StoreError:
        if isinstance(exc, self._backend.driver_errors):
            return self._backend.error(exc)
        if not isinstance(exc, DBAPIError):
            return StoreError(
                f"the {self._backend.kind} store at {self._backend.target()} "
                f"failed: {type(exc).__name__}"
            )
        if connecting and isinstance(exc, OperationalError):
            return self._backend.connect_error(exc)
        return self._backend.error(exc)

    # -- opening -----------------------------------------------------------

    def _migrate(self, engine: Engine) -> int:
        """Create or migrate the schema, refusing a newer one before writing anything.

        SQLite can refuse at once, without waiting on ``busy_timeout``, while
        another process switches a new file to WAL; that is retried until the
        timeout is spent.
        """
        backend = self._backend
        deadline = time.monotonic()
        if isinstance(backend, SQLiteBackend):
            deadline += backend.busy_timeout.total_seconds()
        while True:
            try:
                return self._migrate_once(engine)
            except self._failures as exc:
                busy = isinstance(backend, SQLiteBackend) and backend.busy(exc)
                if not busy or time.monotonic() >= deadline:
                    engine.dispose()
                    raise
            except BaseException:
                engine.dispose()
                raise
            time.sleep(0.02)

    def _migrate_once(self, engine: Engine) -> int:
        backend = self._backend
        with engine.connect() as conn:
            backend.begin(conn, False)
            try:
                self._check_version(self._stored_version(conn))
                backend.commit(conn)
            except BaseException:
                backend.rollback(conn)
                raise
            if isinstance(backend, SQLiteBackend):
                backend.use_wal(conn)
            backend.begin(conn, True)
            try:
                backend.prepare(conn)
                current = self._stored_version(conn)
                self._check_version(current)
                self._upgrade(conn, current)
                backend.commit(conn)
            except BaseException:
                backend.rollback(conn)
                raise
            finally:
                backend.finish_open(conn)
        return SCHEMA_VERSION

    def _stored_version(self, conn: Connection) -> int:
        if not self._backend.has_version_table(conn):
            return 0
        version = conn.execute(select(func.max(schema_version.c.version))).scalar()
        return 0 if version is None else int(version)

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"the {self._backend.kind} store at {self._backend.target()} has "
                f"schema version {version}, but this calsync only knows version "
                f"{SCHEMA_VERSION}: upgrade calsync"
            )

    def _upgrade(self, conn: Connection, current: int) -> None:
        if current == SCHEMA_VERSION:
            return
        if current == 0:
            sqltables.metadata.create_all(conn)
        for version in range(current + 1, SCHEMA_VERSION + 1) if current else ():
            for statement in sqltables.UPGRADES[version]:
                if isinstance(statement, sqltables.OnlyOn):
                    if conn.dialect.name not in statement.dialects:
                        continue
                    statement = statement.step
                conn.execute(
                    text(statement) if isinstance(statement, str) else statement
                )
        conn.execute(delete(schema_version))
        conn.execute(insert(schema_version).values(version=SCHEMA_VERSION))
        log.info(
            "migrated %s store",
            self._backend.kind,
            extra={
                "store": repr(self),
                "from_version": current,
                "to_version": SCHEMA_VERSION,
            },
        )

    # -- work done inside one transaction ------------------------------------

    def _calendar_row(
        self,
        conn: Connection,
        calendar_id: str,
        owner: str | None = None,
        *,
        lock: bool = False,
    ) -> Any:
        statement = self._sql.calendar_for_update if lock else self._sql.calendar
        row = conn.execute(statement, {"b_id": calendar_id}).mappings().first()
        if row is None or (owner is not None and row["owner"] != owner):
            raise calendar_not_found(calendar_id)
        return row

    def _add_calendar(self, conn: Connection, calendar: Calendar) -> None:
        self._insert_calendar(conn, calendar, self._taken(conn, calendar))

    def _ensure_calendar(
        self, conn: Connection, calendar: Calendar
    ) -> tuple[Calendar, bool]:
        taken = self._taken(conn, calendar)
        forms = self._forms(calendar)
        same_url = [
            row
            for row in taken
            if row["owner"] == calendar.owner and row["url"] in forms
        ]
        if same_url:  # perhaps under the look-up form of an older key
            return self._codec.calendar(same_url[0]), False
        self._insert_calendar(conn, calendar, taken)
        return calendar, True

    def _forms(self, calendar: Calendar) -> list[str]:
        return self._codec.url_forms(calendar.url)

    def _taken(self, conn: Connection, calendar: Calendar) -> list[Any]:
        """Return the calendars with this one's id, or its owner and URL.

        One statement: under READ COMMITTED each statement sees what committed
        before it, so a second look-up could see a row the first missed.
        """
        params = {
            "b_id": calendar.id,
            "owner": calendar.owner,
            "forms": self._forms(calendar),
        }
        return _fetch_all(conn, self._sql.taken, params)

    def _insert_calendar(
        self, conn: Connection, calendar: Calendar, taken: Sequence[Any]
    ) -> None:
        if any(row["id"] == calendar.id for row in taken):
            raise CalendarExists(
                f"calendar id {calendar.id!r} is taken: pick another id, or "
                "update the stored calendar instead"
            )
        if taken:
            raise CalendarExists(
                f"owner {calendar.owner!r} already has this URL as calendar "
                f"{taken[0]['id']!r}: calendar {calendar.label} was not added"
            )
        values = dict(
            zip(CALENDAR_COLUMNS, self._codec.calendar_row(calendar), strict=True)
        )
        conn.execute(self._sql.add_calendar, values)

    def _reseal_secrets(self, conn: Connection) -> int:
        rows = _fetch_all(conn, self._sql.secrets, {})
        changed = reseal_rows(self._codec, rows)
        params = [
            {
                "b_id": row["id"],
                "url": row["url"],
                "url_sealed": row["url_sealed"],
                "auth": row["auth"],
            }
            for row in changed
        ]
        self._execute_many(conn, self._sql.update_calendar, params)
        return len(changed)

    def _update_calendar(self, conn: Connection, calendar: Calendar) -> Calendar:
        old = self._codec.calendar(self._calendar_row(conn, calendar.id, lock=True))
        moved = calendar.url != old.url
        if moved:
            lookup = {
                "b_id": calendar.id,
                "owner": old.owner,
                "forms": self._codec.url_forms(calendar.url),
            }
            taken = conn.execute(self._sql.url_taken, lookup).scalar()
            if taken is not None:
                raise CalendarExists(
                    f"owner {old.owner!r} already has this URL as calendar "
                    f"{taken!r}: calendar {old.label} keeps its URL"
                )
        values = dict(
            zip(CALENDAR_COLUMNS, self._codec.calendar_row(calendar), strict=True)
        )
        params: dict[str, Any] = {name: values[name] for name in SETTINGS_COLUMNS}
        state = old.state
        if moved:  # the next sync fetches and parses afresh
            params.update(etag=None, last_modified=None, body_hash=None)
            state = attrs.evolve(state, etag=None, last_modified=None, body_hash=None)
        conn.execute(self._sql.update_calendar, {**params, "b_id": calendar.id})
        return attrs.evolve(
            calendar, owner=old.owner, created_at=old.created_at, state=state
        )

    def _remove_calendar(
        self, conn: Connection, calendar_id: str, owner: str | None
    ) -> None:
        self._calendar_row(conn, calendar_id, owner)
        conn.execute(self._sql.remove_calendar, {"b_id": calendar_id})

    def _claim_calendar(
        self,
        conn: Connection,
        calendar_id: str,
        now: datetime,
        worker: str,
        lease_ttl: timedelta,
    ) -> Lease | None:
        instant = self._backend.instant
        row = conn.execute(self._sql.claim_one, {"b_id": calendar_id}).first()
        if row is None:
            raise calendar_not_found(calendar_id)
        held_until = row[_LEASE_TOKEN + 1]  # lease_expires_at
        if held_until is not None and held_until > instant(now):
            return None
        expires_at = now + lease_ttl
        params = {"worker": worker, "expires": instant(expires_at), "now": instant(now)}
        self._take_leases(conn, [row], params)
        return self._leases([row], worker, expires_at, taken=False)[0]

    def _claim_calendars(
        self,
        conn: Connection,
        now: datetime,
        limit: int,
        worker: str,
        lease_ttl: timedelta,
    ) -> list[Lease]:
        backend = self._backend
        instant, at_once = backend.instant, backend.claims_at_once
        expires_at = now + lease_ttl
        params = {
            "now": instant(now),
            "limit": limit,
            "worker": worker,
            "expires": instant(expires_at),
        }
        # Rows as tuples: ``claimable`` columns, then sync_requested_at (at once).
        rows = backend.fetch_values(conn, self._sql.claim_requested, params)
        if at_once:  # UPDATE ... RETURNING returns the rows in no order
            rows.sort(key=lambda row: (row[_LEASE_TOKEN + 1], row[0]))
        if len(rows) < limit:
            params["limit"] = limit - len(rows)
            periodic = backend.fetch_values(conn, self._sql.claim_periodic, params)
            if at_once:
                periodic.sort(key=lambda row: (row[_NEXT_SYNC], row[0]))
            rows += periodic
        if not at_once:
            self._take_leases(conn, rows, params)
        return self._leases(rows, worker, expires_at, taken=at_once)

    def _take_leases(
        self, conn: Connection, rows: Sequence[Any], params: dict[str, Any]
    ) -> None:
        if rows:  # one statement for the batch
            ids = [row[0] for row in rows]
            self._backend.execute(conn, self._sql.take_lease, {**params, "b_ids": ids})

    def _leases(
        self, rows: Sequence[Any], worker: str, expires_at: datetime, *, taken: bool
    ) -> list[Lease]:
        """Return the leases of claimed rows (``taken``: with their new token).

        A row holds the calendar's columns, then its lease token.
        """
        bump = 0 if taken else 1
        calendar = self._codec.calendar_of
        return [
            Lease(calendar(row), worker, row[_LEASE_TOKEN] + bump, expires_at)
            for row in rows
        ]

    def _renew_lease(
        self, conn: Connection, lease: Lease, expires_at: datetime
    ) -> Lease:
        row: Any = conn.execute(self._sql.held, _holds(lease)).mappings().first()
        if row is None:
            raise lease_lost(lease)
        params = {
            **_holds(lease),
            "lease_expires_at": self._backend.instant(expires_at),
        }
        conn.execute(self._sql.renew_lease, params)
        return attrs.evolve(
            lease, calendar=self._codec.calendar(row), expires_at=expires_at
        )

    def _apply_sync(
        self, conn: Connection, lease: Lease, write: SyncWrite, now: datetime
    ) -> AppliedSync:
        calendar_id = lease.calendar_id
        held = self._fetch_hot(conn, self._sql.lease_of, {"b_id": calendar_id})
        if not held or tuple(held[0].values()) != (lease.token, lease.worker):
            raise lease_lost(lease)
        cancelled = 0
        if write.changes is not None:
            cancelled += self._apply_changes(conn, calendar_id, write.changes)
        cancelled += self._execute_many(
            conn,
            self._sql.cancel_asked,
            [self._identity(calendar_id, note) for note in write.cancel],
        )
        if write.keep_leads is not None:
            cancelled += self._cancel_other_leads(
                conn, {calendar_id: write.keep_leads}
            )[calendar_id]
        created = self._insert_notifications(conn, calendar_id, write.create, now)
        state = write.state
        if state.next_sync_at is None:
            state = attrs.evolve(state, next_sync_at=now)
        values = dict(zip(STATE_COLUMNS, self._codec.state_values(state), strict=True))
        self._execute_many(
            conn, self._sql.finish_sync, [{**values, "b_id": calendar_id}]
        )
        return AppliedSync(created=created, cancelled=cancelled)

    def _apply_syncs(
        self, conn: Connection, writes: list[tuple[Lease, SyncWrite]], now: datetime
    ) -> list[AppliedSync | None]:
        """Apply a group commit's writes, each as `_apply_sync` would.

        The lease check, and the stale leads and state of the plain writes (no
        occurrences or notifications), take one statement each for the batch.
        """
        ids = sorted({lease.calendar_id for lease, _ in writes})
        held = {
            row["id"]: (row["lease_token"], row["lease_worker"])
            for row in _fetch_all(conn, self._sql.leases_of, {"b_ids": ids})
        }
        applied: list[AppliedSync | None] = [None] * len(writes)
        plain: dict[int, tuple[str, SyncWrite]] = {}
        for index, (lease, write) in sorted(
            enumerate(writes), key=lambda item: item[1][0].calendar_id
        ):
            if held.pop(lease.calendar_id, None) != (lease.token, lease.worker):
                continue  # lost, or a second write of the calendar in the batch
            if write.changes is None and not write.create and not write.cancel:
                plain[index] = (lease.calendar_id, write)
            else:
                applied[index] = self._apply_sync(conn, lease, write, now)
        keep = {
            calendar_id: write.keep_leads
            for calendar_id, write in plain.values()
            if write.keep_leads is not None
        }
        cancelled = self._cancel_other_leads(conn, keep) if keep else {}
        states = []
        for index, (calendar_id, write) in plain.items():
            state = write.state
            if state.next_sync_at is None:
                state = attrs.evolve(state, next_sync_at=now)
            values = self._codec.state_values(state)
            states.append(
                {**dict(zip(STATE_COLUMNS, values, strict=True)), "b_id": calendar_id}
            )
            applied[index] = AppliedSync(cancelled=cancelled.get(calendar_id, 0))
        self._execute_many(conn, self._sql.finish_sync, states)
        return applied

    def _cancel_other_leads(
        self, conn: Connection, keep: dict[str, frozenset[timedelta]]
    ) -> dict[str, int]:
        """Cancel pending notifications of leads not kept; count them by calendar."""
        rows = _fetch_all(conn, self._sql.pending_leads, {"b_ids": sorted(keep)})
        cancelled = dict.fromkeys(keep, 0)
        kept = {
            calendar_id: {micros(lead) for lead in leads}
            for calendar_id, leads in keep.items()
        }
        for row in sorted(rows, key=lambda row: (row["calendar_id"], row["lead"])):
            calendar_id, lead = row["calendar_id"], row["lead"]
            if lead not in kept[calendar_id]:
                params = {"b_calendar": calendar_id, "b_lead": lead}
                cancelled[calendar_id] += _execute(conn, self._sql.cancel_lead, params)
        return cancelled

    def _apply_changes(
        self, conn: Connection, calendar_id: str, changes: ChangeSet
    ) -> int:
        """Write a ChangeSet; return how many pending notifications it made stale."""
        upserts = {o.key: o for o in (*changes.added, *changes.updated)}
        self._execute_many(
            conn,
            self._sql.delete_occurrence,
            [_key(calendar_id, o) for o in changes.removed],
        )
        row = self._codec.occurrence_row
        self._execute_many(
            conn,
            self._sql.upsert_occurrence,
            [
                dict(zip(OCCURRENCE_COLUMNS, row(calendar_id, o), strict=True))
                for o in upserts.values()
            ],
        )
        self._execute_many(
            conn,
            self._sql.expire_occurrence,
            [_key(calendar_id, o) for o in changes.expired],
        )
        touched = {(o.key.uid, o.key.recurrence_id) for o in changes.removed}
        touched.update((key.uid, key.recurrence_id) for key in upserts)
        return self._execute_many(
            conn,
            self._sql.cancel_stale,
            [
                {"b_calendar": calendar_id, "b_uid": uid, "b_rid": rid}
                for uid, rid in sorted(touched)
            ],
        )

    def _fetch_hot(
        self, conn: Connection, statement: Any, params: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """`_fetch_all` of a statement built once, run the backend's fastest way."""
        return self._backend.fetch_all(conn, statement, params)

    def _execute_many(
        self, conn: Connection, statement: Any, rows: Sequence[dict[str, Any]]
    ) -> int:
        return self._backend.execute_many(conn, statement, rows) if rows else 0

    def _identity(self, calendar_id: str, notification: Notification) -> dict[str, Any]:
        return {
            "b_calendar": calendar_id,
            "b_uid": notification.key.uid,
            "b_rid": notification.key.recurrence_id,
            "b_lead": micros(notification.lead),
            "b_start": self._backend.instant(notification.start),
        }

    def _insert_notifications(
        self,
        conn: Connection,
        calendar_id: str,
        notifications: Sequence[Notification],
        now: datetime,
        status: NotificationStatus = NotificationStatus.PENDING,
    ) -> int:
        instant = self._backend.instant
        unique = {notification_id(calendar_id, n): n for n in notifications}
        # Sorted by id: concurrent inserts take their locks in one order.
        rows = [
            {
                **self._identity(calendar_id, unique[id_]),
                "b_id": id_,
                "b_fire": instant(unique[id_].fire_at),
                "b_status": str(status),
                "b_now": instant(now),
            }
            for id_ in sorted(unique)
        ]
        revived = 0
        if status is NotificationStatus.PENDING:
            revived = self._execute_many(conn, self._sql.revive, rows)
        return revived + self._execute_many(conn, self._sql.insert_notification, rows)

    def _add_notifications(
        self,
        conn: Connection,
        calendar_id: str,
        notifications: Sequence[Notification],
        now: datetime,
        status: NotificationStatus,
    ) -> int:
        if (
            conn.execute(self._sql.calendar_shared, {"b_id": calendar_id}).first()
            is None
        ):
            raise calendar_not_found(calendar_id)
        return self._insert_notifications(conn, calendar_id, notifications, now, status)

    def _list_occurrences(
        self,
        conn: Connection,
        calendar_id: str,
        window: Window | None,
        include_expired: bool,
    ) -> list[Occurrence]:
        self._calendar_row(conn, calendar_id)
        statement = self._sql.list_occurrences(
            expired=include_expired, window=window is not None
        )
        params: dict[str, Any] = {"b_calendar": calendar_id}
        if window is not None:
            params.update(
                start=self._instant(window.start), end=self._instant(window.end)
            )
        return [
            self._codec.occurrence(row) for row in _fetch_all(conn, statement, params)
        ]

    def _claim_notifications(
        self,
        conn: Connection,
        now: datetime,
        limit: int,
        worker: str,
        lease_ttl: timedelta,
    ) -> list[NotificationClaim]:
        instant, at_once = self._backend.instant, self._backend.claims_at_once
        expires_at = now + lease_ttl
        due_at = instant(expires_at)
        params = {
            "now": instant(now),
            "limit": limit,
            "worker": worker,
            "due_at": due_at,
        }
        rows = self._fetch_hot(conn, self._sql.claim_notifications, params)
        if rows and not at_once:  # one statement for the batch
            ids = [row["id"] for row in rows]
            self._backend.execute(conn, self._sql.take_claim, {**params, "b_ids": ids})
        bump = 0 if at_once else 1
        return [
            NotificationClaim(
                record=self._codec.notification(
                    {**row, "due_at": due_at, "attempts": row["attempts"] + bump}
                ),
                occurrence=self._codec.joined_occurrence(row),
                worker=worker,
                token=row["claim_token"] + bump,
                expires_at=expires_at,
            )
            for row in rows
        ]

    def _prune(
        self,
        conn: Connection,
        occurrences_before: Any,
        notifications_before: Any,
        job_runs_before: Any,
    ) -> PruneCounts:
        sql = self._sql
        return PruneCounts(
            occurrences=_execute(
                conn, sql.prune_occurrences, {"before": occurrences_before}
            ),
            notifications=_execute(
                conn, sql.prune_notifications, {"before": notifications_before}
            ),
            job_runs=_execute(conn, sql.prune_job_runs, {"before": job_runs_before}),
        )


# -- helpers -------------------------------------------------------------------


def _due(calendar: Calendar) -> Calendar:
    """Return ``calendar`` due at its creation unless its state names a time."""
    next_sync_at = calendar.state.next_sync_at or calendar.created_at
    return attrs.evolve(
        calendar, state=attrs.evolve(calendar.state, next_sync_at=next_sync_at)
    )


def _holds(lease: Lease) -> dict[str, Any]:
    return {"b_id": lease.calendar_id, "b_token": lease.token, "b_worker": lease.worker}


def _key(calendar_id: str, occurrence: Occurrence) -> dict[str, str]:
    return {
        "b_calendar": calendar_id,
        "b_uid": occurrence.key.uid,
        "b_rid": occurrence.key.recurrence_id,
    }


def _execute(conn: Connection, statement: Any, params: dict[str, Any]) -> int:
    return max(conn.execute(statement, params).rowcount, 0)
