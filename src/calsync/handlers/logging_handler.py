"""`LoggingHandler`: each reminder as one readable log line with structured fields."""

from __future__ import annotations

import logging
import re
from datetime import UTC, timedelta, tzinfo

from calsync.core.errors import TimezoneError
from calsync.core.redact import redact
from calsync.core.zones import resolve_zone
from calsync.handlers.delivery import Delivery, iso_utc, lead_seconds

__all__ = ["LoggingHandler"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _spoken_lead(lead: timedelta) -> str:
    """``10 min before``, ``1 h 30 min before``, ``2 days before``; ``at the start``."""
    seconds = lead_seconds(lead)
    if seconds <= 0:
        return "at the start"
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, rest = divmod(rest, 60)
    parts = []
    if days:
        parts.append(f"{days} day" if days == 1 else f"{days} days")
    if hours:
        parts.append(f"{hours} h")
    if minutes:
        parts.append(f"{minutes} min")
    if rest:
        parts.append(f"{rest} s")
    return " ".join(parts) + " before"


def _zone(tzid: str | None) -> tzinfo:
    if not tzid:
        return UTC
    try:
        return resolve_zone(tzid)
    except TimezoneError:
        return UTC


def _local_start(delivery: Delivery) -> str:
    """Show the start as a reader expects it: in the event's own zone, else UTC."""
    occurrence = delivery.occurrence
    if occurrence is not None and occurrence.all_day:
        day = occurrence.start_date or occurrence.start.date()
        return f"{day.isoformat()} (all day)"
    start = occurrence.start if occurrence is not None else delivery.notification.start
    zone = _zone(occurrence.tzid if occurrence is not None else None)
    return start.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")


def _one_line(text: str) -> str:
    return " ".join(_CONTROL.sub(" ", text).split())


class LoggingHandler:
    """Log each reminder as one readable line, with structured ``extra`` fields.

    ``Reminder: Standup at 2026-03-30 09:30 CEST (10 min before) [Work]``: the start
    in the event's own zone (UTC when it has none). The default logger is
    ``calsync.notifications``.
    """

    def __init__(
        self, logger: logging.Logger | None = None, *, level: int = logging.INFO
    ) -> None:
        self._logger = logger or logging.getLogger("calsync.notifications")
        self._level = level

    def __repr__(self) -> str:
        return (
            f"LoggingHandler(logger={self._logger.name!r}, "
            f"level={logging.getLevelName(self._level)!r})"
        )

    async def __call__(self, delivery: Delivery) -> None:
        """Log *delivery*; never raises for a well-formed delivery."""
        if not self._logger.isEnabledFor(self._level):
            return
        calendar = delivery.calendar
        occurrence = delivery.occurrence
        notification = delivery.notification
        summary = occurrence.summary if occurrence is not None else ""
        title = _one_line(summary) or f"(event {_one_line(notification.key.uid)})"
        calendar_name = _one_line(calendar.name or redact(calendar.url))
        self._logger.log(
            self._level,
            "Reminder: %s at %s (%s) [%s]",
            title,
            _local_start(delivery),
            _spoken_lead(notification.lead),
            calendar_name,
            extra={
                "calsync_notification_id": delivery.id,
                "calendar_id": calendar.id,
                "calendar_name": calendar.name,
                "owner": calendar.owner,
                "uid": notification.key.uid,
                "recurrence_id": notification.key.recurrence_id,
                "summary": summary,
                "start": iso_utc(notification.start),
                "fire_at": iso_utc(notification.fire_at),
                "lead_seconds": lead_seconds(notification.lead),
                "attempt": delivery.attempt,
            },
        )
