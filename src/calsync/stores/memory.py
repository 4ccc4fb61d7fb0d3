"""`MemoryStore`: the Store contract in a process's memory, for tests and trials.

It keeps the same guarantees as the SQL stores within one process (every method
is atomic: it runs without an await between its reads and writes), and nothing
survives the process.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import attrs

from calsync.core.errors import (
    CalendarExists,
    LeaseLost,
    StoreError,
)
from calsync.core.model import (
    ChangeSet,
    Notification,
    Occurrence,
    OccurrenceKey,
    Window,
    as_aware_utc,
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
    SyncWrite,
    notification_id,
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

__all__ = ["MemoryStore"]

_PENDING = NotificationStatus.PENDING
_CANCELLED = NotificationStatus.CANCELLED
_SETTLED = frozenset(
    {NotificationStatus.DELIVERED, _CANCELLED, NotificationStatus.MISSED}
)


@attrs.define
class _CalendarRow:
    calendar: Calendar
    requested_at: datetime | None = None
    lease_worker: str | None = None
    lease_token: int = 0
    lease_expires_at: datetime | None = None
    lease_claimed_at: datetime | None = None

    def leased_at(self, now: datetime) -> bool:
        return self.lease_expires_at is not None and self.lease_expires_at > now


@attrs.define
class _OccurrenceRow:
    occurrence: Occurrence
    expired: bool = False


@attrs.define
class _NotificationRow:
    record: NotificationRecord
    claim_worker: str | None = None
    claim_token: int = 0


class MemoryStore(OpensAndCloses):
    """A `Store` held in memory: fast, isolated per instance, gone with the process."""

    def __init__(self) -> None:
        self._open = False
        self._calendars: dict[str, _CalendarRow] = {}
        self._occurrences: dict[str, dict[OccurrenceKey, _OccurrenceRow]] = {}
        self._notifications: dict[str, _NotificationRow] = {}
        self._job_runs: list[JobRun] = []

    def __repr__(self) -> str:
        return f"MemoryStore(calendars={len(self._calendars)})"

    async def open(self) -> None:
        """Make the store usable; its contents survive close and reopen."""
        self._open = True

    async def close(self) -> None:
        """Mark the store closed; the contents are kept for a reopen."""
        self._open = False

    async def schema_version(self) -> int:
        """Return `SCHEMA_VERSION`: a memory store is always current."""
        self._check_open()
        return SCHEMA_VERSION

    # -- calendars ---------------------------------------------------------

    async def add_calendar(self, calendar: Calendar) -> Calendar:
        """Store a new calendar, due at once unless its state says otherwise."""
        self._check_open()
        if calendar.id in self._calendars:
            raise CalendarExists(f"calendar {calendar.id} already exists")
        self._check_url_free(calendar)
        next_sync_at = calendar.state.next_sync_at or calendar.created_at
        stored = attrs.evolve(
            calendar, state=attrs.evolve(calendar.state, next_sync_at=next_sync_at)
        )
        self._calendars[calendar.id] = _CalendarRow(stored)
        self._occurrences[calendar.id] = {}
        return stored

    async def ensure_calendar(self, calendar: Calendar) -> tuple[Calendar, bool]:
        """Store a calendar unless its owner has its URL; say whether it was added."""
        self._check_open()
        for row in self._calendars.values():
            if (row.calendar.owner, row.calendar.url) == (calendar.owner, calendar.url):
                return row.calendar, False
        return await self.add_calendar(calendar), True

    async def get_calendar(
        self, calendar_id: str, *, owner: str | None = None
    ) -> Calendar:
        """Return one calendar; raises `CalendarNotFound`."""
        self._check_open()
        return self._row(calendar_id, owner).calendar

    async def list_calendars(self, *, owner: str | None = None) -> list[Calendar]:
        """Return the calendars of ``owner`` (all if None), oldest first."""
        self._check_open()
        calendars = [
            row.calendar
            for row in self._calendars.values()
            if owner is None or row.calendar.owner == owner
        ]
        return sorted(
            calendars, key=lambda calendar: (calendar.created_at, calendar.id)
        )

    async def update_calendar(self, calendar: Calendar) -> Calendar:
        """Replace a calendar's settings, keeping its id, owner and sync state."""
        self._check_open()
        row = self._row(calendar.id, None)
        old = row.calendar
        updated = attrs.evolve(
            calendar, owner=old.owner, created_at=old.created_at, state=old.state
        )
        if updated.url != old.url:
            self._check_url_free(updated)
            updated = attrs.evolve(
                updated,
                state=attrs.evolve(
                    old.state, etag=None, last_modified=None, body_hash=None
                ),
            )
        row.calendar = updated
        return updated

    async def remove_calendar(
        self, calendar_id: str, *, owner: str | None = None
    ) -> None:
        """Delete a calendar with its occurrences and notifications."""
        self._check_open()
        self._row(calendar_id, owner)
        del self._calendars[calendar_id]
        del self._occurrences[calendar_id]
        for key in [
            key
            for key, row in self._notifications.items()
            if row.record.calendar_id == calendar_id
        ]:
            del self._notifications[key]

    async def request_sync(self, calendar_id: str, now: datetime) -> None:
        """Ask for a manual sync that comes before periodic ones."""
        now = as_aware_utc(now)
        self._check_open()
        row = self._row(calendar_id, None)
        served = row.lease_claimed_at is not None and (
            row.requested_at is not None and row.requested_at <= row.lease_claimed_at
        )
        if row.requested_at is None or served:
            row.requested_at = now

    # -- syncing -----------------------------------------------------------

    async def claim_calendar(
        self, calendar_id: str, now: datetime, *, worker: str, lease_ttl: timedelta
    ) -> Lease | None:
        """Lease one calendar now, due or not; None while another lease holds it."""
        now = as_aware_utc(now)
        self._check_open()
        check_claim(1, worker, lease_ttl)
        row = self._row(calendar_id, None)
        if row.leased_at(now):
            return None
        return _take_lease(row, now, worker, lease_ttl)

    async def claim_due_calendars(
        self, now: datetime, *, limit: int, worker: str, lease_ttl: timedelta
    ) -> list[Lease]:
        """Lease due calendars: requested ones first, then by ``next_sync_at``."""
        now = as_aware_utc(now)
        self._check_open()
        check_claim(limit, worker, lease_ttl)
        free = [row for row in self._calendars.values() if not row.leased_at(now)]
        requested = sorted(
            (row for row in free if row.requested_at is not None),
            key=lambda row: (row.requested_at, row.calendar.id),
        )
        periodic = sorted(
            (
                row
                for row in free
                if row.requested_at is None
                and not row.calendar.paused
                and _next_sync_at(row) <= now
            ),
            key=lambda row: (_next_sync_at(row), row.calendar.id),
        )
        return [
            _take_lease(row, now, worker, lease_ttl)
            for row in [*requested, *periodic][:limit]
        ]

    async def renew_lease(self, lease: Lease, now: datetime, ttl: timedelta) -> Lease:
        """Extend a held lease; raises `LeaseLost` if it is not held any more."""
        now = as_aware_utc(now)
        self._check_open()
        row = self._held(lease)
        row.lease_expires_at = now + ttl
        return attrs.evolve(lease, calendar=row.calendar, expires_at=now + ttl)

    async def release_lease(self, lease: Lease) -> None:
        """Give a lease back; a lost one is ignored."""
        self._check_open()
        row = self._calendars.get(lease.calendar_id)
        if row is not None and _holds(row, lease):
            _release(row)

    async def apply_sync(
        self, lease: Lease, write: SyncWrite, now: datetime
    ) -> AppliedSync:
        """Write one sync's outcome atomically and release the lease."""
        now = as_aware_utc(now)
        self._check_open()
        return self._apply(lease, write, now)

    async def apply_syncs(
        self, writes: Sequence[tuple[Lease, SyncWrite]], now: datetime
    ) -> list[AppliedSync | None]:
        """Write many syncs' outcomes at once; None for a write whose lease is lost."""
        now = as_aware_utc(now)
        self._check_open()
        applied: list[AppliedSync | None] = []
        for lease, write in writes:
            try:
                applied.append(self._apply(lease, write, now))
            except LeaseLost:
                applied.append(None)
        return applied

    def _apply(self, lease: Lease, write: SyncWrite, now: datetime) -> AppliedSync:
        row = self._held(lease)
        occurrences = self._occurrences[lease.calendar_id]
        staged = copy.copy(occurrences)
        if write.changes is not None:
            _stage_changes(staged, write.changes)
        cancelled = self._cancel_stale(lease.calendar_id, staged, write)
        occurrences.clear()
        occurrences.update(staged)
        created = self._insert(lease.calendar_id, write.create, now)
        state = write.state
        if state.next_sync_at is None:
            state = attrs.evolve(state, next_sync_at=now)
        row.calendar = attrs.evolve(row.calendar, state=state)
        claimed_at = row.lease_claimed_at
        if (
            row.requested_at is not None
            and claimed_at
            and row.requested_at <= claimed_at
        ):
            row.requested_at = None
        _release(row)
        return AppliedSync(created=created, cancelled=cancelled)

    async def list_occurrences(
        self,
        calendar_id: str,
        window: Window | None = None,
        *,
        include_expired: bool = False,
    ) -> list[Occurrence]:
        """Return a calendar's occurrences overlapping ``window``, by start."""
        self._check_open()
        self._row(calendar_id, None)
        found = [
            row.occurrence
            for row in self._occurrences[calendar_id].values()
            if (include_expired or not row.expired)
            and (
                window is None
                or window.overlaps(row.occurrence.start, row.occurrence.end)
            )
        ]
        return sorted(found, key=lambda occurrence: (occurrence.start, occurrence.key))

    async def occurrences_starting(
        self, start: datetime, end: datetime
    ) -> list[tuple[str, Occurrence]]:
        """Return live occurrences of unpaused calendars starting in [start, end)."""
        start, end = as_aware_utc(start), as_aware_utc(end)
        self._check_open()
        found = [
            (calendar_id, row.occurrence)
            for calendar_id, rows in self._occurrences.items()
            if not self._calendars[calendar_id].calendar.paused
            for row in rows.values()
            if not row.expired and start <= row.occurrence.start < end
        ]
        return sorted(found, key=lambda pair: (pair[1].start, pair[0], pair[1].key))

    # -- notifications -----------------------------------------------------

    async def add_notifications(
        self,
        calendar_id: str,
        notifications: Iterable[Notification],
        now: datetime,
        *,
        status: NotificationStatus = _PENDING,
    ) -> int:
        """Insert notifications of stored occurrences as ``status``; count new ones.

        A pending insert revives a cancelled notification. Raises
        `CalendarNotFound`, and `ValidationError` unless pending or missed.
        """
        now = as_aware_utc(now)
        status = check_new_status(status)
        self._check_open()
        self._row(calendar_id, None)
        return self._insert(calendar_id, tuple(notifications), now, status)

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
        self._check_open()
        found = [
            row.record
            for row in self._notifications.values()
            if (calendar_id is None or row.record.calendar_id == calendar_id)
            and (status is None or row.record.status == status)
            and (uid is None or row.record.notification.key.uid == uid)
            and (
                starts is None
                or starts.start <= row.record.notification.start < starts.end
            )
        ]
        found.sort(key=lambda record: (record.fire_at, record.id))
        return found[:limit]

    async def notification_counts(
        self, *, calendar_id: str | None = None, owner: str | None = None
    ) -> dict[NotificationStatus, int]:
        """Count notifications by status, of a calendar or owner; every status a key."""
        self._check_open()
        counts = dict.fromkeys(NotificationStatus, 0)
        for row in self._notifications.values():
            record = row.record
            if calendar_id is not None and record.calendar_id != calendar_id:
                continue
            if owner is not None and self._owner_of(record.calendar_id) != owner:
                continue
            counts[record.status] += 1
        return counts

    def _owner_of(self, calendar_id: str) -> str | None:
        row = self._calendars.get(calendar_id)
        return None if row is None else row.calendar.owner

    async def claim_notifications(
        self, now: datetime, *, limit: int, worker: str, lease_ttl: timedelta
    ) -> list[NotificationClaim]:
        """Claim pending notifications due at ``now`` until ``now + lease_ttl``."""
        now = as_aware_utc(now)
        self._check_open()
        check_claim(limit, worker, lease_ttl)
        due = sorted(
            (
                row
                for row in self._notifications.values()
                if row.record.status == _PENDING and row.record.due_at <= now
            ),
            key=lambda row: (row.record.due_at, row.record.id),
        )
        claims = []
        for row in due[:limit]:
            row.claim_worker = worker
            row.claim_token += 1
            row.record = attrs.evolve(
                row.record,
                due_at=now + lease_ttl,
                attempts=row.record.attempts + 1,
            )
            claims.append(
                NotificationClaim(
                    record=row.record,
                    occurrence=self._occurrence_of(row.record),
                    worker=worker,
                    token=row.claim_token,
                    expires_at=now + lease_ttl,
                )
            )
        return claims

    async def mark_delivered(self, claim: NotificationClaim, now: datetime) -> None:
        """Record a delivery, whoever holds the claim now."""
        now = as_aware_utc(now)
        self._check_open()
        row = self._notifications.get(claim.id)
        if row is None or row.record.status == NotificationStatus.DELIVERED:
            return
        row.record = attrs.evolve(
            row.record,
            status=NotificationStatus.DELIVERED,
            delivered_at=now,
        )

    async def mark_failed(
        self,
        claim: NotificationClaim,
        now: datetime,
        *,
        error: str,
        retry_at: datetime | None,
    ) -> bool:
        """Record a failed attempt; retry at ``retry_at`` or dead-letter it."""
        now = as_aware_utc(now)
        retry = None if retry_at is None else as_aware_utc(retry_at)
        row = self._claimed(claim)
        if row is None:
            return False
        row.record = attrs.evolve(
            row.record,
            last_error=error,
            status=_PENDING if retry is not None else NotificationStatus.FAILED,
            due_at=retry if retry is not None else row.record.due_at,
        )
        return True

    def _claimed(self, claim: NotificationClaim) -> _NotificationRow | None:
        """Return the claim's notification if the claim holds it and it is pending."""
        self._check_open()
        row = self._notifications.get(claim.id)
        if row is None or row.claim_token != claim.token:
            return None
        return row if row.record.status == _PENDING else None

    async def release_claim(self, claim: NotificationClaim, now: datetime) -> bool:
        """Hand back a claim never attempted: due ``now``, its attempt uncounted."""
        now = as_aware_utc(now)
        row = self._claimed(claim)
        if row is None:
            return False
        row.claim_token += 1
        row.record = attrs.evolve(
            row.record, due_at=now, attempts=row.record.attempts - 1
        )
        return True

    async def requeue(self, notification_ids: Iterable[str], now: datetime) -> int:
        """Make dead-letter notifications pending again, due now."""
        now = as_aware_utc(now)
        self._check_open()
        count = 0
        for notification_id_ in set(notification_ids):
            row = self._notifications.get(notification_id_)
            if row is None or row.record.status != NotificationStatus.FAILED:
                continue
            row.record = attrs.evolve(
                row.record, status=_PENDING, due_at=now, attempts=0
            )
            count += 1
        return count

    # -- history and housekeeping -----------------------------------------

    async def record_job_run(self, run: JobRun) -> None:
        """Append one job run to the history."""
        self._check_open()
        self._job_runs.append(run)

    async def recent_job_runs(
        self, *, job: str | None = None, limit: int = 100
    ) -> list[JobRun]:
        """Return the latest job runs, newest first."""
        check_limit(limit)
        self._check_open()
        runs = [run for run in self._job_runs if job is None or run.job == job]
        runs.sort(key=lambda run: run.finished_at, reverse=True)
        return runs[:limit]

    async def prune(
        self,
        *,
        occurrences_before: datetime,
        notifications_before: datetime,
        job_runs_before: datetime,
    ) -> PruneCounts:
        """Delete expired occurrences, settled notifications and old job runs."""
        occurrences_before = as_aware_utc(occurrences_before)
        notifications_before = as_aware_utc(notifications_before)
        job_runs_before = as_aware_utc(job_runs_before)
        self._check_open()
        occurrences = 0
        for rows in self._occurrences.values():
            gone = [
                key
                for key, occurrence_row in rows.items()
                if occurrence_row.expired
                and occurrence_row.occurrence.end < occurrences_before
            ]
            for key in gone:
                del rows[key]
            occurrences += len(gone)
        gone_ids = [
            record_id
            for record_id, row in self._notifications.items()
            if row.record.status in _SETTLED
            and row.record.notification.start < notifications_before
        ]
        for record_id in gone_ids:
            del self._notifications[record_id]
        kept = [run for run in self._job_runs if run.finished_at >= job_runs_before]
        job_runs = len(self._job_runs) - len(kept)
        self._job_runs = kept
        return PruneCounts(
            occurrences=occurrences, notifications=len(gone_ids), job_runs=job_runs
        )

    # -- helpers -----------------------------------------------------------

    def _check_open(self) -> None:
        if not self._open:
            raise StoreError("the MemoryStore is closed: open it first (async with)")

    def _row(self, calendar_id: str, owner: str | None) -> _CalendarRow:
        row = self._calendars.get(calendar_id)
        if row is None or (owner is not None and row.calendar.owner != owner):
            raise calendar_not_found(calendar_id)
        return row

    def _check_url_free(self, calendar: Calendar) -> None:
        for row in self._calendars.values():
            other = row.calendar
            if (
                other.id != calendar.id
                and other.owner == calendar.owner
                and other.url == calendar.url
            ):
                raise CalendarExists(
                    f"owner {calendar.owner!r} already has this URL as calendar "
                    f"{other.label}"
                )

    def _held(self, lease: Lease) -> _CalendarRow:
        row = self._calendars.get(lease.calendar_id)
        if row is None or not _holds(row, lease):
            raise lease_lost(lease)
        return row

    def _cancel_stale(
        self,
        calendar_id: str,
        staged: dict[OccurrenceKey, _OccurrenceRow],
        write: SyncWrite,
    ) -> int:
        """Cancel pending reminders of removed or moved occurrences, and ``cancel``.

        Like the SQL stores, only the keys the ChangeSet touches are checked;
        with ``keep_leads``, reminders of other leads are cancelled too.
        """
        changes, keep = write.changes, write.keep_leads
        wanted = {notification.identity for notification in write.cancel}
        touched: set[OccurrenceKey] = set()
        if changes is not None:
            touched = {
                occurrence.key
                for occurrence in (*changes.added, *changes.updated, *changes.removed)
            }
        count = 0
        for row in self._notifications.values():
            record = row.record
            if record.calendar_id != calendar_id or record.status != _PENDING:
                continue
            key = record.notification.key
            stored = staged.get(key)
            moved = key in touched and (
                stored is None or stored.occurrence.start != record.notification.start
            )
            other_lead = keep is not None and record.notification.lead not in keep
            if moved or other_lead or record.notification.identity in wanted:
                row.record = attrs.evolve(record, status=_CANCELLED)
                count += 1
        return count

    def _insert(
        self,
        calendar_id: str,
        notifications: Iterable[Notification],
        now: datetime,
        status: NotificationStatus = _PENDING,
    ) -> int:
        occurrences = self._occurrences[calendar_id]
        count = 0
        for notification in notifications:
            stored = occurrences.get(notification.key)
            if stored is None or stored.expired:
                continue
            if stored.occurrence.start != notification.start:
                continue
            key = notification_id(calendar_id, notification)
            existing = self._notifications.get(key)
            if existing is None:
                self._notifications[key] = _NotificationRow(
                    NotificationRecord(
                        id=key,
                        calendar_id=calendar_id,
                        notification=notification,
                        status=status,
                        created_at=now,
                        due_at=notification.fire_at,
                    )
                )
                count += 1
            elif status == _PENDING and existing.record.status == _CANCELLED:
                _revive(existing)
                count += 1
        return count

    def _occurrence_of(self, record: NotificationRecord) -> Occurrence | None:
        rows = self._occurrences.get(record.calendar_id, {})
        stored = rows.get(record.notification.key)
        return None if stored is None else stored.occurrence


def _next_sync_at(row: _CalendarRow) -> datetime:
    return row.calendar.state.next_sync_at or row.calendar.created_at


def _holds(row: _CalendarRow, lease: Lease) -> bool:
    return row.lease_token == lease.token and row.lease_worker == lease.worker


def _take_lease(
    row: _CalendarRow, now: datetime, worker: str, lease_ttl: timedelta
) -> Lease:
    row.lease_worker = worker
    row.lease_token += 1
    row.lease_expires_at = now + lease_ttl
    row.lease_claimed_at = now
    return Lease(row.calendar, worker, row.lease_token, row.lease_expires_at)


def _revive(row: _NotificationRow) -> None:
    """Make a cancelled notification pending again; an unfinished claim keeps it."""
    record = row.record
    due_at = max(record.due_at, record.fire_at)
    row.record = attrs.evolve(record, status=_PENDING, due_at=due_at)


def _release(row: _CalendarRow) -> None:
    row.lease_worker = None
    row.lease_expires_at = None
    row.lease_claimed_at = None


def _stage_changes(
    staged: dict[OccurrenceKey, _OccurrenceRow], changes: ChangeSet
) -> None:
    for occurrence in (*changes.added, *changes.updated):
        staged[occurrence.key] = _OccurrenceRow(occurrence)
    for occurrence in changes.removed:
        staged.pop(occurrence.key, None)
    for occurrence in changes.expired:
        if occurrence.key in staged:
            staged[occurrence.key] = _OccurrenceRow(
                staged[occurrence.key].occurrence, True
            )
