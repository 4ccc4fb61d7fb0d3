"""Which reminders are due now, and which were missed, with `now` passed in.

A reminder (occurrence, lead) fires once from ``start - lead`` until ``start +
late_grace``; a cancelled occurrence has none.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Protocol

from calsync.core.errors import ValidationError
from calsync.core.model import Notification, Occurrence, as_aware_utc

__all__ = [
    "LeadSource",
    "leads_for",
    "missed",
    "next_fire_after",
    "notifications_due",
    "validated_leads",
]


class LeadSource(Protocol):
    """What `leads_for` reads of a calendar: its leads, and whether VALARMs count."""

    @property
    def leads(self) -> tuple[timedelta, ...]:
        """The calendar's own leads."""

    @property
    def use_alarms(self) -> bool:
        """Whether the events' own VALARMs add leads."""


def notifications_due(
    occurrences: Iterable[Occurrence],
    *,
    leads: Iterable[timedelta],
    now: datetime,
    late_grace: timedelta = timedelta(0),
) -> list[Notification]:
    """Return the notifications with ``start - lead <= now < start + late_grace``.

    Sorted by fire time. Cancelled occurrences get none. The caller excludes the
    (key, lead, start) triples it has already created; this function keeps no state.
    """
    now = as_aware_utc(now)
    lead_list = validated_leads(leads)
    if not isinstance(late_grace, timedelta) or late_grace < timedelta(0):
        raise ValidationError(
            f"late_grace must be a timedelta >= 0, got {late_grace!r}"
        )
    due: list[Notification] = []
    for occurrence in occurrences:
        if occurrence.cancelled:
            continue
        if now >= occurrence.start + late_grace:
            continue
        for lead in lead_list:
            if occurrence.start - lead <= now:
                due.append(
                    Notification(key=occurrence.key, lead=lead, start=occurrence.start)
                )
    due.sort()
    return due


def validated_leads(leads: Iterable[timedelta]) -> list[timedelta]:
    """Return the distinct leads, sorted; refuse anything but timedeltas >= 0."""
    if isinstance(leads, timedelta):
        raise ValidationError(
            "leads must be a collection of timedeltas, e.g. (timedelta(minutes=10),)"
        )
    lead_list = list(leads)
    for lead in lead_list:
        if not isinstance(lead, timedelta) or lead < timedelta(0):
            raise ValidationError(f"a lead must be a timedelta >= 0, got {lead!r}")
    return sorted(set(lead_list))


def next_fire_after(
    occurrence: Occurrence, leads: Iterable[timedelta], now: datetime
) -> datetime | None:
    """Return the occurrence's earliest reminder fire time after ``now``, if any.

    A cancelled occurrence has none. Lets a runtime wake up exactly on time.
    """
    if occurrence.cancelled:
        return None
    ahead = [occurrence.start - lead for lead in leads if occurrence.start - lead > now]
    return min(ahead, default=None)


def leads_for(
    calendar: LeadSource, occurrence: Occurrence, lookahead: timedelta
) -> tuple[timedelta, ...]:
    """Return an occurrence's leads: the calendar's, plus its VALARMs if asked.

    A VALARM further ahead than *lookahead* is left out.
    """
    if not calendar.use_alarms or not occurrence.alarms:
        return calendar.leads
    alarms = (lead for lead in occurrence.alarms if lead <= lookahead)
    return tuple(sorted({*calendar.leads, *alarms}))


def missed(
    occurrence: Occurrence,
    leads: Iterable[timedelta],
    previous_check: datetime,
    now: datetime,
    late_grace: timedelta,
) -> list[Notification]:
    """Return the reminders whose whole firing span lay between two checks.

    Their fire time came after *previous_check* and their grace ended by *now*,
    so no check could create them (calsync was down): they are recorded as missed.
    """
    if occurrence.cancelled:
        return []
    if occurrence.start + late_grace > now:
        return []
    return [
        Notification(key=occurrence.key, lead=lead, start=occurrence.start)
        for lead in leads
        if occurrence.start - lead > previous_check
    ]
