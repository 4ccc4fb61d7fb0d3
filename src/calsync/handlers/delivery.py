"""What a notification handler receives, how it is called, and the shipped handlers.

A handler is any callable taking a `Delivery`: a coroutine function, a plain
function (run in a worker thread), or one of `LoggingHandler` and the signed
`WebhookHandler`. Raising means the attempt failed; `DeliveryError` with
``permanent=True`` sends the notification straight to the dead letter.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta, tzinfo
from http import HTTPStatus
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import Any, Self, TypeAlias

import aiohttp
import attrs
from aiohttp.abc import AbstractResolver
from yarl import URL

from calsync.core.errors import CalsyncError, TimezoneError, ValidationError
from calsync.core.model import Notification, Occurrence, as_aware_utc
from calsync.core.redact import redact
from calsync.core.zones import resolve_zone
from calsync.fetch.failures import RetryAfter
from calsync.fetch.hints import parse_retry_after
from calsync.fetch.http import describe_transport_error
from calsync.fetch.ssrf import (
    BlockedTarget,
    GuardedResolver,
    TargetGuard,
    allow_advice,
    guarded_connector,
    host_problem,
)
from calsync.stores.records import Calendar

__all__ = [
    "SIGNATURE_HEADER",
    "Delivery",
    "DeliveryError",
    "Handler",
    "LoggingHandler",
    "WebhookHandler",
    "WebhookVerificationError",
    "invoke",
    "sign_webhook",
    "verify_webhook",
]

SIGNATURE_HEADER = "Calsync-Signature"
"""The request header that carries a webhook's timestamp and HMAC signatures."""

_RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "host", "idempotency-key", "calsync-signature"}
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEX_SIGNATURE = re.compile(r"^[0-9a-fA-F]{64}$")
_MAX_SIGNATURE_HEADER = 4096


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


class WebhookVerificationError(CalsyncError):
    """A received webhook is forged, stale or malformed; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"webhook refused: {reason}")


def _positive_attempt(
    instance: object, attribute: attrs.Attribute[int], value: int
) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValidationError(f"attempt must be an int >= 1, got {value!r}")


def _iso(instant: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``: ``2026-03-30T07:30:00Z``."""
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _iso_date(day: date | None) -> str | None:
    return None if day is None else day.isoformat()


def _lead_seconds(lead: timedelta) -> int:
    return lead // timedelta(seconds=1)


def _event(occurrence: Occurrence) -> dict[str, Any]:
    return {
        "uid": occurrence.key.uid,
        "recurrence_id": occurrence.key.recurrence_id,
        "summary": occurrence.summary,
        "location": occurrence.location,
        "description": occurrence.description,
        "status": occurrence.status,
        "start": _iso(occurrence.start),
        "end": _iso(occurrence.end),
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
            "start": _iso(notification.start),
            "lead_seconds": _lead_seconds(notification.lead),
            "fire_at": _iso(notification.fire_at),
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


def _spoken_lead(lead: timedelta) -> str:
    """``10 min before``, ``1 h 30 min before``, ``2 days before``; ``at the start``."""
    seconds = _lead_seconds(lead)
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
                "start": _iso(notification.start),
                "fire_at": _iso(notification.fire_at),
                "lead_seconds": _lead_seconds(notification.lead),
                "attempt": delivery.attempt,
            },
        )


def _secret_bytes(secret: str | bytes, name: str = "secret") -> bytes:
    if isinstance(secret, str):
        secret = secret.encode()
    if not isinstance(secret, bytes) or not secret:
        raise ValidationError(f"the webhook {name} must be a non-empty str or bytes")
    return secret


def _digest(secret: bytes, timestamp: int, body: bytes) -> str:
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign_webhook(body: bytes, secret: str | bytes, *, timestamp: int) -> str:
    """Return the ``Calsync-Signature`` value for *body*: ``t=<timestamp>,v1=<hex>``.

    ``v1`` is HMAC-SHA256 with *secret* over ``f"{timestamp}."`` followed by the
    body bytes (Stripe's scheme); *timestamp* is in Unix seconds.
    """
    key = _secret_bytes(secret)
    return f"t={int(timestamp)},v1={_digest(key, int(timestamp), bytes(body))}"


def _user_agent() -> str:
    try:
        release = version("calsync")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        release = "0"
    return f"calsync/{release} (+https://github.com/calsync/calsync)"


def _webhook_url(url: str) -> str:
    shown = redact(str(url))
    try:
        parsed = URL(url) if isinstance(url, str) else None
    except (ValueError, TypeError):
        parsed = None
    if parsed is None or not parsed.is_absolute() or not parsed.raw_host:
        raise ValidationError(
            f"webhook URL {shown} is not an absolute http(s) URL with a host"
        )
    if parsed.scheme not in ("http", "https"):
        raise ValidationError(
            f"webhook URL {shown}: the scheme must be http or https, "
            f"not {parsed.scheme!r}"
        )
    problem = host_problem(parsed.raw_host)
    if problem is not None:
        raise ValidationError(f"webhook URL {shown}: the host {problem}")
    return url


def _blocked(shown: str, host: str, reason: str) -> str:
    """Say why the webhook's target is refused, and how to open it."""
    return (
        f"webhook URL {shown}: refused to connect to {host}: {reason}; if the "
        f"receiver is meant to be reached, {allow_advice(host)}"
    )


def _extra_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    extra = dict(headers or {})
    for name, value in extra.items():
        if not isinstance(name, str) or not name or _CONTROL.search(name):
            raise ValidationError("webhook header names must be non-empty strings")
        # The message never shows the value: it may be a credential.
        if not isinstance(value, str) or _CONTROL.search(value):
            raise ValidationError(
                f"webhook header {name!r} must be a string without control characters"
            )
        if name.lower() in _RESERVED_HEADERS:
            raise ValidationError(
                f"webhook header {name!r} is set by calsync and cannot be overridden"
            )
    return extra


def _status_advice(status: int) -> str:
    if status in (401, 403):
        return "check the webhook secret and the receiver's credentials"
    if status in (404, 405, 410):
        return "check the webhook URL"
    if 300 <= status < 400:
        return "calsync does not follow webhook redirects: configure the final URL"
    return "the receiver refused the notification; fix it, then requeue"


def _phrase(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _retryable_status(status: int) -> bool:
    return status in (408, 429) or 500 <= status < 600


class WebhookHandler:
    """POST each delivery as signed JSON to *url*; 2xx is success.

    Like feeds, the receiver must be a public address unless *allow* opens it
    (the fetcher's allow-list: networks, host names, ``*.domains``); a name that
    resolves to a refused address is refused when it connects. A *session* you
    pass is yours: only IP literals and ``localhost`` are checked then.
    *resolver* replaces aiohttp's DNS resolver (as for `HttpFetcher`).
    Headers: ``Idempotency-Key`` (the delivery id) and ``Calsync-Signature``
    (``t=<unix seconds>,v1=<HMAC-SHA256 hex>``, see `sign_webhook`). 408, 429,
    5xx, timeouts and connection errors raise a retryable `DeliveryError`; any
    other status a permanent one. Errors, logs and `repr` show the URL redacted
    and never the secret. The handler owns its aiohttp session unless given one.
    """

    def __init__(
        self,
        url: str,
        secret: str | bytes,
        *,
        timeout: timedelta = timedelta(seconds=10),
        headers: Mapping[str, str] | None = None,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.time,
        allow: Iterable[str] = (),
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._url = _webhook_url(url)
        self._shown = redact(url)
        self._guard = TargetGuard.from_allow(allow)
        host = URL(url).raw_host or ""
        reason = self._guard.check_host(host)
        if reason is not None:
            raise ValidationError(_blocked(self._shown, host, reason))
        self._inner_resolver = resolver
        self._resolver: GuardedResolver | None = None
        self._secret = _secret_bytes(secret)
        if not isinstance(timeout, timedelta) or timeout <= timedelta(0):
            raise ValidationError(
                f"webhook timeout must be a positive timedelta, got {timeout!r}"
            )
        self._timeout = timeout.total_seconds()
        self._headers = _extra_headers(headers)
        self._clock = clock
        self._session = session
        self._owns_session = session is None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"WebhookHandler(url={self._shown!r}, timeout={self._timeout:g}s)"

    async def __aenter__(self) -> Self:
        self._session_for_running_loop()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session if the handler made it; later calls raise RuntimeError."""
        self._closed = True
        session, self._session = self._session, None
        resolver, self._resolver = self._resolver, None
        if session is not None and self._owns_session:
            await session.close()
        if resolver is not None:
            await resolver.close()

    async def __call__(self, delivery: Delivery) -> None:
        """POST *delivery*; raise `DeliveryError` unless the receiver answers 2xx."""
        session = self._session_for_running_loop()
        body = json.dumps(delivery.payload(), separators=(",", ":")).encode()
        timestamp = int(self._clock())
        headers = {
            **self._headers,
            "Content-Type": "application/json",
            "Idempotency-Key": delivery.id,
            SIGNATURE_HEADER: (
                f"t={timestamp},v1={_digest(self._secret, timestamp, body)}"
            ),
        }
        error: DeliveryError
        try:
            async with (
                asyncio.timeout(self._timeout),
                session.post(
                    self._url, data=body, headers=headers, allow_redirects=False
                ) as response,
            ):
                status = response.status
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
        except BlockedTarget as blocked:
            error = self._refusal(delivery, blocked)
        except TimeoutError:
            error = self._failure(
                delivery, f"did not answer within {self._timeout:g}s", permanent=False
            )
        except aiohttp.InvalidURL:
            error = self._failure(
                delivery, "cannot be requested (invalid URL)", permanent=True
            )
        except aiohttp.ClientError as transport_error:
            error = self._failure(
                delivery,
                f"could not be reached: {describe_transport_error(transport_error)}",
                permanent=False,
            )
        else:
            if 200 <= status < 300:
                return
            error = self._status_failure(delivery, status, retry_after)
        # Raised outside the except blocks: aiohttp's exception, whose text may
        # hold the full URL, is neither the cause nor the context.
        raise error

    def _refusal(self, delivery: Delivery, blocked: BlockedTarget) -> DeliveryError:
        """Fail for good: the receiver's name resolved only to refused addresses."""
        problem = _blocked(self._shown, blocked.host, blocked.reason)
        return DeliveryError(
            f"{delivery.calendar.label}: {problem} (notification {delivery.id}, "
            "not retried)",
            permanent=True,
        )

    def _failure(
        self,
        delivery: Delivery,
        problem: str,
        *,
        permanent: bool,
        retry_after: RetryAfter | None = None,
    ) -> DeliveryError:
        what_next = "not retried" if permanent else "retryable"
        return DeliveryError(
            f"{delivery.calendar.label}: webhook {self._shown} {problem} for "
            f"notification {delivery.id} ({what_next})",
            permanent=permanent,
            retry_after=retry_after,
        )

    def _status_failure(
        self, delivery: Delivery, status: int, retry_after: RetryAfter | None
    ) -> DeliveryError:
        if _retryable_status(status):
            return self._failure(
                delivery,
                f"answered HTTP {_phrase(status)}",
                permanent=False,
                retry_after=retry_after,
            )
        return self._failure(
            delivery,
            f"answered HTTP {_phrase(status)}; {_status_advice(status)}",
            permanent=True,
        )

    def _session_for_running_loop(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._closed:
            raise RuntimeError("this WebhookHandler is closed; create a new one")
        if self._session is None:
            connector, self._resolver = guarded_connector(
                self._guard, self._inner_resolver
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": _user_agent()},
                trust_env=False,
            )
            self._loop = loop
        elif self._owns_session and self._loop is not loop:
            raise RuntimeError(
                "a WebhookHandler belongs to the event loop it first posted on; "
                "create one handler per event loop"
            )
        return self._session


def _secrets(secret: str | bytes | Sequence[str | bytes]) -> list[bytes]:
    if isinstance(secret, str | bytes):
        return [_secret_bytes(secret)]
    keys = [_secret_bytes(each) for each in secret]
    if not keys:
        raise ValidationError("pass at least one webhook secret")
    return keys


def _parse_signature(header: str) -> tuple[int, list[str]]:
    """Split ``t=...,v1=...[,v1=...]``; skip other schemes (for later versions)."""
    if not isinstance(header, str) or not header.strip():
        raise WebhookVerificationError(f"the {SIGNATURE_HEADER} header is missing")
    if len(header) > _MAX_SIGNATURE_HEADER:
        raise WebhookVerificationError(f"the {SIGNATURE_HEADER} header is too long")
    timestamps: list[str] = []
    signatures: list[str] = []
    for position, element in enumerate(header.split(","), start=1):
        name, equals, value = element.strip().partition("=")
        if not equals or not name.strip():
            raise WebhookVerificationError(
                f"the {SIGNATURE_HEADER} header is malformed: element {position} "
                "is not name=value"
            )
        if name.strip() == "t":
            timestamps.append(value.strip())
        elif name.strip() == "v1":
            signatures.append(value.strip())
    if len(timestamps) != 1:
        raise WebhookVerificationError(
            f"the {SIGNATURE_HEADER} header must carry exactly one t= timestamp"
        )
    stamp = timestamps[0]
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        raise WebhookVerificationError(
            f"the {SIGNATURE_HEADER} timestamp must be whole Unix seconds"
        )
    if not signatures:
        raise WebhookVerificationError(
            f"the {SIGNATURE_HEADER} header has no v1= signature"
        )
    if not all(_HEX_SIGNATURE.match(each) for each in signatures):
        raise WebhookVerificationError(
            f"a v1= signature in the {SIGNATURE_HEADER} header is not 64 hex digits"
        )
    return int(stamp), [each.lower() for each in signatures]


def _check_age(timestamp: int, now: datetime | None, tolerance: timedelta) -> None:
    current = time.time() if now is None else as_aware_utc(now).timestamp()
    age = current - timestamp
    limit = tolerance.total_seconds()
    if age > limit:
        raise WebhookVerificationError(
            f"the signature is {age:.0f} s old, more than the {limit:g} s tolerance "
            "(a replay, or the sender's clock is off)"
        )
    if -age > limit:
        raise WebhookVerificationError(
            f"the signature is {-age:.0f} s in the future, more than the {limit:g} s "
            "tolerance (the sender's clock is off)"
        )


def verify_webhook(
    body: bytes,
    signature: str,
    secret: str | bytes | Sequence[str | bytes],
    *,
    now: datetime | None = None,
    tolerance: timedelta = timedelta(minutes=5),
) -> dict[str, Any]:
    """Check a received webhook and return its parsed JSON payload.

    *body* is the raw request body, *signature* the ``Calsync-Signature`` header.
    Any of several secrets may match (rotation), and any of several ``v1``
    signatures. Raises `WebhookVerificationError` for a missing or malformed
    header, no matching signature, a timestamp outside *tolerance* of *now*
    (default: the current time), or a body that is not a JSON object.
    """
    if not isinstance(body, bytes | bytearray | memoryview):
        raise ValidationError(
            "verify_webhook needs the raw request body as bytes, before any decoding"
        )
    if not isinstance(tolerance, timedelta) or tolerance <= timedelta(0):
        raise ValidationError(
            f"tolerance must be a positive timedelta, got {tolerance!r}"
        )
    keys = _secrets(secret)
    raw = bytes(body)
    timestamp, signatures = _parse_signature(signature)
    expected = [_digest(key, timestamp, raw).encode() for key in keys]
    matched = False
    for candidate in signatures:
        for digest in expected:
            matched |= hmac.compare_digest(digest, candidate.encode())
    if not matched:
        raise WebhookVerificationError(
            "no v1 signature matches the body and secret: a wrong secret, or the "
            "body was changed (verify the raw bytes, before any JSON decoding)"
        )
    _check_age(timestamp, now, tolerance)
    try:
        document = json.loads(raw)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise WebhookVerificationError("the body is not a JSON object")
    return document
