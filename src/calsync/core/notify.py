"""Which reminders are due now: the pure rule of DESIGN §3, with `now` passed in."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from calsync.core.errors import ValidationError
from calsync.core.model import Notification, Occurrence, as_aware_utc

__all__ = ["next_fire_after", "notifications_due", "validated_leads"]

_CANCELLED = "CANCELLED"


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
        if occurrence.status.upper() == _CANCELLED:
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
    if occurrence.status.upper() == _CANCELLED:
        return None
    ahead = [occurrence.start - lead for lead in leads if occurrence.start - lead > now]
    return min(ahead, default=None)
