"""The fetch edge: calsync's only network code, and the politeness around it.

The `Fetcher` interface, its HTTP and file implementations, the host limiter
and the errors a fetch can end in.
"""

from __future__ import annotations

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
    RetryAfter,
)
from calsync.fetch.fetcher import (
    Fetcher,
    FetchResult,
    FetchStatus,
)
from calsync.fetch.file import FileFetcher
from calsync.fetch.http import HttpFetcher
from calsync.fetch.throttle import HostLimiter

__all__ = [
    "FetchBlocked",
    "FetchConnectionError",
    "FetchError",
    "FetchInvalidURL",
    "FetchNotCalendar",
    "FetchResult",
    "FetchStatus",
    "FetchStatusError",
    "FetchTimeout",
    "FetchTooLarge",
    "FetchTooManyRedirects",
    "Fetcher",
    "FileFetcher",
    "HostLimiter",
    "HttpFetcher",
    "RetryAfter",
]
