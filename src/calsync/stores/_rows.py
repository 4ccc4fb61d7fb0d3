"""Rows of the SQL stores: how records become column values and back.

Both SQL stores use the same columns; only the representation of instants
differs (SQLite: integer microseconds since the epoch; PostgreSQL: timestamptz),
so each passes its own pair of converters.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import attrs

from calsync.core.auth import BasicAuth, BearerAuth
from calsync.core.durations import format_duration
from calsync.core.errors import StoreError, ValidationError
from calsync.core.model import Notification, Occurrence, OccurrenceKey
from calsync.stores.records import (
    CALENDAR_SPANS,
    Calendar,
    CircuitState,
    JobOutcome,
    JobRun,
    Lease,
    NotificationRecord,
    NotificationStatus,
    SyncState,
)
from calsync.stores.sealing import SecretBox, carries_secret

__all__ = [
    "CALENDAR_COLUMNS",
    "NOTIFICATION_COLUMNS",
    "OCCURRENCE_COLUMNS",
    "SETTINGS_COLUMNS",
    "STATE_COLUMNS",
    "Codec",
    "column_list",
    "epoch_micros",
    "from_epoch_micros",
    "lease_params",
    "micros",
    "reseal_rows",
    "span",
]

logger = logging.getLogger("calsync.store")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

CALENDAR_COLUMNS = (
    "id",
    "owner",
    "url",
    "url_sealed",
    "name",
    "schedule",
    "leads",
    "tz",
    "window_past",
    "horizon",
    "use_alarms",
    "auth",
    "paused",
    "created_at",
    "etag",
    "last_modified",
    "body_hash",
    "last_attempt_at",
    "last_success_at",
    "last_error",
    "consecutive_failures",
    "next_sync_at",
    "circuit",
    "held_removals",
    "held_removals_hash",
    "parsed_at",
    "refresh_interval",
)
"""Calendar columns in the order `Codec.calendar_row` yields them."""

OCCURRENCE_COLUMNS = (
    "calendar_id",
    "uid",
    "recurrence_id",
    "start_at",
    "end_at",
    "all_day",
    "summary",
    "location",
    "description",
    "status",
    "sequence",
    "tzid",
    "start_date",
    "end_date",
    "alarms",
    "content_hash",
)
"""Occurrence columns in the order `Codec.occurrence_row` yields them."""

NOTIFICATION_COLUMNS = (
    "id",
    "calendar_id",
    "uid",
    "recurrence_id",
    "lead",
    "start_at",
    "fire_at",
    "status",
    "created_at",
    "due_at",
    "attempts",
    "last_error",
    "delivered_at",
)
"""Notification columns in the order `Codec.notification_row` yields them."""

STATE_COLUMNS = CALENDAR_COLUMNS[CALENDAR_COLUMNS.index("etag") :]
"""The sync-state columns, written only under a lease."""

SETTINGS_COLUMNS = tuple(
    column
    for column in CALENDAR_COLUMNS[: CALENDAR_COLUMNS.index("etag")]
    if column not in ("id", "owner", "created_at")
)
"""The columns `Store.update_calendar` replaces."""


def micros(value: timedelta) -> int:
    """Return a span as whole microseconds, exactly."""
    return value // timedelta(microseconds=1)


def span(value: int) -> timedelta:
    """Return the span of ``value`` microseconds."""
    return timedelta(microseconds=value)


def epoch_micros(value: datetime) -> int:
    """Return an aware instant as integer microseconds since the epoch, exactly."""
    return micros(value - EPOCH)


def from_epoch_micros(value: int) -> datetime:
    """Return the UTC instant ``value`` microseconds after the epoch."""
    return EPOCH + timedelta(microseconds=value)


def _auth_text(auth: BasicAuth | BearerAuth | None) -> str | None:
    if auth is None:
        return None
    if isinstance(auth, BasicAuth):
        return json.dumps(
            {"kind": "basic", "username": auth.username, "password": auth.password}
        )
    return json.dumps({"kind": "bearer", "token": auth.token})


def _auth_value(text: str | None) -> BasicAuth | BearerAuth | None:
    if not text:
        return None
    data = json.loads(text)
    if data.get("kind") == "basic":
        return BasicAuth(data["username"], data["password"])
    if data.get("kind") == "bearer":
        return BearerAuth(data["token"])
    raise StoreError(f"stored credentials of unknown kind {data.get('kind')!r}")


@attrs.frozen
class Codec:
    """Converts records to column values and back, given how instants are stored.

    ``secrets`` seals a calendar's secret URL and credentials on the way in and
    opens them on the way out (a `SecretBox` without keys passes them through).
    """

    instant: Callable[[datetime], Any]
    """Store an aware datetime."""
    from_instant: Callable[[Any], datetime]
    """Read a stored instant back as an aware UTC datetime."""
    secrets: SecretBox = attrs.field(factory=SecretBox)
    """Seals and opens feed secrets."""

    def url_forms(self, url: str) -> list[str]:
        """Return every value the ``url`` column may hold for ``url``."""
        return self.secrets.url_forms(url)

    def maybe(self, value: datetime | None) -> Any:
        """Store an optional instant."""
        return None if value is None else self.instant(value)

    def from_maybe(self, value: Any) -> datetime | None:
        """Read an optional instant."""
        return None if value is None else self.from_instant(value)

    def calendar_row(self, calendar: Calendar) -> tuple[Any, ...]:
        """Return the values of `CALENDAR_COLUMNS` for a calendar."""
        state = calendar.state
        next_sync_at = state.next_sync_at or calendar.created_at
        auth = _auth_text(calendar.auth)
        return (
            calendar.id,
            calendar.owner,
            *self.secrets.url_columns(calendar.url),
            calendar.name,
            calendar.schedule,
            json.dumps([micros(lead) for lead in calendar.leads]),
            calendar.tz,
            micros(calendar.window_past),
            micros(calendar.horizon),
            calendar.use_alarms,
            None if auth is None else self.secrets.seal(auth),
            calendar.paused,
            self.instant(calendar.created_at),
            *self.state_values(attrs.evolve(state, next_sync_at=next_sync_at)),
        )

    def state_values(self, state: SyncState) -> tuple[Any, ...]:
        """Return the sync-state part of `CALENDAR_COLUMNS` (from ``etag`` on)."""
        return (
            state.etag,
            state.last_modified,
            state.body_hash,
            self.maybe(state.last_attempt_at),
            self.maybe(state.last_success_at),
            state.last_error,
            state.consecutive_failures,
            self.maybe(state.next_sync_at),
            str(state.circuit),
            state.held_removals,
            state.held_removals_hash,
            self.maybe(state.parsed_at),
            None if state.refresh_interval is None else micros(state.refresh_interval),
        )

    def calendar(self, row: Mapping[str, Any]) -> Calendar:
        """Build a calendar from a row that has (at least) `CALENDAR_COLUMNS`."""
        return self.calendar_of([row[name] for name in CALENDAR_COLUMNS])

    def calendar_of(self, values: Sequence[Any]) -> Calendar:
        """Build a calendar from the values of `CALENDAR_COLUMNS`, in order.

        The values were written from a checked calendar, so it is built without
        the checks of its constructor (a claim reads many), as the same values
        would pass them; spans an older calsync allowed are clamped here.
        """
        (
            calendar_id,
            owner,
            url,
            sealed_url,
            name,
            schedule,
            leads,
            tz,
            window_past,
            horizon,
            use_alarms,
            auth,
            paused,
            created_at,
            etag,
            last_modified,
            body_hash,
            last_attempt_at,
            last_success_at,
            last_error,
            consecutive_failures,
            next_sync_at,
            circuit,
            held_removals,
            held_removals_hash,
            parsed_at,
            refresh_interval,
        ) = values[:_CALENDAR_WIDTH]
        when = self.from_instant
        state = _built(
            SyncState,
            etag=etag,
            last_modified=last_modified,
            body_hash=body_hash,
            last_attempt_at=None if last_attempt_at is None else when(last_attempt_at),
            last_success_at=None if last_success_at is None else when(last_success_at),
            last_error=last_error,
            consecutive_failures=consecutive_failures,
            next_sync_at=None if next_sync_at is None else when(next_sync_at),
            circuit=CircuitState(circuit),
            held_removals=held_removals,
            held_removals_hash=held_removals_hash,
            parsed_at=None if parsed_at is None else when(parsed_at),
            refresh_interval=(
                None if refresh_interval is None else span(refresh_interval)
            ),
        )
        secrets = self.secrets
        leads = {
            _in_range(calendar_id, "leads", span(value)) for value in json.loads(leads)
        }
        return _built(
            Calendar,
            url=url if sealed_url is None else secrets.open(sealed_url, calendar_id),
            created_at=when(created_at),
            id=calendar_id,
            owner=owner,
            name=name,
            schedule=schedule,
            leads=tuple(sorted(leads)),
            tz=tz,
            window_past=_in_range(calendar_id, "window_past", span(window_past)),
            horizon=_in_range(calendar_id, "horizon", span(horizon)),
            use_alarms=bool(use_alarms),
            auth=_auth_value(auth and secrets.open(auth, calendar_id)),
            paused=bool(paused),
            state=state,
        )

    def occurrence_row(
        self, calendar_id: str, occurrence: Occurrence
    ) -> tuple[Any, ...]:
        """Return the values of `OCCURRENCE_COLUMNS` for an occurrence."""
        return (
            calendar_id,
            occurrence.key.uid,
            occurrence.key.recurrence_id,
            self.instant(occurrence.start),
            self.instant(occurrence.end),
            occurrence.all_day,
            occurrence.summary,
            occurrence.location,
            occurrence.description,
            occurrence.status,
            occurrence.sequence,
            occurrence.tzid,
            _date_text(occurrence.start_date),
            _date_text(occurrence.end_date),
            json.dumps([micros(lead) for lead in occurrence.alarms]),
            occurrence.content_hash,
        )

    def occurrence(self, row: Mapping[str, Any]) -> Occurrence:
        """Build an occurrence from a row that has `OCCURRENCE_COLUMNS`."""
        return Occurrence(
            key=OccurrenceKey(row["uid"], row["recurrence_id"]),
            start=self.from_instant(row["start_at"]),
            end=self.from_instant(row["end_at"]),
            all_day=bool(row["all_day"]),
            summary=row["summary"],
            location=row["location"],
            description=row["description"],
            status=row["status"],
            sequence=row["sequence"],
            tzid=row["tzid"],
            start_date=_date_value(row["start_date"]),
            end_date=_date_value(row["end_date"]),
            alarms=tuple(span(value) for value in json.loads(row["alarms"])),
        )

    def joined_occurrence(
        self, row: Mapping[str, Any], prefix: str = "o_"
    ) -> Occurrence | None:
        """Build the occurrence a LEFT JOIN brought in as ``o_*`` columns, if any."""
        if row[f"{prefix}calendar_id"] is None:
            return None
        return self.occurrence(
            {column: row[f"{prefix}{column}"] for column in OCCURRENCE_COLUMNS}
        )

    def notification_row(self, record: NotificationRecord) -> tuple[Any, ...]:
        """Return the values of `NOTIFICATION_COLUMNS` for a notification record."""
        notification = record.notification
        return (
            record.id,
            record.calendar_id,
            notification.key.uid,
            notification.key.recurrence_id,
            micros(notification.lead),
            self.instant(notification.start),
            self.instant(notification.fire_at),
            str(record.status),
            self.instant(record.created_at),
            self.instant(record.due_at),
            record.attempts,
            record.last_error,
            self.maybe(record.delivered_at),
        )

    def notification(self, row: Mapping[str, Any]) -> NotificationRecord:
        """Build a notification record from a row that has `NOTIFICATION_COLUMNS`."""
        return NotificationRecord(
            id=row["id"],
            calendar_id=row["calendar_id"],
            notification=Notification(
                key=OccurrenceKey(row["uid"], row["recurrence_id"]),
                lead=span(row["lead"]),
                start=self.from_instant(row["start_at"]),
            ),
            status=NotificationStatus(row["status"]),
            created_at=self.from_instant(row["created_at"]),
            due_at=self.from_instant(row["due_at"]),
            attempts=row["attempts"],
            last_error=row["last_error"],
            delivered_at=self.from_maybe(row["delivered_at"]),
        )

    def job_run(self, row: Mapping[str, Any]) -> JobRun:
        """Build a job run from a row of the job_runs table."""
        counts = row["counts"]
        return JobRun(
            job=row["job"],
            started_at=self.from_instant(row["started_at"]),
            finished_at=self.from_instant(row["finished_at"]),
            outcome=JobOutcome(row["outcome"]),
            counts=json.loads(counts) if isinstance(counts, str) else dict(counts),
            error=row["error"],
        )


_CALENDAR_WIDTH = len(CALENDAR_COLUMNS)

_T = TypeVar("_T")
_set = object.__setattr__


def _built(cls: type[_T], **values: Any) -> _T:
    """Return a frozen attrs record of ``values`` (every field), unchecked.

    Only for values read back from the store, which a checked record wrote.
    """
    record = object.__new__(cls)
    for field, value in values.items():
        _set(record, field, value)
    return record


def _date_text(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def _date_value(text: str | None) -> date | None:
    return None if text is None else date.fromisoformat(text)


def column_list(columns: Sequence[str], prefix: str = "") -> str:
    """Return ``a, b, c`` (each with ``prefix``, e.g. ``o.``) for a SELECT or INSERT."""
    return ", ".join(f"{prefix}{column}" for column in columns)


def lease_params(lease: Lease) -> dict[str, Any]:
    """Return the named parameters that identify a held lease."""
    return {"id": lease.calendar_id, "token": lease.token, "worker": lease.worker}


def reseal_rows(
    codec: Codec, rows: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Return new (id, url, url_sealed, auth) values for rows that hold a secret.

    Each secret is opened with any key and sealed with the first one; a row
    without a secret is left out. Raises `ValidationError` without keys.
    """
    box = codec.secrets
    if not box.sealing:
        raise ValidationError(
            "reseal_secrets() needs keys: set [store] secret_keys "
            "(CALSYNC_STORE_SECRET_KEYS), newest first"
        )
    changed = []
    for row in rows:
        calendar_id = row["id"]
        sealed_url, auth = row["url_sealed"], row["auth"]
        url = row["url"] if sealed_url is None else box.open(sealed_url, calendar_id)
        if auth is None and sealed_url is None and not carries_secret(url):
            continue
        lookup, sealed = box.url_columns(url)
        changed.append(
            {
                "id": calendar_id,
                "url": lookup,
                "url_sealed": sealed,
                "auth": auth and box.seal(box.open(auth, calendar_id)),
            }
        )
    return changed


def _in_range(calendar_id: str, name: str, value: timedelta) -> timedelta:
    """Clamp a stored span past today's range (written by an older calsync).

    Refusing the row would make every listing of the store fail; the calendar
    is read with the nearest value allowed, and the log says which to change.
    """
    limit = CALENDAR_SPANS[name]
    if limit.problem(value) is None:
        return value
    clamped = min(max(value, limit.minimum), limit.maximum)
    if clamped == limit.minimum and not limit.zero_ok:
        clamped = limit.maximum
    logger.warning(
        "calendar %s: its stored %s %s %s; it is read as %s until it is set "
        "again (its [[calendars]] entry in calsync.toml, or update_calendar)",
        calendar_id,
        name.removesuffix("s"),
        format_duration(value),
        limit.problem(value),
        format_duration(clamped),
    )
    return clamped
