"""Why fetching a feed failed: the `FetchError` family under `CalsyncError`.

Every error names the calendar by its redacted URL and says what to do. None of
them chains the HTTP client's own exception, whose text may hold the full URL.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from http import HTTPStatus
from typing import Literal

from calsync.core.errors import CalsyncError
from calsync.core.redact import redact
from calsync.fetch.ssrf import allow_advice, host_problem

__all__ = [
    "FetchBlocked",
    "FetchConnectionError",
    "FetchError",
    "FetchInvalidURL",
    "FetchNotCalendar",
    "FetchStatusError",
    "FetchTimeout",
    "FetchTooLarge",
    "FetchTooManyRedirects",
    "RetryAfter",
]

RetryAfter = timedelta | datetime
"""A server's Retry-After: a delay, or an aware UTC instant (the HTTP-date form)."""

# Statuses after which trying again later may well succeed.
_TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class FetchError(CalsyncError):
    """Fetching a calendar feed failed; `url` is the calendar's URL, secrets masked.

    `transient` tells a retry policy whether trying again later may help (a
    timeout, a 503) or the calendar's settings need a person first (a 404, a
    blocked target).
    """

    transient: bool = True

    def __init__(self, url: str, problem: str) -> None:
        self.url = redact(url)
        self.problem = problem
        super().__init__(f"{self.url}: {problem}")


class FetchInvalidURL(FetchError):
    """The URL cannot be fetched at all: no host, or a scheme calsync does not fetch."""

    transient = False

    def __init__(self, url: str, reason: str) -> None:
        self.reason = reason
        super().__init__(
            url,
            f"{reason}; calsync fetches http://, https:// and webcal:// URLs "
            "(file:// with FileFetcher): fix the calendar's URL",
        )


class FetchBlocked(FetchError):
    """The SSRF guard refused the target (or a redirect's target) before connecting.

    Loopback, private, link-local, multicast and other non-public addresses are
    refused unless the fetcher's allow-list opens them.
    """

    transient = False

    def __init__(self, url: str, target: str, reason: str) -> None:
        self.target = target
        self.reason = reason
        # A redirect to another scheme is no host the allow-list could open.
        advice = (
            f"; if this feed is meant to be reached, {allow_advice(target)}"
            if host_problem(target) is None
            else ""
        )
        super().__init__(url, f"refused to connect to {target}: {reason}{advice}")


class FetchTimeout(FetchError):
    """The server did not connect, or the feed did not arrive, in time."""

    def __init__(
        self, url: str, phase: Literal["connect", "total"], seconds: float
    ) -> None:
        self.phase = phase
        self.seconds = seconds
        what = "no connection" if phase == "connect" else "the feed did not arrive"
        super().__init__(
            url,
            f"{what} within {seconds:g} s; the server is slow or unreachable, "
            "calsync tries again later",
        )


class FetchConnectionError(FetchError):
    """The feed could not be transferred: DNS, refused, reset, TLS, truncated body."""

    def __init__(self, url: str, detail: str, *, transient: bool = True) -> None:
        self.detail = detail
        self.transient = transient
        advice = (
            "calsync tries again later" if transient else "check the calendar's URL"
        )
        super().__init__(url, f"{detail}; {advice}")


class FetchStatusError(FetchError):
    """The server answered with an HTTP status that carries no feed (4xx, 5xx, ...).

    `retry_after` is the server's Retry-After hint when it sent one.
    """

    def __init__(
        self, url: str, status: int, *, retry_after: RetryAfter | None = None
    ) -> None:
        self.status = status
        self.retry_after = retry_after
        self.transient = status in _TRANSIENT_STATUSES or status >= 500
        super().__init__(
            url,
            f"the server answered HTTP {status}{_phrase(status)}; {_advice(status)}",
        )


class FetchTooLarge(FetchError):
    """The body is over a size cap: as declared, as transferred, or decompressed."""

    transient = False

    def __init__(
        self, url: str, limit: int, what: Literal["declared", "body", "decompressed"]
    ) -> None:
        self.limit = limit
        self.what = what
        detail = {
            "declared": "the server announced a body",
            "body": "the body",
            "decompressed": "the decompressed body",
        }[what]
        option = (
            "max_decompressed_bytes" if what == "decompressed" else "max_body_bytes"
        )
        super().__init__(
            url,
            f"{detail} is over the {limit:,} byte limit, so calsync stopped reading; "
            "if the feed is really this big, raise [fetch] max_body_bytes "
            f"(CALSYNC_FETCH_MAX_BODY_BYTES; in code, the fetcher's {option})",
        )


class FetchTooManyRedirects(FetchError):
    """The server redirected more often than allowed (a loop, or a long chain)."""

    transient = False

    def __init__(self, url: str, limit: int) -> None:
        self.limit = limit
        super().__init__(
            url,
            f"more than {limit} redirects (a loop or a long chain); open the URL in a "
            "browser to see where the feed lives now and use that URL",
        )


class FetchNotCalendar(FetchError):
    """The server answered with a body that is not iCalendar (a login or error page).

    Decided by the body, not the Content-Type: it must start with BEGIN:VCALENDAR
    after an optional BOM and whitespace.
    """

    transient = False

    def __init__(self, url: str, looks_like: str, content_type: str | None) -> None:
        self.looks_like = looks_like
        self.content_type = content_type
        served = f", served as {content_type}" if content_type else ""
        super().__init__(
            url,
            f"the body is {looks_like}{served}, not an iCalendar feed (no "
            "BEGIN:VCALENDAR); the URL may point at a login or error page: check it "
            "in a browser",
        )


def _phrase(status: int) -> str:
    # The standard phrase, never the server's own reason text, which it controls.
    try:
        return f" {HTTPStatus(status).phrase}"
    except ValueError:
        return ""


def _advice(status: int) -> str:
    if status in (401, 403):
        return "check the calendar's credentials or share link"
    if status in (404, 410):
        return "the feed is gone from this URL: check it"
    if status == 429:
        return "the server is rate limiting calsync, which waits before trying again"
    if status >= 500 or status in _TRANSIENT_STATUSES:
        return "calsync tries again later"
    return "check the calendar's URL"
