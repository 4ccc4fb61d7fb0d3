"""`HttpFetcher`: feeds over http, https and webcal on one shared aiohttp session.

Every URL is treated as hostile (a tenant may set it): the SSRF guard judges each hop
before connecting and every resolved address at connect time, redirects are
followed by hand so each target is re-checked, and the body is capped while it
streams, after aiohttp has undone any Content-Encoding.
"""

from __future__ import annotations

import base64
import functools
import logging
import re
import ssl
import time
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Self

import aiohttp
import attrs
from aiohttp.abc import AbstractResolver
from multidict import CIMultiDictProxy
from yarl import URL

from calsync.core.auth import Auth, BasicAuth, BearerAuth
from calsync.core.errors import ValidationError
from calsync.core.redact import redact
from calsync.fetch.content import (
    CALENDAR_TYPES,
    describe_non_calendar,
    is_calendar,
    media_type,
)
from calsync.fetch.failures import (
    FetchBlocked,
    FetchConnectionError,
    FetchError,
    FetchInvalidURL,
    FetchNotCalendar,
    FetchStatusError,
    FetchTimeout,
    FetchTooLarge,
    FetchTooManyRedirects,
)
from calsync.fetch.fetcher import FetchResult
from calsync.fetch.hints import parse_max_age, parse_retry_after
from calsync.fetch.session import GuardedSession, default_user_agent
from calsync.fetch.ssrf import BlockedTarget, TargetGuard, host_problem

__all__ = ["HttpFetcher", "describe_transport_error"]

logger = logging.getLogger(__name__)

MB = 1024 * 1024
_SCHEMES = {"http": "http", "https": "https", "webcal": "https", "webcals": "https"}
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_ACCEPT = "text/calendar, application/ics;q=0.9, text/plain;q=0.5, */*;q=0.1"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _seconds(name: str, value: timedelta) -> float:
    if not isinstance(value, timedelta) or value <= timedelta(0):
        raise ValidationError(f"{name} must be a positive timedelta, got {value!r}")
    return value.total_seconds()


def _positive(name: str, value: int, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValidationError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _authorization(auth: Auth) -> str:
    if isinstance(auth, BearerAuth):
        return f"Bearer {auth.token}"
    pair = f"{auth.username}:{auth.password}".encode()
    return f"Basic {base64.b64encode(pair).decode('ascii')}"


def _validator(value: str | None) -> str | None:
    """Return a stored ETag/Last-Modified fit to send back, or None (no injection)."""
    if not value or _CONTROL.search(value):
        return None
    return value


def _same_origin_or_upgrade(origin: URL, target: URL) -> bool:
    """Whether credentials for *origin* may go to *target* (same origin, http→https)."""
    if target.origin() == origin:
        return True
    return (
        origin.scheme == "http"
        and target.scheme == "https"
        and target.host == origin.host
        and origin.is_default_port()
        and target.is_default_port()
    )


# Feed URLs repeat every sync: parse each once. Returns the target without user
# info or fragment, with the user and password it carried, or why it is unusable.
@functools.lru_cache(maxsize=4096)
def _parse_feed_url(url: str) -> tuple[URL, str | None, str | None] | str:
    try:
        parsed = URL(url.strip())
    except (ValueError, TypeError):
        return "the URL cannot be parsed"
    if not parsed.is_absolute():
        return "the URL is not absolute"
    scheme = _SCHEMES.get(parsed.scheme.lower())
    if scheme is None:
        return f"the scheme {parsed.scheme!r} is not supported"
    if not parsed.raw_host:
        return "the URL has no host"
    problem = host_problem(parsed.raw_host)
    if problem is not None:
        return f"the host {problem}"
    target = parsed.with_scheme(scheme).with_user(None).with_fragment(None)
    return target, parsed.user, parsed.password


@functools.lru_cache(maxsize=4096)
def _shown(target: URL) -> str:
    """Return a target as FetchResult.final_url shows it (yarl builds str anew)."""
    return redact(str(target))


class HttpFetcher:
    """Fetch calendar feeds over http, https and webcal (read as https), guarded.

    One fetcher holds one aiohttp session (connection pool, keep-alive, DNS
    cache) shared by every calendar; use it as an async context manager or call
    `aclose`. It belongs to the event loop it first fetches on.

    Loopback, private, link-local, multicast and other non-public targets are
    refused unless *allow* opens them: networks (``10.0.0.0/8``, ``127.0.0.1``),
    host names (``intranet.example``) or domains (``*.corp.example``). Raises
    `ValidationError` for a bad setting.
    """

    def __init__(
        self,
        *,
        allow: Iterable[str] = (),
        connect_timeout: timedelta = timedelta(seconds=10),
        total_timeout: timedelta = timedelta(seconds=60),
        max_body_bytes: int = 20 * MB,
        max_decompressed_bytes: int = 20 * MB,
        max_redirects: int = 5,
        connections: int = 100,
        user_agent: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._guard = TargetGuard.from_allow(allow)
        self._connect_seconds = _seconds("connect_timeout", connect_timeout)
        self._total_seconds = _seconds("total_timeout", total_timeout)
        self._max_body = _positive("max_body_bytes", max_body_bytes)
        self._max_decompressed = _positive(
            "max_decompressed_bytes", max_decompressed_bytes
        )
        if self._max_decompressed < self._max_body:
            raise ValidationError(
                "max_decompressed_bytes must be at least max_body_bytes: a body "
                "never shrinks when it is decompressed"
            )
        self._max_redirects = _positive("max_redirects", max_redirects, minimum=0)
        connections = _positive("connections", connections)
        self._user_agent = user_agent or default_user_agent()
        if _CONTROL.search(self._user_agent):
            raise ValidationError("user_agent must not contain control characters")
        self._timeout = aiohttp.ClientTimeout(
            total=self._total_seconds, sock_connect=self._connect_seconds
        )
        self._session = GuardedSession(
            "HttpFetcher",
            self._guard,
            resolver=resolver,
            connector={
                "limit": connections,
                "ssl": ssl_context if ssl_context is not None else True,
            },
            headers={"User-Agent": self._user_agent, "Accept": _ACCEPT},
            timeout=self._timeout,
            auto_decompress=True,
        )

    def __repr__(self) -> str:
        return (
            f"HttpFetcher(allow={self._guard!r}, "
            f"connect_timeout={self._connect_seconds:g}s, "
            f"total_timeout={self._total_seconds:g}s, "
            f"max_body_bytes={self._max_body}, max_redirects={self._max_redirects})"
        )

    async def __aenter__(self) -> Self:
        self._session.get()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session and its connections; a later fetch raises RuntimeError."""
        await self._session.aclose()

    async def fetch(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        auth: Auth | None = None,
    ) -> FetchResult:
        """Fetch *url*, conditionally with the validators of the last fetch.

        See `Fetcher.fetch`. Raises `FetchError` subclasses only (and RuntimeError
        when the fetcher is closed or used from another event loop).
        """
        started = time.perf_counter()
        target, auth = self._first_target(url, auth)
        session = self._session.get()
        validators = {
            "If-None-Match": _validator(etag),
            "If-Modified-Since": _validator(last_modified),
        }
        error: FetchError
        try:
            # The total timeout is aiohttp's, per hop with what is left of it
            # (covering connect, answer and body): cheaper than asyncio.timeout.
            return await self._follow(session, url, target, validators, auth, started)
        except BlockedTarget as blocked:
            error = FetchBlocked(url, blocked.host, blocked.reason)
        except aiohttp.ConnectionTimeoutError:
            error = FetchTimeout(url, "connect", self._connect_seconds)
        except TimeoutError:
            error = FetchTimeout(url, "total", self._total_seconds)
        except aiohttp.InvalidURL:
            error = FetchInvalidURL(url, "aiohttp cannot request this URL")
        except aiohttp.ClientError as transport_error:
            error = FetchConnectionError(url, describe_transport_error(transport_error))
        # Raised outside the except blocks: the transport error, whose text may
        # hold the full URL, is neither the cause nor the context.
        raise error

    def check_url(self, url: str) -> None:
        """Refuse a URL that is not http, https or webcal, or whose host is blocked."""
        target, _ = self._first_target(url, None)
        self._check_target(url, target)

    def _first_target(self, url: str, auth: Auth | None) -> tuple[URL, Auth | None]:
        if not isinstance(url, str):
            raise FetchInvalidURL(str(url), "the URL must be a string")
        parsed = _parse_feed_url(url)
        if isinstance(parsed, str):
            raise FetchInvalidURL(url, parsed)
        target, user, password = parsed
        if auth is None and user:
            try:
                auth = BasicAuth(user, password or "")
            except ValidationError:
                raise FetchInvalidURL(
                    url, "the user info in the URL is not valid Basic credentials"
                ) from None
        return target, auth

    async def _follow(
        self,
        session: aiohttp.ClientSession,
        url: str,
        target: URL,
        validators: Mapping[str, str | None],
        auth: Auth | None,
        started: float,
    ) -> FetchResult:
        origin = target.origin()
        sent = {name: value for name, value in validators.items() if value}
        timeout = self._timeout  # the first hop: all of it
        for redirects in range(self._max_redirects + 1):
            self._check_target(url, target)
            headers = sent
            if auth is not None and _same_origin_or_upgrade(origin, target):
                headers = {**sent, "Authorization": _authorization(auth)}
            if redirects:
                left = self._total_seconds - (time.perf_counter() - started)
                if left <= 0:
                    raise TimeoutError
                timeout = attrs.evolve(self._timeout, total=left)
            async with session.get(
                target, headers=headers, allow_redirects=False, timeout=timeout
            ) as response:
                if response.status in _REDIRECTS:
                    target = self._redirect_target(url, target, response)
                    _log_redirect(url, target, redirects + 1)
                    continue
                return await self._result(
                    url, target, response, validators, redirects, started
                )
        raise FetchTooManyRedirects(url, self._max_redirects)

    def _check_target(self, url: str, target: URL) -> None:
        host = target.raw_host or ""
        reason = self._guard.check_host(host)
        if reason is not None:
            raise FetchBlocked(url, host, reason)

    def _redirect_target(
        self, url: str, target: URL, response: aiohttp.ClientResponse
    ) -> URL:
        location = response.headers.get("Location")
        if not location:
            raise FetchStatusError(url, response.status)
        try:
            following = target.join(URL(location))
        except (ValueError, TypeError):
            following = None
        if following is None:
            raise FetchInvalidURL(
                url, "a redirect points to a URL that cannot be parsed"
            )
        if following.scheme not in ("http", "https"):
            raise FetchBlocked(
                url, f"a {following.scheme}: URL", "redirects may only go to http(s)"
            )
        if not following.raw_host:
            raise FetchInvalidURL(url, "a redirect points to a URL without a host")
        return following.with_user(None).with_fragment(None)

    async def _result(
        self,
        url: str,
        target: URL,
        response: aiohttp.ClientResponse,
        validators: Mapping[str, str | None],
        redirects: int,
        started: float,
    ) -> FetchResult:
        headers = response.headers
        status = response.status
        if status == 304 and any(validators.values()):
            return self._not_modified(
                url, target, headers, validators, redirects, started
            )
        if not 200 <= status < 300 or status == 206:
            retry_after = parse_retry_after(headers.get("Retry-After"))
            raise FetchStatusError(url, status, retry_after=retry_after)
        body, bytes_read = await self._read_body(url, response)
        content_type = headers.get("Content-Type")
        kind = media_type(content_type)
        if not is_calendar(body):
            raise FetchNotCalendar(url, describe_non_calendar(body), kind)
        unexpected = kind not in CALENDAR_TYPES
        if unexpected:
            _warn_content_type(url, kind)
        result = FetchResult(
            "fetched",
            final_url=_shown(target),
            body=body,
            etag=headers.get("ETag"),
            last_modified=headers.get("Last-Modified"),
            content_type=content_type,
            unexpected_content_type=unexpected,
            elapsed=timedelta(seconds=time.perf_counter() - started),
            bytes_read=bytes_read,
            redirects=redirects,
            retry_after=parse_retry_after(headers.get("Retry-After")),
            max_age=parse_max_age(headers.get("Cache-Control")),
        )
        _log_result(url, result)
        return result

    def _not_modified(
        self,
        url: str,
        target: URL,
        headers: CIMultiDictProxy[str],
        validators: Mapping[str, str | None],
        redirects: int,
        started: float,
    ) -> FetchResult:
        result = FetchResult(
            "not_modified",
            final_url=_shown(target),
            etag=headers.get("ETag") or validators["If-None-Match"],
            last_modified=headers.get("Last-Modified")
            or validators["If-Modified-Since"],
            elapsed=timedelta(seconds=time.perf_counter() - started),
            redirects=redirects,
            retry_after=parse_retry_after(headers.get("Retry-After")),
            max_age=parse_max_age(headers.get("Cache-Control")),
        )
        _log_result(url, result)
        return result

    async def _read_body(
        self, url: str, response: aiohttp.ClientResponse
    ) -> tuple[bytes, int]:
        """Read the decoded body, stopping at the caps; return it and the wire bytes."""
        declared = response.content_length
        if declared is not None and declared > self._max_body:
            raise FetchTooLarge(url, self._max_body, "declared")
        stream = response.content
        chunks: list[bytes] = []
        decoded = 0
        async for chunk in stream.iter_any():  # as received: no re-joining
            decoded += len(chunk)
            if _wire_bytes(stream, decoded) > self._max_body:
                raise FetchTooLarge(url, self._max_body, "body")
            if decoded > self._max_decompressed:
                raise FetchTooLarge(url, self._max_decompressed, "decompressed")
            chunks.append(chunk)
        return b"".join(chunks), _wire_bytes(stream, decoded)


def _wire_bytes(stream: aiohttp.StreamReader, decoded: int) -> int:
    """Return the body bytes received so far as transferred (compressed, if it was).

    Where aiohttp does not count them (older releases), the decoded count stands in.
    """
    raw: int | None = getattr(stream, "total_raw_bytes", None)
    return decoded if raw is None else raw


def _warn_content_type(url: str, kind: str | None) -> None:
    shown = redact(url)
    logger.warning(
        "%s: the body is iCalendar but was served as %s; calsync reads it anyway",
        shown,
        kind or "no content type",
        extra={"url": shown, "content_type": kind},
    )


def _log_redirect(url: str, target: URL, hop: int) -> None:
    if not logger.isEnabledFor(logging.DEBUG):
        return
    shown, to = redact(url), redact(str(target))
    logger.debug(
        "%s: redirect %d to %s", shown, hop, to, extra={"url": shown, "to": to}
    )


def _log_result(url: str, result: FetchResult) -> None:
    if not logger.isEnabledFor(logging.DEBUG):
        return
    shown = redact(url)
    logger.debug(
        "%s: %s, %d bytes in %.0f ms",
        shown,
        result.status,
        result.bytes_read,
        result.elapsed.total_seconds() * 1000,
        extra={
            "url": shown,
            "fetch_status": result.status,
            "bytes_read": result.bytes_read,
            "elapsed_ms": round(result.elapsed.total_seconds() * 1000),
        },
    )


def describe_transport_error(error: aiohttp.ClientError) -> str:
    """Say what went wrong in words that hold no URL (aiohttp's own text may).

    Shared by everything calsync sends over HTTP: the fetcher and the webhook.
    """
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        return "the host name could not be resolved"
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return "the server's TLS certificate is not valid for this host"
    if isinstance(error, aiohttp.ClientSSLError):
        return "the TLS handshake failed"
    if isinstance(error, aiohttp.ClientConnectorError):
        reason = error.os_error.strerror or type(error.os_error).__name__
        return f"could not connect ({reason})"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "the server closed the connection before answering"
    if isinstance(error, aiohttp.ClientPayloadError):
        return "the connection broke before the whole body arrived (truncated or reset)"
    if isinstance(error, aiohttp.ClientResponseError):
        return "the server sent a malformed HTTP response"
    if isinstance(error, aiohttp.ClientOSError):
        reason = error.strerror or "connection error"
        return f"the connection failed ({reason})"
    return f"the HTTP transfer failed ({type(error).__name__})"
