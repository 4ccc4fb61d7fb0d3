"""The value types of the pure core: windows, occurrences, problems, change sets."""

from __future__ import annotations

import functools
import hashlib
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum

import attrs

from calsync.core.errors import ValidationError

__all__ = [
    "ChangeSet",
    "EventStatus",
    "Notification",
    "Occurrence",
    "OccurrenceKey",
    "ParsedCalendar",
    "Problem",
    "Window",
    "as_aware_utc",
    "optional_aware_utc",
]


class EventStatus(StrEnum):
    """The iCalendar STATUS values of an event; a cancelled one gets no reminders."""

    TENTATIVE = "TENTATIVE"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"


def as_aware_utc(value: datetime) -> datetime:
    """Return an aware datetime in UTC; refuse naive ones, whose instant is unknown."""
    if not isinstance(value, datetime):
        raise ValidationError(f"expected an aware datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(
            f"naive datetime {value.isoformat()} has no time zone: pass an aware "
            "datetime, e.g. datetime.now(UTC)"
        )
    return value.astimezone(UTC)


def optional_aware_utc(value: datetime | None) -> datetime | None:
    """Return `as_aware_utc` of ``value``, or None for None."""
    return None if value is None else as_aware_utc(value)


@attrs.frozen
class Window:
    """The half-open span [start, end) of time a calendar is expanded in."""

    start: datetime = attrs.field(converter=as_aware_utc)
    end: datetime = attrs.field(converter=as_aware_utc)

    def __attrs_post_init__(self) -> None:
        if self.end <= self.start:
            raise ValidationError(
                f"window end {self.end.isoformat()} must be after its start "
                f"{self.start.isoformat()}"
            )

    @classmethod
    def around(cls, now: datetime, *, past: timedelta, horizon: timedelta) -> Window:
        """Return the window [now - past, now + horizon): the span a sync expands."""
        return cls(now - past, now + horizon)

    def overlaps(self, start: datetime, end: datetime) -> bool:
        """Whether an occurrence spanning [start, end) is inside the window.

        A zero-length occurrence counts when its instant is in [start, end).
        """
        if start == end:
            return self.start <= start < self.end
        return start < self.end and end > self.start


def _text(value: object) -> str:
    """Return text as calsync keeps it: no NUL characters (PostgreSQL refuses them)."""
    return "" if value is None else str(value).replace("\x00", "")


@attrs.frozen(order=True)
class OccurrenceKey:
    """What identifies one occurrence of a calendar across syncs.

    ``recurrence_id`` is ``""`` for a non-recurring event, else the instance's
    original start as iCalendar text: ``YYYYMMDDTHHMMSSZ`` in UTC, or ``YYYYMMDD``
    for an all-day instance.
    """

    uid: str = attrs.field(converter=_text)
    recurrence_id: str = attrs.field(default="", converter=_text)

    def __str__(self) -> str:
        return f"{self.uid}@{self.recurrence_id}" if self.recurrence_id else self.uid


@attrs.frozen
class Occurrence:
    """One instance of an event inside the window; start and end are aware UTC.

    ``tzid`` names the zone whose wall clock the start follows (its TZID, else
    the zone floating times are read in); ``None`` for UTC and all-day times.
    ``start_date``/``end_date`` are the local dates of an all-day occurrence
    (end exclusive). ``alarms`` are the leads of the event's
    own VALARMs (how long before the start each one fires; an absolute trigger
    counts for a non-recurring event only, alarms after the start are left out).
    """

    key: OccurrenceKey
    start: datetime = attrs.field(converter=as_aware_utc)
    end: datetime = attrs.field(converter=as_aware_utc)
    all_day: bool = False
    summary: str = attrs.field(default="", converter=_text)
    location: str = attrs.field(default="", converter=_text)
    description: str = attrs.field(default="", converter=_text)
    status: str = attrs.field(default="", converter=_text)
    sequence: int = 0
    tzid: str | None = None
    start_date: date | None = None
    end_date: date | None = None
    alarms: tuple[timedelta, ...] = ()

    def __attrs_post_init__(self) -> None:
        if self.end < self.start:
            raise ValidationError(
                f"occurrence {self.key} ends ({self.end.isoformat()}) before it "
                f"starts ({self.start.isoformat()})"
            )

    @functools.cached_property
    def content_hash(self) -> str:
        """A digest of what a user sees; never of DTSTAMP or other bookkeeping."""
        fields = (
            self.start.isoformat(),
            self.end.isoformat(),
            "1" if self.all_day else "0",
            self.summary,
            self.location,
            self.description,
            self.status,
        )
        digest = hashlib.blake2b("\x1f".join(fields).encode(), digest_size=16)
        return digest.hexdigest()

    @property
    def duration(self) -> timedelta:
        """How long the occurrence lasts."""
        return self.end - self.start

    @property
    def cancelled(self) -> bool:
        """Whether the event says ``STATUS:CANCELLED`` (in any case): no reminders."""
        return self.status.upper() == EventStatus.CANCELLED


@attrs.frozen
class Problem:
    """Something in a feed calsync had to skip or repair: what, where, and why."""

    what: str
    why: str
    uid: str | None = None
    line: int | None = None

    @property
    def where(self) -> str:
        """A human-readable location: the UID and the line, where known."""
        parts = []
        if self.uid is not None:
            parts.append(f"UID {self.uid!r}")
        if self.line is not None:
            parts.append(f"line {self.line}")
        return ", ".join(parts) or "calendar"

    def __str__(self) -> str:
        return f"{self.what} ({self.where}): {self.why}"


@attrs.frozen
class ParsedCalendar:
    """The result of `parse_ics`: occurrences in the window plus what went wrong.

    ``unreadable_uids`` names the events the feed still carries but that could
    not be read this time: a sync keeps what it stored of them, rather than
    removing them (and cancelling their reminders) over one bad edit.
    """

    occurrences: tuple[Occurrence, ...]
    problems: tuple[Problem, ...] = ()
    name: str | None = None
    timezone: str | None = None
    refresh_interval: timedelta | None = None
    unreadable_uids: frozenset[str] = frozenset()


@attrs.frozen
class ChangeSet:
    """What changed between two expansions of one calendar.

    ``updated`` holds the current versions of occurrences whose key stayed and
    whose content hash changed. ``expired`` occurrences slid out of the past edge
    of the window; they were not deleted from the feed.
    """

    added: tuple[Occurrence, ...] = ()
    updated: tuple[Occurrence, ...] = ()
    removed: tuple[Occurrence, ...] = ()
    expired: tuple[Occurrence, ...] = ()
    unchanged: int = 0

    @property
    def is_empty(self) -> bool:
        """True when nothing was added, updated, removed or expired."""
        return not (self.added or self.updated or self.removed or self.expired)


def _non_negative(
    instance: object, attribute: attrs.Attribute[timedelta], value: timedelta
) -> None:
    if not isinstance(value, timedelta) or value < timedelta(0):
        raise ValidationError(
            f"{attribute.name} must be a timedelta >= 0, got {value!r}"
        )


@attrs.frozen(order=True)
class Notification:
    """A reminder that is due: fire ``lead`` before the occurrence ``start``.

    It is identified by (key, lead, start): an event that moves gets a new one.
    """

    fire_at: datetime = attrs.field(init=False, converter=as_aware_utc)
    key: OccurrenceKey
    lead: timedelta = attrs.field(validator=_non_negative)
    start: datetime = attrs.field(converter=as_aware_utc)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "fire_at", self.start - self.lead)

    @property
    def identity(self) -> tuple[OccurrenceKey, timedelta, datetime]:
        """The triple a notification is created at most once for."""
        return (self.key, self.lead, self.start)
