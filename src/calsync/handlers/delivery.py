"""What a notification handler receives and how it is called.

A handler is any callable taking a `Delivery`: a coroutine function, a plain
function (run in a worker thread), or one of the shipped `LoggingHandler` and
`WebhookHandler`. Raising means the attempt failed; `DeliveryError` with
``permanent=True`` sends the notification straight to the dead letter.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeAlias

import attrs

from calsync.core.errors import CalsyncError, ValidationError
from calsync.core.model import Notification, Occurrence
from calsync.fetch.failures import RetryAfter
from calsync.stores.records import Calendar

__all__ = ["Delivery", "DeliveryError", "Handler", "invoke"]


class DeliveryError(CalsyncError):
    """A handler could not deliver a notification.

    ``permanent=True`` means retrying cannot help (the receiver refused it): the
    notification goes to the dead letter at once. ``retry_after`` is the
    receiver's hint (a delay, or an aware UTC instant) for when to try again.
    """

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        retry_after: RetryAfter | None = None,
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


def _positive_attempt(
    instance: object, attribute: attrs.Attribute[int], value: int
) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValidationError(f"attempt must be an int >= 1, got {value!r}")


def iso_utc(instant: datetime) -> str:
    """Return *instant* as ISO 8601 in UTC with a ``Z``: ``2026-03-30T07:30:00Z``."""
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _iso_date(day: date | None) -> str | None:
    return None if day is None else day.isoformat()


def lead_seconds(lead: timedelta) -> int:
    """Return a lead in whole seconds, as payloads and log records carry it."""
    return lead // timedelta(seconds=1)


def _event(occurrence: Occurrence) -> dict[str, Any]:
    return {
        "uid": occurrence.key.uid,
        "recurrence_id": occurrence.key.recurrence_id,
        "summary": occurrence.summary,
        "location": occurrence.location,
        "description": occurrence.description,
        "status": occurrence.status,
        "start": iso_utc(occurrence.start),
        "end": iso_utc(occurrence.end),
        "all_day": occurrence.all_day,
        "start_date": _iso_date(occurrence.start_date) if occurrence.all_day else None,
        "end_date": _iso_date(occurrence.end_date) if occurrence.all_day else None,
        "tzid": occurrence.tzid,
    }


@attrs.frozen
class Delivery:
    """One attempt to deliver one notification: what a handler receives.

    ``id`` is the notification id, stable across retries and processes: use it as
    the idempotency key, since delivery is at least once. ``occurrence`` is None
    when the event is gone from the store; ``attempt`` is 1 on the first attempt.
    """

    id: str
    calendar: Calendar
    notification: Notification
    occurrence: Occurrence | None
    attempt: int = attrs.field(validator=_positive_attempt)

    def payload(self) -> dict[str, Any]:
        """Return the JSON document for this delivery (also the webhook body).

        Keys come in a fixed order; times are ISO 8601 UTC. The calendar's URL
        and credentials are never part of it. ``uid``, ``recurrence_id`` and
        ``start`` come from the notification, so they are there even when
        ``event`` is null.
        """
        calendar = self.calendar
        notification = self.notification
        return {
            "id": self.id,
            "attempt": self.attempt,
            "calendar": {
                "id": calendar.id,
                "name": calendar.name,
                "owner": calendar.owner,
            },
            "uid": notification.key.uid,
            "recurrence_id": notification.key.recurrence_id,
            "start": iso_utc(notification.start),
            "lead_seconds": lead_seconds(notification.lead),
            "fire_at": iso_utc(notification.fire_at),
            "event": None if self.occurrence is None else _event(self.occurrence),
        }


Handler: TypeAlias = Callable[[Delivery], Awaitable[object] | object]
"""Anything that takes a `Delivery`; raising (or timing out) is a failed attempt."""


def _is_async(handler: Handler) -> bool:
    if inspect.iscoroutinefunction(handler):
        return True
    call = getattr(handler, "__call__", None)  # noqa: B004 - objects with async __call__
    return call is not None and inspect.iscoroutinefunction(call)


async def invoke(handler: Handler, delivery: Delivery) -> None:
    """Call *handler* with *delivery* without blocking the event loop.

    A coroutine function (or an object with an ``async def __call__``) is awaited.
    Any other callable runs in a worker thread; if it returns an awaitable, that
    is awaited on the loop. Whatever the handler raises propagates. A cancelled
    or timed-out call cannot stop a thread that is already running.
    """
    if _is_async(handler):
        result = handler(delivery)
    else:
        result = await asyncio.to_thread(handler, delivery)
    if inspect.isawaitable(result):
        await result
