"""The `Store` protocol: where "exactly once" and "nothing lost" are kept.

Every store (memory, SQLite, PostgreSQL) passes the same contract suite. All
times are aware datetimes and are passed in: a store never reads the clock.
A naive datetime raises `ValidationError`; nothing is written then.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from calsync.core.errors import CalendarNotFound, LeaseLost, ValidationError
from calsync.core.model import Notification, Occurrence, Window
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
)

__all__ = [
    "NEW_STATUSES",
    "SCHEMA_VERSION",
    "OpensAndCloses",
    "Store",
    "calendar_not_found",
    "check_claim",
    "check_limit",
    "check_new_status",
    "lease_lost",
]

SCHEMA_VERSION = 4
"""The schema this version of calsync writes; a newer one in a database is refused."""


@runtime_checkable
class Store(Protocol):
    """Durable state: calendars, occurrences, the notification outbox, job runs.

    Use it as an async context manager, or call `open` and `close`.
    """

    async def open(self) -> None:
        """Connect, create the schema or migrate it to `SCHEMA_VERSION`.

        Raises `SchemaVersionError` if the database holds a newer schema.
        """

    async def close(self) -> None:
        """Release connections; a closed store can be opened again."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    async def schema_version(self) -> int:
        """Return the schema version stored in the database."""

    # -- calendars ---------------------------------------------------------

    async def add_calendar(self, calendar: Calendar) -> Calendar:
        """Store a new calendar and return it as stored.

        It is due at once unless its state names a ``next_sync_at``. Raises
        `CalendarExists` if the id, or the URL for that owner, is taken.
        """

    async def ensure_calendar(self, calendar: Calendar) -> tuple[Calendar, bool]:
        """Store ``calendar`` unless its owner has its URL; return the stored one.

        The flag says whether it was added; otherwise the stored calendar with
        that owner and URL comes back unchanged. Concurrent callers, in any
        number of processes, store one calendar and all get it back. Raises
        `CalendarExists` only if the id is taken by another calendar.
        """

    async def get_calendar(
        self, calendar_id: str, *, owner: str | None = None
    ) -> Calendar:
        """Return one calendar; with ``owner``, only if it belongs to that owner.

        Raises `CalendarNotFound`.
        """

    async def list_calendars(self, *, owner: str | None = None) -> list[Calendar]:
        """Return the calendars of ``owner`` (all owners if None), oldest first."""

    async def update_calendar(self, calendar: Calendar) -> Calendar:
        """Replace a calendar's settings (everything but its id, owner and sync state).

        A changed URL clears the stored ETag, Last-Modified and body hash so the
        next sync fetches and parses afresh. Raises `CalendarNotFound`, or
        `CalendarExists` if the new URL is taken for that owner.
        """

    async def remove_calendar(
        self, calendar_id: str, *, owner: str | None = None
    ) -> None:
        """Delete a calendar with its occurrences and notifications.

        Raises `CalendarNotFound`.
        """

    async def request_sync(self, calendar_id: str, now: datetime) -> None:
        """Ask for a manual sync: the next claim takes it before periodic ones.

        Works on paused calendars too. A request made while a sync is running
        is kept for the sync after it. Raises `CalendarNotFound`.
        """

    # -- syncing -----------------------------------------------------------

    async def claim_calendar(
        self, calendar_id: str, now: datetime, *, worker: str, lease_ttl: timedelta
    ) -> Lease | None:
        """Lease one calendar now, due or not, paused or not, for ``lease_ttl``.

        Returns None if another unexpired lease holds it. The token fences
        writes as for `claim_due_calendars`; the lease's `apply_sync` clears a
        manual request made before this claim. Raises `CalendarNotFound`.
        """

    async def claim_due_calendars(
        self, now: datetime, *, limit: int, worker: str, lease_ttl: timedelta
    ) -> list[Lease]:
        """Lease up to ``limit`` calendars that are due, for ``lease_ttl``.

        Due means: a manual sync was requested (these come first, oldest request
        first), or not paused and ``next_sync_at <= now`` (earliest first); in
        both cases no unexpired lease is held. Concurrent callers, in any number
        of processes, never receive the same calendar while its lease lasts.
        """

    async def renew_lease(self, lease: Lease, now: datetime, ttl: timedelta) -> Lease:
        """Extend a lease that is still held; raises `LeaseLost` otherwise."""

    async def release_lease(self, lease: Lease) -> None:
        """Give a lease back without writing (shutdown); a lost lease is ignored."""

    async def apply_sync(
        self, lease: Lease, write: SyncWrite, now: datetime
    ) -> AppliedSync:
        """Write one sync's outcome atomically and release the lease.

        In one transaction: the calendar's new sync state; the ChangeSet (added
        and updated occurrences upserted, removed ones deleted, expired ones
        marked expired); pending notifications of removed occurrences, and of
        occurrences whose start moved, cancelled; ``write.cancel`` cancelled;
        then ``write.create`` inserted as `add_notifications` does (cancelled
        ones revived), counted in ``created``. Clears a manual sync request.

        Raises `LeaseLost`, writing nothing, if the lease was taken over or
        released. A crash leaves the store as before or as after, never between.
        """

    async def apply_syncs(
        self, writes: Sequence[tuple[Lease, SyncWrite]], now: datetime
    ) -> list[AppliedSync | None]:
        """Write many syncs' outcomes in one transaction: a group commit.

        Each ``(lease, write)`` is applied as `apply_sync` applies it and its
        lease released; one whose lease is not held any more writes nothing
        and gets None in place of its `AppliedSync` (the others are written).
        One commit for the lot: a crash or an error leaves every calendar of
        the batch as before (the error is raised), never some written.
        """

    async def list_occurrences(
        self,
        calendar_id: str,
        window: Window | None = None,
        *,
        include_expired: bool = False,
    ) -> list[Occurrence]:
        """Return a calendar's occurrences overlapping ``window`` (all if None).

        Sorted by start. Expired occurrences (slid out of the window) are left
        out unless asked for.
        Raises `CalendarNotFound`.
        """

    async def occurrences_starting(
        self, start: datetime, end: datetime
    ) -> list[tuple[str, Occurrence]]:
        """Return (calendar id, occurrence) starting in [start, end), by start.

        Across all calendars that are not paused; expired occurrences are left out.
        This is what `check_notifications` scans.
        """

    # -- notifications -----------------------------------------------------

    async def add_notifications(
        self,
        calendar_id: str,
        notifications: Iterable[Notification],
        now: datetime,
        *,
        status: NotificationStatus = NotificationStatus.PENDING,
    ) -> int:
        """Insert notifications as ``status`` (pending or missed); count the new ones.

        A notification whose (calendar, key, lead, start) exists is skipped, by
        the database's uniqueness, not by a read first; except that a pending
        insert revives a cancelled one (the event moved away and back, a lead
        was removed and re-added): pending again, due at the later of its due
        time and its fire time (an unfinished claim keeps it), its claim token
        and attempts kept, and counted as new. Delivered, failed and missed
        ones are never revived, and a missed insert never changes a stored one.
        One whose occurrence is not stored, live, with that start (it moved or
        went) is skipped too. Raises `CalendarNotFound`, and `ValidationError`
        for a status other than pending or missed.
        """

    async def list_notifications(
        self,
        *,
        calendar_id: str | None = None,
        status: NotificationStatus | None = None,
        uid: str | None = None,
        starts: Window | None = None,
        limit: int = 1000,
    ) -> list[NotificationRecord]:
        """Return notifications, filtered, earliest fire time first.

        ``uid`` keeps those of one event UID; ``starts`` those of events that
        start in [starts.start, starts.end). Every filter is an index lookup.
        """

    async def notification_counts(
        self, *, calendar_id: str | None = None, owner: str | None = None
    ) -> dict[NotificationStatus, int]:
        """Count notifications by status, of one calendar, one owner's, or all.

        Every status is a key (0 when there are none); an unknown calendar or
        owner counts zeros. Read from an index, cheap enough for every `status` call.
        """

    async def claim_notifications(
        self, now: datetime, *, limit: int, worker: str, lease_ttl: timedelta
    ) -> list[NotificationClaim]:
        """Claim up to ``limit`` pending notifications due at ``now`` for delivery.

        Due: ``fire_at <= now`` and no retry or claim in the future (missed,
        cancelled, delivered and failed ones never are). A claim lasts
        ``lease_ttl``; an unfinished claim comes back after it. Concurrent callers
        never receive the same notification while its claim lasts. Each claim
        counts an attempt (``attempts`` grows by one in the claiming write), so
        a notification claimed again after a crash says so.
        """

    async def mark_delivered(self, claim: NotificationClaim, now: datetime) -> None:
        """Record a successful delivery (also when the claim has since expired)."""

    async def mark_failed(
        self,
        claim: NotificationClaim,
        now: datetime,
        *,
        error: str,
        retry_at: datetime | None,
    ) -> bool:
        """Record a failed attempt: retry at ``retry_at``, or dead-letter it if None.

        The attempt was counted by the claim, not again here. Returns False,
        changing nothing, if the claim was taken over or the notification is no
        longer pending.
        """

    async def release_claim(self, claim: NotificationClaim, now: datetime) -> bool:
        """Hand back a claim that was never attempted: due ``now``, attempt uncounted.

        Returns False, changing nothing, if the claim was taken over or the
        notification is no longer pending.
        """

    async def requeue(self, notification_ids: Iterable[str], now: datetime) -> int:
        """Make dead-letter (failed) notifications pending again, count them."""

    # -- history and housekeeping -----------------------------------------

    async def record_job_run(self, run: JobRun) -> None:
        """Append one job run to the history."""

    async def recent_job_runs(
        self, *, job: str | None = None, limit: int = 100
    ) -> list[JobRun]:
        """Return the latest job runs, newest first."""

    async def prune(
        self,
        *,
        occurrences_before: datetime,
        notifications_before: datetime,
        job_runs_before: datetime,
    ) -> PruneCounts:
        """Delete history past retention and return how much went.

        Expired occurrences that ended before ``occurrences_before``; delivered,
        cancelled and missed notifications of events that started before
        ``notifications_before`` (never pending or failed ones); job runs that
        finished before ``job_runs_before``.
        """


class OpensAndCloses:
    """``async with store``: `open` on entry, `close` on exit; for implementers."""

    async def open(self) -> None:
        """Make the store usable."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release what `open` took."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def check_claim(limit: int, worker: str, lease_ttl: timedelta) -> None:
    """Refuse claim arguments no store can honour, with `ValidationError`."""
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValidationError(f"limit must be an int >= 1, got {limit!r}")
    if not isinstance(worker, str) or not worker:
        raise ValidationError("worker must name the claiming worker")
    if not isinstance(lease_ttl, timedelta) or lease_ttl <= timedelta(0):
        raise ValidationError(f"lease_ttl must be a timedelta > 0, got {lease_ttl!r}")


NEW_STATUSES = frozenset({NotificationStatus.PENDING, NotificationStatus.MISSED})
"""The statuses `Store.add_notifications` inserts notifications as."""


def check_new_status(status: NotificationStatus | str) -> NotificationStatus:
    """Return ``status`` if notifications may be inserted as it, else raise.

    Raises `ValidationError` for anything but pending or missed.
    """
    refused = ValidationError(
        f"notifications are added as 'pending' or 'missed', not {status!r}"
    )
    try:
        checked = NotificationStatus(status)
    except ValueError:
        raise refused from None
    if checked not in NEW_STATUSES:
        raise refused
    return checked


def check_limit(limit: int) -> None:
    """Refuse a read limit that is not a whole number >= 0, with `ValidationError`."""
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise ValidationError(f"limit must be an int >= 0, got {limit!r}")


def calendar_not_found(calendar_id: str) -> CalendarNotFound:
    """Return the error every store raises for an unknown calendar id."""
    return CalendarNotFound(
        f"no calendar {calendar_id!r} in the store: check the id (and owner); "
        "`calsync list` shows what is stored"
    )


def lease_lost(lease: Lease) -> LeaseLost:
    """Return the error every store raises for a write under a lost lease."""
    return LeaseLost(
        f"the lease of worker {lease.worker!r} on calendar {lease.calendar.label} "
        "is no longer held (taken over after it expired, or released): "
        "nothing was written"
    )
