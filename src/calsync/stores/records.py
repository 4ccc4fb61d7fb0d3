"""The records a `Store` keeps: calendars, leases, notifications, job runs."""

from __future__ import annotations

import enum
import hashlib
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

import attrs

from calsync.core.auth import BasicAuth, BearerAuth
from calsync.core.breaker import CircuitState
from calsync.core.durations import LONGEST, Span
from calsync.core.errors import ValidationError
from calsync.core.model import (
    ChangeSet,
    Notification,
    Occurrence,
    as_aware_utc,
    optional_aware_utc,
)
from calsync.core.notify import validated_leads
from calsync.core.redact import redact

__all__ = [
    "CALENDAR_SPANS",
    "AppliedSync",
    "Calendar",
    "CircuitState",
    "JobOutcome",
    "JobRun",
    "Lease",
    "NotificationClaim",
    "NotificationRecord",
    "NotificationStatus",
    "PruneCounts",
    "SyncState",
    "SyncWrite",
    "notification_id",
]


def _non_negative_int(
    instance: object, attribute: attrs.Attribute[int], value: int
) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValidationError(f"{attribute.name} must be an int >= 0, got {value!r}")


def _non_empty(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{attribute.name} must be a non-empty string")


CALENDAR_SPANS = {
    "leads": Span(timedelta(days=366), why="a year ahead"),
    "window_past": Span(timedelta(days=366), why="a year back"),
    "horizon": Span(LONGEST, zero_ok=False, why="about 10 years ahead"),
}
"""The range of each duration setting of a calendar, for every way it is set."""


def _leads(values: Iterable[timedelta]) -> tuple[timedelta, ...]:
    leads = tuple(validated_leads(values))
    for lead in leads:
        CALENDAR_SPANS["leads"].check("a lead", lead)
    return leads


def _optional_span(
    instance: object, attribute: attrs.Attribute[timedelta | None], value: object
) -> None:
    if value is not None and (not isinstance(value, timedelta) or value < timedelta(0)):
        raise ValidationError(f"{attribute.name} must be None or a timedelta >= 0")


def _notifications(values: Iterable[Notification]) -> tuple[Notification, ...]:
    return tuple(values)


def _lead_set(values: Iterable[timedelta] | None) -> frozenset[timedelta] | None:
    return None if values is None else frozenset(values)


def _calendar_span(
    instance: object, attribute: attrs.Attribute[timedelta], value: timedelta
) -> None:
    CALENDAR_SPANS[attribute.name].check(attribute.name, value)


class NotificationStatus(enum.StrEnum):
    """Where a notification is in the outbox.

    ``MISSED`` is a reminder that could not fire because calsync was down past
    the late grace; it is kept so `status` can say so, and never delivered.
    """

    PENDING = "pending"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    FAILED = "failed"
    MISSED = "missed"


class JobOutcome(enum.StrEnum):
    """How a job run ended: all good, some calendars failed, or the job failed."""

    OK = "ok"
    PARTIAL = "partial"
    ERROR = "error"


@attrs.frozen
class SyncState:
    """What the last syncs of a calendar left behind; written only under a lease.

    ``next_sync_at`` of ``None`` means "as soon as possible" (a new calendar).
    ``held_removals`` counts removals the mass-deletion guard holds back, and
    ``held_removals_hash`` fingerprints them so a repeat can be recognised.
    ``parsed_at`` is when the body was last parsed (None: never), and
    ``refresh_interval`` the feed's REFRESH-INTERVAL, kept across 304s.
    """

    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    last_attempt_at: datetime | None = attrs.field(
        default=None, converter=optional_aware_utc
    )
    last_success_at: datetime | None = attrs.field(
        default=None, converter=optional_aware_utc
    )
    last_error: str | None = None
    consecutive_failures: int = attrs.field(default=0, validator=_non_negative_int)
    next_sync_at: datetime | None = attrs.field(
        default=None, converter=optional_aware_utc
    )
    circuit: CircuitState = attrs.field(
        default=CircuitState.CLOSED, converter=CircuitState
    )
    held_removals: int = attrs.field(default=0, validator=_non_negative_int)
    held_removals_hash: str | None = None
    parsed_at: datetime | None = attrs.field(default=None, converter=optional_aware_utc)
    refresh_interval: timedelta | None = attrs.field(
        default=None, validator=_optional_span
    )


@attrs.frozen
class Calendar:
    """One subscribed feed: its settings and its sync state.

    ``url`` may carry a secret and is redacted in `repr`; so is ``auth``.
    ``tz`` is the zone for floating times when the feed names none (None: UTC).
    """

    url: str = attrs.field(validator=_non_empty, repr=redact)
    created_at: datetime = attrs.field(converter=as_aware_utc)
    id: str = attrs.field(factory=lambda: uuid.uuid4().hex, validator=_non_empty)
    owner: str = attrs.field(default="default", validator=_non_empty)
    name: str | None = None
    schedule: str = "every 15m"
    leads: tuple[timedelta, ...] = attrs.field(
        default=(timedelta(minutes=10),), converter=_leads
    )
    tz: str | None = None
    window_past: timedelta = attrs.field(
        default=timedelta(days=1), validator=_calendar_span
    )
    horizon: timedelta = attrs.field(
        default=timedelta(days=90), validator=_calendar_span
    )
    use_alarms: bool = False
    auth: BasicAuth | BearerAuth | None = None
    paused: bool = False
    state: SyncState = SyncState()

    @property
    def label(self) -> str:
        """How errors and logs name this calendar: its name or redacted URL, and id."""
        shown = self.name or redact(self.url)
        return f"{shown} ({self.id})"


@attrs.frozen
class Lease:
    """The right to sync one calendar until ``expires_at``.

    ``token`` grows by one on every claim: it fences writes, so a worker whose
    lease was taken over cannot write (`LeaseLost`).
    """

    calendar: Calendar
    worker: str
    token: int
    expires_at: datetime = attrs.field(converter=as_aware_utc)

    @property
    def calendar_id(self) -> str:
        """The id of the leased calendar."""
        return self.calendar.id

    @property
    def handoff(self) -> str:
        """A text naming this lease, for `Engine.sync_calendar` in another process.

        A task queue's fan-out sends it along with the calendar id; it holds no
        secret, only the token and the worker that claimed the lease.
        """
        return f"{self.token}:{self.worker}"


@attrs.frozen
class SyncWrite:
    """Everything one sync writes, in one transaction, under its lease.

    ``changes`` is None when the occurrences are untouched (304, same body,
    a failed fetch). ``create`` are pending notifications to add (existing ones
    are left alone, cancelled ones revived); ``cancel`` are pending
    notifications to cancel by identity. With ``keep_leads``, the calendar's
    pending notifications of any other lead are cancelled too (its leads
    changed): the store finds them, no read first. Cancelling comes before
    ``create``.
    """

    state: SyncState
    changes: ChangeSet | None = None
    create: tuple[Notification, ...] = attrs.field(default=(), converter=_notifications)
    cancel: tuple[Notification, ...] = attrs.field(default=(), converter=_notifications)
    keep_leads: frozenset[timedelta] | None = attrs.field(
        default=None, converter=_lead_set
    )


@attrs.frozen
class AppliedSync:
    """What `Store.apply_sync` did: notifications created (or revived) and cancelled."""

    created: int = 0
    cancelled: int = 0


def notification_id(calendar_id: str, notification: Notification) -> str:
    """Return the stable id of a notification: the idempotency key for handlers.

    The same (calendar, occurrence key, lead, start) always gets the same id, in
    every store and every process.
    """
    lead_us = notification.lead // timedelta(microseconds=1)
    start = notification.start.isoformat()
    text = "\x1f".join(
        (
            calendar_id,
            notification.key.uid,
            notification.key.recurrence_id,
            str(lead_us),
            start,
        )
    )
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@attrs.frozen
class NotificationRecord:
    """A notification in the outbox with its delivery state.

    ``due_at`` is when it may next be claimed: its fire time, the time of its
    next retry, or the end of the current claim.
    """

    id: str
    calendar_id: str
    notification: Notification
    status: NotificationStatus = attrs.field(converter=NotificationStatus)
    created_at: datetime = attrs.field(converter=as_aware_utc)
    due_at: datetime = attrs.field(converter=as_aware_utc)
    attempts: int = 0
    last_error: str | None = None
    delivered_at: datetime | None = attrs.field(
        default=None, converter=optional_aware_utc
    )

    @property
    def fire_at(self) -> datetime:
        """When the reminder is meant to go out."""
        return self.notification.fire_at


@attrs.frozen
class NotificationClaim:
    """A notification claimed for delivery until ``expires_at``, with its occurrence.

    ``occurrence`` is None if the occurrence is gone from the store.
    """

    record: NotificationRecord
    occurrence: Occurrence | None
    worker: str
    token: int
    expires_at: datetime = attrs.field(converter=as_aware_utc)

    @property
    def id(self) -> str:
        """The notification id, the idempotency key to hand to the handler."""
        return self.record.id

    @property
    def attempt(self) -> int:
        """Which delivery attempt this claim is, 1 on the first: each claim counts."""
        return self.record.attempts


@attrs.frozen
class JobRun:
    """One run of an Engine job, as recorded for status and metrics."""

    job: str = attrs.field(validator=_non_empty)
    started_at: datetime = attrs.field(converter=as_aware_utc)
    finished_at: datetime = attrs.field(converter=as_aware_utc)
    outcome: JobOutcome = attrs.field(converter=JobOutcome)
    counts: Mapping[str, int] = attrs.field(factory=dict, converter=dict)
    error: str | None = None

    @property
    def duration(self) -> timedelta:
        """How long the run took."""
        return self.finished_at - self.started_at


@attrs.frozen
class PruneCounts:
    """How many rows `Store.prune` removed, by kind."""

    occurrences: int = 0
    notifications: int = 0
    job_runs: int = 0
