"""Creating the reminders whose fire time has come, and recording the ones missed."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

import attrs

from calsync.core.errors import CalendarNotFound, StoreUnavailable
from calsync.core.model import Notification, Occurrence
from calsync.core.notify import (
    leads_for,
    missed,
    next_fire_after,
    notifications_due,
)
from calsync.core.redact import redact_text
from calsync.core.settings import Settings
from calsync.engine.results import CheckResult
from calsync.engine.sync import setting_problem
from calsync.stores.records import Calendar, NotificationStatus
from calsync.stores.store import Store

__all__ = ["check"]

# How far past the longest lead a check looks, so it can tell the next fire time.
_LOOKAHEAD = timedelta(minutes=2)
# How far back a restart looks for reminders that could not fire while calsync was down.
MISSED_LOOKBACK = timedelta(days=7)
_MAX_ERROR = 500

logger = logging.getLogger("calsync.check")


@attrs.frozen
class _Plan:
    due: dict[str, list[Notification]]
    missed: dict[str, list[Notification]]
    next_fire_at: datetime | None
    errors: tuple[str, ...] = ()


async def check(
    store: Store, settings: Settings, now: datetime, previous_check: datetime | None
) -> CheckResult:
    """Add the notifications due at ``now``; record those missed since the last check.

    Missed: the whole span in which a reminder could fire, [start - lead, start +
    late grace), fell after the previous check (or, before the first check ever,
    after the calendar was added) and before this one, so nothing ran to create
    it. They are stored as `NotificationStatus.MISSED` once, never sent. A
    calendar whose settings cannot be used is reported in ``errors`` and skipped;
    the others proceed.
    """
    calendars, errors = _usable(await store.list_calendars(), now)
    if not calendars:
        return CheckResult(errors=errors)
    grace = settings.late_grace
    reach = _reach(calendars.values(), settings.alarm_lookahead)
    since = min(
        now - grace,
        *(_missed_since(c, previous_check, now) for c in calendars.values()),
    )
    scanned = await store.occurrences_starting(since, now + reach)
    plan = _plan(scanned, calendars, settings, now, previous_check)
    errors = [*errors, *plan.errors]
    created = 0
    for calendar_id, notifications in plan.due.items():
        created += await _add(store, calendars[calendar_id], notifications, now, errors)
    missed_count = 0
    for calendar_id, notifications in plan.missed.items():
        missed_count += await _add(
            store,
            calendars[calendar_id],
            notifications,
            now,
            errors,
            status=NotificationStatus.MISSED,
        )
    return CheckResult(
        created=created,
        missed=missed_count,
        scanned=len(scanned),
        next_fire_at=plan.next_fire_at,
        errors=errors,
    )


def _usable(
    calendars: Iterable[Calendar], now: datetime
) -> tuple[dict[str, Calendar], list[str]]:
    """Split the unpaused calendars into usable ones and problems with the rest."""
    usable: dict[str, Calendar] = {}
    errors: list[str] = []
    for calendar in calendars:
        if calendar.paused:
            continue
        problem = setting_problem(calendar, now)
        if problem is None:
            usable[calendar.id] = calendar
        else:
            logger.warning(problem, extra={"calsync_calendar_id": calendar.id})
            errors.append(problem)
    return usable, errors


async def _add(
    store: Store,
    calendar: Calendar,
    notifications: list[Notification],
    now: datetime,
    errors: list[str],
    *,
    status: NotificationStatus = NotificationStatus.PENDING,
) -> int:
    """Store one calendar's reminders; a value the store refuses fails it alone."""
    try:
        return await store.add_notifications(
            calendar.id, notifications, now, status=status
        )
    except StoreUnavailable:
        raise  # the store is down for every calendar: the job fails as a whole
    except CalendarNotFound:
        return 0  # removed since the scan
    except Exception as error:
        errors.append(_failed(calendar, error))
        return 0


def _failed(calendar: Calendar, error: BaseException) -> str:
    logger.exception(
        "checking the reminders of %s failed",
        calendar.label,
        extra={"calsync_calendar_id": calendar.id},
    )
    return redact_text(
        f"{calendar.label}: checking its reminders failed "
        f"({type(error).__name__}: {error}); the other calendars were checked"
    )[:_MAX_ERROR]


def _missed_since(
    calendar: Calendar, previous_check: datetime | None, now: datetime
) -> datetime:
    """Since when a reminder of ``calendar`` that could not fire counts as missed.

    The previous check, but never before the calendar was added (calsync could
    not have known its events), and never more than `MISSED_LOOKBACK` ago.
    """
    since = calendar.created_at
    if previous_check is not None:
        since = max(since, previous_check)
    return max(since, now - MISSED_LOOKBACK)


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
    by_calendar: dict[str, list[Occurrence]] = defaultdict(list)
    for calendar_id, occurrence in scanned:
        if calendar_id in calendars:
            by_calendar[calendar_id].append(occurrence)
    due: dict[str, list[Notification]] = {}
    missed_by: dict[str, list[Notification]] = {}
    fire_times: list[datetime] = []
    errors: list[str] = []
    for calendar_id, occurrences in by_calendar.items():
        calendar = calendars[calendar_id]
        since = _missed_since(calendar, previous_check, now)
        try:
            planned = _plan_calendar(calendar, occurrences, settings, now, since)
        except Exception as error:
            errors.append(_failed(calendar, error))
            continue
        calendar_due, calendar_missed, fire_at = planned
        if calendar_due:
            due[calendar_id] = calendar_due
        if calendar_missed:
            missed_by[calendar_id] = calendar_missed
        if fire_at is not None:
            fire_times.append(fire_at)
    return _Plan(due, missed_by, min(fire_times, default=None), tuple(errors))


def _plan_calendar(
    calendar: Calendar,
    occurrences: Iterable[Occurrence],
    settings: Settings,
    now: datetime,
    missed_since: datetime,
) -> tuple[list[Notification], list[Notification], datetime | None]:
    """One calendar's due and missed reminders, and its next fire time."""
    due: list[Notification] = []
    missed_now: list[Notification] = []
    fire_times: list[datetime] = []
    grace = settings.late_grace
    for occurrence in occurrences:
        leads = leads_for(calendar, occurrence, settings.alarm_lookahead)
        due.extend(
            notifications_due([occurrence], leads=leads, now=now, late_grace=grace)
        )
        missed_now.extend(missed(occurrence, leads, missed_since, now, grace))
        if (fire_at := next_fire_after(occurrence, leads, now)) is not None:
            fire_times.append(fire_at)
    return due, missed_now, min(fire_times, default=None)
