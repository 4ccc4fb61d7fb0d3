"""Outbound webhooks signed by the Standard Webhooks spec, and their verification.

Each request carries ``webhook-id``, ``webhook-timestamp`` and
``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` with a
``whsec_<base64>`` secret, so any Standard Webhooks verifier accepts it. The
HMAC comes from the `standardwebhooks` package; `verify_webhook` adds what its
verifier lacks: a clock and tolerance you choose, several secrets during a
rotation, and a reason for each refusal.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any, Self

import aiohttp
from aiohttp.abc import AbstractResolver
from standardwebhooks import Webhook
from yarl import URL

from calsync.core.errors import CalsyncError, ValidationError
from calsync.core.model import as_aware_utc
from calsync.core.redact import redact
from calsync.fetch.failures import RetryAfter
from calsync.fetch.hints import parse_retry_after
from calsync.fetch.http import describe_transport_error
from calsync.fetch.session import GuardedSession, default_user_agent
from calsync.fetch.ssrf import BlockedTarget, TargetGuard, allow_advice, host_problem
from calsync.handlers.delivery import Delivery, DeliveryError

__all__ = [
    "WebhookHandler",
    "WebhookVerificationError",
    "new_webhook_secret",
    "sign_webhook",
    "verify_webhook",
]

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
_SECRET_PREFIX = "whsec_"
_RESERVED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "host",
        "idempotency-key",
        ID_HEADER,
        TIMESTAMP_HEADER,
        SIGNATURE_HEADER,
    }
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_HEADER = 4096


class WebhookVerificationError(CalsyncError):
    """A received webhook is forged, stale or malformed; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"webhook refused: {reason}")


def new_webhook_secret() -> str:
    """Return a fresh random secret in the Standard Webhooks form ``whsec_<base64>``."""
    return _SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str | bytes) -> bytes:
    """Return the HMAC key of *secret*: ``whsec_<base64>`` decoded, or bytes as given.

    Raises `ValidationError` (never showing the value) for anything else, since a
    receiver's Standard Webhooks verifier would derive another key from it.
    """
    if isinstance(secret, bytes) and secret:
        return secret
    if isinstance(secret, str) and secret.startswith(_SECRET_PREFIX):
        encoded = secret[len(_SECRET_PREFIX) :]
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if key:
            return key
    raise ValidationError(
        "the webhook secret must be 'whsec_' followed by base64 (the Standard "
        "Webhooks form; make one with calsync.handlers.new_webhook_secret()), or "
        "the raw key as bytes"
    )


def _signed(
    signer: Webhook, body: bytes, webhook_id: str, timestamp: int
) -> dict[str, str]:
    instant = datetime.fromtimestamp(timestamp, UTC)
    return {
        ID_HEADER: webhook_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signer.sign(webhook_id, instant, body),
    }


def sign_webhook(
    body: bytes, secret: str | bytes, *, webhook_id: str, timestamp: int
) -> dict[str, str]:
    """Return the three Standard Webhooks headers for *body*, as `WebhookHandler` sends.

    ``webhook-signature`` is ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``;
    *timestamp* is in Unix seconds. Useful to test a receiver.
    """
    return _signed(Webhook(_key(secret)), bytes(body), webhook_id, int(timestamp))


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
    """POST each delivery as JSON signed by the Standard Webhooks spec; 2xx is success.

    Like feeds, the receiver must be a public address unless *allow* opens it
    (the fetcher's allow-list: networks, host names, ``*.domains``); a name that
    resolves to a refused address is refused when it connects. A *session* you
    pass is yours: only IP literals and ``localhost`` are checked then.
    *resolver* replaces aiohttp's DNS resolver (as for `HttpFetcher`).
    *secret* is a ``whsec_<base64>`` string (or the raw key bytes). Headers:
    ``webhook-id`` and ``Idempotency-Key`` (the delivery id),
    ``webhook-timestamp`` and ``webhook-signature`` (see `sign_webhook`). 408,
    429, 5xx, timeouts and connection errors raise a retryable `DeliveryError`;
    any other status a permanent one. Errors, logs and `repr` show the URL
    redacted and never the secret. The handler owns its aiohttp session unless
    given one.
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
        self._signer = Webhook(_key(secret))
        if not isinstance(timeout, timedelta) or timeout <= timedelta(0):
            raise ValidationError(
                f"webhook timeout must be a positive timedelta, got {timeout!r}"
            )
        self._timeout = timeout.total_seconds()
        self._headers = _extra_headers(headers)
        self._clock = clock
        self._session = GuardedSession(
            "WebhookHandler",
            self._guard,
            resolver=resolver,
            session=session,
            headers={"User-Agent": default_user_agent()},
        )

    def __repr__(self) -> str:
        return f"WebhookHandler(url={self._shown!r}, timeout={self._timeout:g}s)"

    async def __aenter__(self) -> Self:
        self._session.get()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session if the handler made it; later calls raise RuntimeError."""
        await self._session.aclose()

    async def __call__(self, delivery: Delivery) -> None:
        """POST *delivery*; raise `DeliveryError` unless the receiver answers 2xx."""
        session = self._session.get()
        body = json.dumps(delivery.payload(), separators=(",", ":")).encode()
        timestamp = int(self._clock())
        headers = {
            **self._headers,
            "Content-Type": "application/json",
            "Idempotency-Key": delivery.id,
            **_signed(self._signer, body, delivery.id, timestamp),
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


def _keys(secret: str | bytes | Sequence[str | bytes]) -> list[bytes]:
    if isinstance(secret, str | bytes):
        return [_key(secret)]
    keys = [_key(each) for each in secret]
    if not keys:
        raise ValidationError("pass at least one webhook secret")
    return keys


def _header(headers: Mapping[str, str], name: str) -> str:
    value = next((value for key, value in headers.items() if key.lower() == name), None)
    if not isinstance(value, str) or not value.strip():
        raise WebhookVerificationError(f"the {name} header is missing")
    if len(value) > _MAX_HEADER:
        raise WebhookVerificationError(f"the {name} header is too long")
    return value.strip()


def _timestamp(headers: Mapping[str, str]) -> int:
    stamp = _header(headers, TIMESTAMP_HEADER)
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        raise WebhookVerificationError(
            f"the {TIMESTAMP_HEADER} header must be whole Unix seconds"
        )
    return int(stamp)


def _signatures(headers: Mapping[str, str]) -> list[bytes]:
    """Return the ``v1,`` signatures (space-separated); skip other versions."""
    signatures = [
        each.encode()
        for each in _header(headers, SIGNATURE_HEADER).split()
        if each.startswith("v1,")
    ]
    if not signatures:
        raise WebhookVerificationError(
            f"the {SIGNATURE_HEADER} header has no v1,<base64> signature"
        )
    return signatures


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
    headers: Mapping[str, str],
    secret: str | bytes | Sequence[str | bytes],
    *,
    now: datetime | None = None,
    tolerance: timedelta = timedelta(minutes=5),
) -> dict[str, Any]:
    """Check a received webhook and return its parsed JSON payload.

    *body* is the raw request body; *headers* the request's headers (any case),
    of which ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` are
    read. Any of several secrets may match (rotation), and any of several ``v1``
    signatures. Raises `WebhookVerificationError` for a missing or malformed
    header, no matching signature, a timestamp outside *tolerance* of *now*
    (default: the current time), or a body that is not a JSON object.
    """
    if not isinstance(body, bytes | bytearray | memoryview):
        raise ValidationError(
            "verify_webhook needs the raw request body as bytes, before any decoding"
        )
    if not isinstance(headers, Mapping):
        raise ValidationError(
            "verify_webhook needs the request's headers (a mapping holding "
            "webhook-id, webhook-timestamp and webhook-signature)"
        )
    if not isinstance(tolerance, timedelta) or tolerance <= timedelta(0):
        raise ValidationError(
            f"tolerance must be a positive timedelta, got {tolerance!r}"
        )
    keys = _keys(secret)
    raw = bytes(body)
    webhook_id = _header(headers, ID_HEADER)
    timestamp = _timestamp(headers)
    signatures = _signatures(headers)
    expected = [
        _signed(Webhook(key), raw, webhook_id, timestamp)[SIGNATURE_HEADER].encode()
        for key in keys
    ]
    matched = False
    for candidate in signatures:
        for digest in expected:
            matched |= hmac.compare_digest(digest, candidate)
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
