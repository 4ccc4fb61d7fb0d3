"""The fetch edge: calsync's only network code, and the politeness around it.

The `Fetcher` interface and its HTTP and file implementations, plus the small
pieces (retry policy, host limiter, circuit breaker) the Engine composes.
"""

from __future__ import annotations

from .breaker import Circuit, CircuitBreaker
from .errors import (
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
from .file import FileFetcher
from .http import HttpFetcher
from .limits import HostLimiter
from .policy import RetryPolicy, next_sync_at
from .protocol import Fetcher, FetchResult, FetchStatus

__all__ = [
    "Circuit",
    "CircuitBreaker",
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
    "RetryPolicy",
    "next_sync_at",
]
