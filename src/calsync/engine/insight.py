"""What will fire and why: `upcoming` and `explain`, read from the store only.

Both are read-only views for people (``calsync upcoming``, ``calsync explain``):
they apply the same rule as `check_notifications` (a reminder fires from start -
lead until start + late grace) to what is stored and never write.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

import attrs

from calsync.core.durations import format_duration
from calsync.core.errors import CalendarNotFound, ValidationError
from calsync.core.model import Occurrence, OccurrenceKey, Window, as_aware_utc
from calsync.core.notify import leads_for
from calsync.core.redact import redact
from calsync.core.zones import resolve_zone
from calsync.stores.records import Calendar, NotificationRecord, NotificationStatus
from calsync.stores.store import Store

__all__ = [
    "UPCOMING_MAX_DAYS",
    "Explanation",
    "FireState",
    "Upcoming",
    "explain",
    "upcoming",
]

FireState = str
"""A reminder's state: ``scheduled`` or a `NotificationStatus` value."""

SCHEDULED = "scheduled"
_ALARM_LOOKAHEAD = timedelta(days=7)
_EXPLAINED_OCCURRENCES = 5
_MANY = 100_000

_Identity = tuple[OccurrenceKey, timedelta, datetime]


@attrs.frozen
class Upcoming:
    """An occurrence ahead and its reminders: (lead, fire time, state) by fire time.

    A state is ``scheduled`` (not created yet, will be at its fire time) or the
    stored notification's status. A cancelled event has no reminders.
    """

    calendar: Calendar
    occurrence: Occurrence
    fires: tuple[tuple[timedelta, datetime, FireState], ...]


@attrs.frozen
class Explanation:
    """Why reminders of one occurrence (or of a calendar, occurrence None) fire or not.

    ``lines`` are sentences for a person, first the most important.
    """

    calendar: Calendar
    occurrence: Occurrence | None
    lines: tuple[str, ...]


# As far as `calsync upcoming --days` goes: a year is all a listing needs.
UPCOMING_MAX_DAYS = 366


async def upcoming(
    store: Store,
    now: datetime,
    *,
    days: float = 7,
    owner: str | None = None,
    late_grace: timedelta = timedelta(0),
    alarm_lookahead: timedelta = _ALARM_LOOKAHEAD,
) -> list[Upcoming]:
    """Return the occurrences of the next ``days`` with their reminders, by start.

    Paused calendars are left out: they create no reminders. An event that started
    less than ``late_grace`` ago is still listed, since its reminder may still go out.
    """
    now = as_aware_utc(now)
    if (
        isinstance(days, bool)
        or not isinstance(days, int | float)
        or not 0 < days <= UPCOMING_MAX_DAYS
    ):
        raise ValidationError(
            f"days must be a number in (0, {UPCOMING_MAX_DAYS}], got {days!r}"
        )
    calendars = {
        calendar.id: calendar for calendar in await store.list_calendars(owner=owner)
    }
    span = Window(now - late_grace, now + timedelta(days=days))
    scanned = await store.occurrences_starting(span.start, span.end)
    records = _by_identity(await store.list_notifications(starts=span, limit=_MANY))
    result = []
    for calendar_id, occurrence in scanned:
        calendar = calendars.get(calendar_id)
        if calendar is None or occurrence.start + late_grace <= now:
            continue
        fires = _fires(calendar, occurrence, records, alarm_lookahead)
        result.append(Upcoming(calendar, occurrence, fires))
    return result


def _by_identity(
    records: Iterable[NotificationRecord],
) -> dict[str, dict[_Identity, NotificationRecord]]:
    """Index notifications by calendar, then by (key, lead, start)."""
    index: dict[str, dict[_Identity, NotificationRecord]] = defaultdict(dict)
    for record in records:
        index[record.calendar_id][record.notification.identity] = record
    return index


def _fires(
    calendar: Calendar,
    occurrence: Occurrence,
    records: Mapping[str, Mapping[_Identity, NotificationRecord]],
    alarm_lookahead: timedelta,
) -> tuple[tuple[timedelta, datetime, FireState], ...]:
    if occurrence.cancelled:
        return ()
    stored = records.get(calendar.id, {})
    fires = []
    for lead in leads_for(calendar, occurrence, alarm_lookahead):
        record = stored.get((occurrence.key, lead, occurrence.start))
        state = SCHEDULED if record is None else str(record.status)
        fires.append((lead, occurrence.start - lead, state))
    return tuple(sorted(fires, key=lambda fire: fire[1]))


# -- explain -------------------------------------------------------------------


async def explain(
    store: Store,
    now: datetime,
    query: str,
    *,
    late_grace: timedelta = timedelta(0),
    alarm_lookahead: timedelta = _ALARM_LOOKAHEAD,
) -> list[Explanation]:
    """Explain the reminders of a calendar (by id) or of an event (by UID).

    For a calendar: its settings and health, then its next few occurrences. For
    a UID: each of its latest and next occurrences, lead by lead, and reminders
    left from earlier starts. Raises `CalendarNotFound` when neither matches.
    """
    now = as_aware_utc(now)
    if not isinstance(query, str) or not query.strip():
        raise ValidationError("explain needs a calendar id or an event UID")
    query = query.strip()
    explainer = _Explainer(store, now, late_grace, alarm_lookahead)
    try:
        calendar = await store.get_calendar(query)
    except CalendarNotFound:
        return await explainer.event(query)
    return await explainer.calendar(calendar)


class _Explainer:
    """Builds explanations at one instant ``now``."""

    def __init__(
        self,
        store: Store,
        now: datetime,
        late_grace: timedelta,
        alarm_lookahead: timedelta,
    ) -> None:
        self._store = store
        self._now = now
        self._grace = late_grace
        self._lookahead = alarm_lookahead

    async def calendar(self, calendar: Calendar) -> list[Explanation]:
        window = Window(self._now - self._grace, self._now + calendar.horizon)
        occurrences = [
            occurrence
            for occurrence in await self._store.list_occurrences(calendar.id, window)
            if occurrence.start + self._grace > self._now
        ][:_EXPLAINED_OCCURRENCES]
        header = list(self._calendar_lines(calendar))
        if not occurrences:
            header.append(
                f"no upcoming events in its window (the next "
                f"{_span(calendar.horizon)}): nothing to remind of"
            )
        explanations = [Explanation(calendar, None, tuple(header))]
        if not occurrences:
            return explanations
        starts = Window(occurrences[0].start, occurrences[-1].start + _TICK)
        records = await self._store.list_notifications(
            calendar_id=calendar.id, starts=starts, limit=_MANY
        )
        stored = _by_identity(records).get(calendar.id, {})
        explanations += [
            Explanation(
                calendar,
                occurrence,
                self._occurrence_lines(calendar, occurrence, stored),
            )
            for occurrence in occurrences
        ]
        return explanations

    async def event(self, uid: str) -> list[Explanation]:
        records = await self._store.list_notifications(uid=uid, limit=_MANY)
        by_calendar: dict[str, list[NotificationRecord]] = defaultdict(list)
        for record in records:
            by_calendar[record.calendar_id].append(record)
        explanations: list[Explanation] = []
        for calendar in await self._store.list_calendars():
            stored = await self._store.list_occurrences(
                calendar.id, include_expired=True
            )
            matches = [occurrence for occurrence in stored if occurrence.key.uid == uid]
            found = by_calendar.get(calendar.id, [])
            if matches or found:
                explanations += self._event_in(calendar, matches, found)
        if not explanations:
            raise CalendarNotFound(
                f"no calendar id or event UID {uid!r} in the store: `calsync list` "
                "shows calendar ids; a UID is the UID property of an event in a "
                "synced feed (is its calendar synced yet?)"
            )
        return explanations

    def _event_in(
        self,
        calendar: Calendar,
        occurrences: list[Occurrence],
        records: list[NotificationRecord],
    ) -> list[Explanation]:
        past = [o for o in occurrences if o.start + self._grace <= self._now]
        ahead = [o for o in occurrences if o.start + self._grace > self._now]
        chosen = past[-1:] + ahead[:_EXPLAINED_OCCURRENCES]
        stored = _by_identity(records).get(calendar.id, {})
        explanations = [
            Explanation(
                calendar,
                occurrence,
                self._occurrence_lines(calendar, occurrence, stored),
            )
            for occurrence in chosen
        ]
        current = {(o.key, o.start) for o in occurrences}
        earlier = [
            record
            for record in records
            if (record.notification.key, record.notification.start) not in current
        ]
        if earlier:
            lines = [
                f"reminders of starts the event no longer has (it moved, or the "
                f"instance went), in {calendar.label}:"
            ]
            lines += [
                self._record_line(record)
                for record in earlier[-_EXPLAINED_OCCURRENCES:]
            ]
            explanations.append(Explanation(calendar, None, tuple(lines)))
        if not occurrences:
            explanations.insert(
                0,
                Explanation(
                    calendar,
                    None,
                    (
                        f"the event is no longer stored in {calendar.label}: it was "
                        "removed from the feed, or slid out of the window",
                    ),
                ),
            )
        return explanations

    # -- lines ------------------------------------------------------------------

    def _calendar_lines(self, calendar: Calendar) -> Iterable[str]:
        state = calendar.state
        yield (
            f"calendar {calendar.label}: {redact(calendar.url)}, synced "
            f"{calendar.schedule} ({calendar.tz or 'UTC'})"
        )
        if calendar.paused:
            yield (
                "paused: not synced and no new reminders until `calsync resume "
                f"{calendar.id}`; reminders already pending still go out"
            )
        alarms = " and at the events' own alarms" if calendar.use_alarms else ""
        yield f"reminds {_leads(calendar.leads)} before each event{alarms}"
        yield (
            f"window: events from {_span(calendar.window_past)} ago to "
            f"{_span(calendar.horizon)} ahead"
        )
        if state.last_success_at is None:
            yield "never synced successfully yet"
        else:
            yield f"last synced successfully {self._when(state.last_success_at)}"
        if state.last_error:
            failures = state.consecutive_failures
            yield f"last error ({failures} failure(s) in a row): {state.last_error}"
        if str(state.circuit) != "closed":
            yield f"circuit {state.circuit}: the feed is rested after repeated failures"
        if state.held_removals:
            yield (
                f"{state.held_removals} removal(s) held back by the mass-deletion "
                f"guard: the next sync applies them if the feed still agrees"
            )
        if state.next_sync_at is not None and not calendar.paused:
            yield f"next sync {self._when(state.next_sync_at)}"
        yield self._grace_line()

    def _occurrence_lines(
        self,
        calendar: Calendar,
        occurrence: Occurrence,
        stored: Mapping[_Identity, NotificationRecord],
    ) -> tuple[str, ...]:
        lines = [self._headline(calendar, occurrence)]
        blocked = self._blocked(calendar, occurrence)
        lines += blocked
        leads = leads_for(calendar, occurrence, self._lookahead)
        for lead in sorted(leads, reverse=True):  # in the order they fire
            record = stored.get((occurrence.key, lead, occurrence.start))
            lines.append(self._lead_line(occurrence, lead, record, bool(blocked)))
        lines.append(self._grace_line())
        return tuple(lines)

    def _headline(self, calendar: Calendar, occurrence: Occurrence) -> str:
        summary = occurrence.summary or "(no summary)"
        if occurrence.all_day and occurrence.start_date is not None:
            start = f"all day on {occurrence.start_date.isoformat()}"
        else:
            start = f"starts {self._when(occurrence.start)}"
            local = _local(occurrence.start, occurrence.tzid)
            if local:
                start = f"{start}, {local}"
        return f"{summary!r} (UID {occurrence.key}) in {calendar.label}: {start}"

    def _blocked(self, calendar: Calendar, occurrence: Occurrence) -> list[str]:
        """Why none of the occurrence's reminders can be created, if so."""
        reasons = []
        if occurrence.cancelled:
            reasons.append(
                "the event is cancelled (STATUS:CANCELLED): it gets no reminders"
            )
        if calendar.paused:
            reasons.append(
                f"its calendar is paused: no reminders are created until "
                f"`calsync resume {calendar.id}`"
            )
        if occurrence.end <= self._now - calendar.window_past:
            reasons.append(
                f"it is outside the window (ended more than "
                f"{_span(calendar.window_past)} ago): expired, no reminders"
            )
        return reasons

    def _lead_line(
        self,
        occurrence: Occurrence,
        lead: timedelta,
        record: NotificationRecord | None,
        blocked: bool,
    ) -> str:
        fire_at = occurrence.start - lead
        prefix = f"lead {format_duration(lead)}: fires {self._when(fire_at)}"
        if record is not None:
            return f"{prefix}: {self._status(record)}"
        if blocked:
            return f"{prefix}: will not fire"
        if self._now >= occurrence.start + self._grace:
            return (
                f"{prefix}: will not fire: the event started before a reminder "
                "was created (calsync was not running, or the event was added late)"
            )
        if fire_at > self._now:
            return f"{prefix}: will fire then (not created yet)"
        return f"{prefix}: due now: the next notification check creates it"

    def _record_line(self, record: NotificationRecord) -> str:
        notification = record.notification
        return (
            f"start {self._when(notification.start)}, lead "
            f"{format_duration(notification.lead)}: {self._status(record)}"
        )

    def _status(self, record: NotificationRecord) -> str:
        status = record.status
        error = f" (last error: {record.last_error})" if record.last_error else ""
        if status is NotificationStatus.DELIVERED:
            delivered = record.delivered_at
            when = self._when(delivered) if delivered is not None else ""
            return f"delivered {when} (notification {record.id})".replace("  ", " ")
        if status is NotificationStatus.FAILED:
            return (
                f"failed after {record.attempts} attempt(s){error}: dead letter; "
                f"`calsync requeue {record.id}` tries again"
            )
        if status is NotificationStatus.CANCELLED:
            return (
                "cancelled (the event moved, was cancelled or removed, or the lead was)"
            )
        if status is NotificationStatus.MISSED:
            end = record.notification.start + self._grace
            return (
                f"missed: calsync was not running from its fire time until "
                f"{self._when(end)} (start + late grace), so it was never sent"
            )
        if record.fire_at > self._now:
            return f"pending, will fire then (notification {record.id})"
        if record.last_error:
            return (
                f"pending, attempt {record.attempts} failed{error}; next try "
                f"{self._when(record.due_at)} (notification {record.id})"
            )
        if record.attempts:
            return (
                f"pending, claimed for delivery {record.attempts} time(s) with no "
                f"outcome yet; comes back {self._when(record.due_at)} at the latest "
                f"(notification {record.id})"
            )
        return f"pending: due, waiting for the next dispatch (notification {record.id})"

    def _grace_line(self) -> str:
        if self._grace <= timedelta(0):
            return "late grace 0s: an event that already started gets no late reminder"
        return (
            f"late grace {format_duration(self._grace)}: a reminder still goes out "
            "up to that long after the event started"
        )

    def _when(self, instant: datetime) -> str:
        return f"{_utc(instant)} ({_relative(instant - self._now)})"


_TICK = timedelta(microseconds=1)


def _utc(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _local(instant: datetime, tzid: str | None) -> str:
    if not tzid or tzid == "UTC":
        return ""
    try:
        zone = resolve_zone(tzid)
    except ValidationError:
        return ""
    return f"{instant.astimezone(zone):%H:%M} {tzid}"


def _leads(leads: Iterable[timedelta]) -> str:
    shown = [format_duration(lead) for lead in leads]
    return ", ".join(shown) if shown else "never"


def _span(value: timedelta) -> str:
    return format_duration(value)


def _relative(delta: timedelta) -> str:
    """Say a signed span like a person: ``in 3 h 5 min``, ``2 min ago``, ``now``."""
    seconds = int(delta.total_seconds())
    if abs(seconds) < 1:
        return "now"
    size = abs(seconds)
    days, rest = divmod(size, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        text = f"{days} d {hours} h" if hours else f"{days} d"
    elif hours:
        text = f"{hours} h {minutes} min" if minutes else f"{hours} h"
    elif minutes:
        text = f"{minutes} min"
    else:
        text = f"{secs} s"
    return f"in {text}" if seconds > 0 else f"{text} ago"
