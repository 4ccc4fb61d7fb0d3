"""Creating the reminders whose fire time has come, and recording the ones missed."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

import attrs

from ._model import Notification, Occurrence
from ._notify import next_fire_after, notifications_due
from ._records import Calendar, NotificationStatus
from ._results import CheckResult
from ._settings import Settings
from ._store.protocol import Store
from ._sync import leads_for

__all__ = ["check", "missed"]

# How far past the longest lead a check looks, so it can tell the next fire time.
_LOOKAHEAD = timedelta(minutes=2)
# How far back a restart looks for reminders that could not fire while calsync was down.
MISSED_LOOKBACK = timedelta(days=7)
_CANCELLED = "CANCELLED"


@attrs.frozen
class _Plan:
    due: dict[str, list[Notification]]
    missed: dict[str, list[Notification]]
    next_fire_at: datetime | None


async def check(
    store: Store, settings: Settings, now: datetime, previous_check: datetime | None
) -> CheckResult:
    """Add the notifications due at ``now``; record those missed since the last check.

    Missed: the whole span in which a reminder could fire, [start - lead, start +
    late grace), fell between the previous check and this one, so calsync was not
    running to create it. They are stored as `NotificationStatus.MISSED`, never sent.
    """
    calendars = {
        calendar.id: calendar
        for calendar in await store.list_calendars()
        if not calendar.paused
    }
    if not calendars:
        return CheckResult()
    grace = settings.late_grace
    reach = _reach(calendars.values(), settings.alarm_lookahead)
    since = now - grace
    if previous_check is not None:
        since = min(since, max(previous_check, now - MISSED_LOOKBACK))
    scanned = await store.occurrences_starting(since, now + reach)
    plan = _plan(scanned, calendars, settings, now, previous_check)
    created = 0
    for calendar_id, notifications in plan.due.items():
        created += await store.add_notifications(calendar_id, notifications, now)
    missed_count = 0
    for calendar_id, notifications in plan.missed.items():
        missed_count += await store.add_notifications(
            calendar_id, notifications, now, status=NotificationStatus.MISSED
        )
    return CheckResult(
        created=created,
        missed=missed_count,
        scanned=len(scanned),
        next_fire_at=plan.next_fire_at,
    )


def _reach(calendars: Iterable[Calendar], alarm_lookahead: timedelta) -> timedelta:
    """How far ahead to scan starts: every lead's fire time, and a little beyond."""
    reach = timedelta(0)
    for calendar in calendars:
        reach = max((reach, *calendar.leads))
        if calendar.use_alarms:
            reach = max(reach, alarm_lookahead)
    return reach + _LOOKAHEAD


def _plan(
    scanned: Iterable[tuple[str, Occurrence]],
    calendars: Mapping[str, Calendar],
    settings: Settings,
    now: datetime,
    previous_check: datetime | None,
) -> _Plan:
    due: dict[str, list[Notification]] = defaultdict(list)
    missed_by: dict[str, list[Notification]] = defaultdict(list)
    fire_times: list[datetime] = []
    grace = settings.late_grace
    for calendar_id, occurrence in scanned:
        calendar = calendars.get(calendar_id)
        if calendar is None:
            continue
        leads = leads_for(calendar, occurrence, settings.alarm_lookahead)
        due[calendar_id].extend(
            notifications_due([occurrence], leads=leads, now=now, late_grace=grace)
        )
        if previous_check is not None:
            missed_by[calendar_id].extend(
                missed(occurrence, leads, previous_check, now, grace)
            )
        if (fire_at := next_fire_after(occurrence, leads, now)) is not None:
            fire_times.append(fire_at)
    return _Plan(
        {key: value for key, value in due.items() if value},
        {key: value for key, value in missed_by.items() if value},
        min(fire_times, default=None),
    )


def missed(
    occurrence: Occurrence,
    leads: Iterable[timedelta],
    previous_check: datetime,
    now: datetime,
    late_grace: timedelta,
) -> list[Notification]:
    """Reminders of ``occurrence`` whose whole firing span lay between two checks."""
    if occurrence.status.upper() == _CANCELLED:
        return []
    if occurrence.start + late_grace > now:
        return []
    return [
        Notification(key=occurrence.key, lead=lead, start=occurrence.start)
        for lead in leads
        if occurrence.start - lead > previous_check
    ]
