"""Delivering claimed notifications through the host's handler, at least once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from calsync.core.errors import CalendarNotFound
from calsync.core.redact import redact_text
from calsync.core.settings import Settings
from calsync.engine.results import DispatchResult
from calsync.handlers.delivery import Delivery, DeliveryError, Handler, invoke
from calsync.stores.records import Calendar, NotificationClaim
from calsync.stores.store import Store

__all__ = ["dispatch"]

logger = logging.getLogger("calsync.dispatch")

Clock = Callable[[], datetime]
_MAX_ERROR = 500


class _Tally:
    def __init__(self) -> None:
        self.delivered = 0
        self.retried = 0
        self.dead = 0
        self.held = 0
        self.errors: list[str] = []
        self.lags: list[float] = []

    def result(self) -> DispatchResult:
        return DispatchResult(
            self.delivered,
            self.retried,
            self.dead,
            self.held,
            tuple(self.errors),
            tuple(self.lags),
        )


async def dispatch(
    store: Store, settings: Settings, clock: Clock, handler: Handler, limit: int
) -> DispatchResult:
    """Claim up to ``limit`` due notifications and hand each to ``handler``.

    Success marks it delivered; an error schedules a retry with backoff, or puts
    it in the dead letter after ``settings.max_attempts`` or a permanent
    `DeliveryError`. The notification id is the idempotency key for the handler.
    """
    tally = _Tally()
    slots = asyncio.Semaphore(settings.dispatch_concurrency)
    calendars: dict[str, Calendar | None] = {}
    while limit > 0:
        claims = await store.claim_notifications(
            clock(),
            limit=min(limit, settings.dispatch_batch),
            worker=settings.worker,
            lease_ttl=settings.lease_ttl,
        )
        if not claims:
            break
        limit -= len(claims)
        for claim in claims:
            if claim.record.calendar_id not in calendars:
                calendars[claim.record.calendar_id] = await _calendar(
                    store, claim.record.calendar_id
                )

        async def deliver(claim: NotificationClaim) -> None:
            calendar = calendars[claim.record.calendar_id]
            if calendar is None:
                tally.held += 1
                return
            async with slots:
                if clock() + settings.handler_timeout > claim.expires_at:
                    # Too late to finish inside the claim: another dispatcher
                    # could take it over mid-call. Hand it back, attempt unused.
                    tally.held += 1
                    await _release(store, claim, clock())
                    return
                try:
                    await _deliver(
                        store, settings, clock, handler, claim, calendar, tally
                    )
                except Exception:
                    # The claim expires and the notification comes back: at least once.
                    logger.exception(
                        "could not record the delivery of notification %s", claim.id
                    )
                    tally.errors.append(f"{claim.id}: the store refused the outcome")

        async with asyncio.TaskGroup() as group:
            for claim in claims:
                group.create_task(deliver(claim))
        if len(claims) < settings.dispatch_batch:
            break
    return tally.result()


async def _release(store: Store, claim: NotificationClaim, now: datetime) -> None:
    try:
        await store.release_claim(claim, now)
    except Exception:
        # The claim then simply expires and the notification comes back later.
        logger.exception("could not hand back the claim on notification %s", claim.id)


async def _calendar(store: Store, calendar_id: str) -> Calendar | None:
    try:
        return await store.get_calendar(calendar_id)
    except CalendarNotFound:
        return None


async def _deliver(
    store: Store,
    settings: Settings,
    clock: Clock,
    handler: Handler,
    claim: NotificationClaim,
    calendar: Calendar,
    tally: _Tally,
) -> None:
    record = claim.record
    delivery = Delivery(
        id=claim.id,
        calendar=calendar,
        notification=record.notification,
        occurrence=claim.occurrence,
        attempt=claim.attempt,
    )
    timeout = settings.handler_timeout.total_seconds()
    try:
        await asyncio.wait_for(invoke(handler, delivery), timeout)
    except Exception as error:
        await _failed(store, settings, clock, claim, calendar, error, tally)
        return
    delivered_at = clock()
    await store.mark_delivered(claim, delivered_at)
    tally.delivered += 1
    tally.lags.append((delivered_at - record.fire_at).total_seconds())
    logger.info(
        "delivered notification %s for %s",
        claim.id,
        calendar.label,
        extra=_extra(claim, calendar),
    )


async def _failed(
    store: Store,
    settings: Settings,
    clock: Clock,
    claim: NotificationClaim,
    calendar: Calendar,
    error: Exception,
    tally: _Tally,
) -> None:
    attempt = claim.attempt
    message = _describe(error, settings)
    permanent = isinstance(error, DeliveryError) and error.permanent
    now = clock()
    retry_at = None
    if not permanent and attempt < settings.max_attempts:
        retry_at = settings.delivery_retry.next_attempt(now, attempt)
        asked = _asked_retry(error, now, settings)
        if asked is not None:
            retry_at = max(retry_at, asked)
    if not await store.mark_failed(claim, now, error=message, retry_at=retry_at):
        return
    tally.errors.append(f"{claim.id}: {message}")
    if retry_at is None:
        tally.dead += 1
        logger.error(
            "notification %s for %s failed for good after %d attempts: %s",
            claim.id,
            calendar.label,
            attempt,
            message,
            extra=_extra(claim, calendar),
        )
    else:
        tally.retried += 1
        logger.warning(
            "notification %s for %s failed (attempt %d), retry at %s: %s",
            claim.id,
            calendar.label,
            attempt,
            retry_at.isoformat(),
            message,
            extra=_extra(claim, calendar),
        )


def _asked_retry(
    error: Exception, now: datetime, settings: Settings
) -> datetime | None:
    """Return the receiver's Retry-After as an instant, trusted up to a limit."""
    if not isinstance(error, DeliveryError) or error.retry_after is None:
        return None
    hint = error.retry_after
    delay = hint if isinstance(hint, timedelta) else hint - now
    return now + min(max(delay, timedelta(0)), settings.delivery_retry.max_retry_after)


def _describe(error: Exception, settings: Settings) -> str:
    if isinstance(error, TimeoutError):
        seconds = settings.handler_timeout.total_seconds()
        return f"the handler did not finish within {seconds:g} s"
    text = redact_text(f"{type(error).__name__}: {error}")
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 1] + "…"


def _extra(claim: NotificationClaim, calendar: Calendar) -> dict[str, object]:
    notification = claim.record.notification
    return {
        "calsync_notification_id": claim.id,
        "calsync_calendar_id": calendar.id,
        "calsync_uid": notification.key.uid,
        "calsync_fire_at": notification.fire_at.isoformat(),
    }
